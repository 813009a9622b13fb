"""Datasets and batched transforms: IDX reading, padding, determinism, clear errors, exact crops."""
import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmd import datasets
from fmd.data import BatchLoader, make_loaders
from fmd.datasets import get_datasets, load_fashion_mnist, make_synthetic, read_idx
from fmd.transforms import CifarTrain, ImageNetTest, ImageNetTrain, make_transforms


def write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def fake_fashion_mnist(directory, compress=False, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)  # no zeros inside
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(directory / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels, compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_torchvision_layout_is_padded_exactly(tmp_path, compress):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = fake_fashion_mnist(raw, compress)
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (6, 1, 32, 32) and test.images.shape == (4, 1, 32, 32)
    assert train.images.dtype == torch.uint8 and train.targets.dtype == torch.int64
    # The 28×28 image sits in the middle of a 2-pixel zero border.
    assert torch.equal(train.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train"][0]))
    border = train.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0
    assert torch.equal(test.targets, torch.from_numpy(arrays["t10k"][1]).long())
    assert train.num_classes == 10 and train.classes[9] == "Ankle boot"


def test_fashion_mnist_three_channels_replicate_the_grey_image(tmp_path):
    (tmp_path / "fashion_mnist").mkdir()
    fake_fashion_mnist(tmp_path / "fashion_mnist")
    grey, _ = load_fashion_mnist(tmp_path, channels=1)
    colour, _ = load_fashion_mnist(tmp_path, channels=3)
    assert colour.images.shape == (6, 3, 32, 32)
    for c in range(3):
        assert torch.equal(colour.images[:, c], grey.images[:, 0])
    assert len(colour.mean) == 3 and colour.mean[0] == grey.mean[0]
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_fashion_mnist(tmp_path, channels=2)


def test_fashion_mnist_missing_everywhere_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path, dirs=[tmp_path / "nowhere"])
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((3, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def _real_fashion_mnist_available():
    return datasets._find_fashion_mnist(datasets.fashion_mnist_dirs(datasets.DATA_ROOT)) is not None


@pytest.mark.skipif(not _real_fashion_mnist_available(),
                    reason="Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_shapes_padding_and_balance():
    train, test = get_datasets("fashion_mnist")
    assert train.images.shape == (60000, 1, 32, 32) and test.images.shape == (10000, 1, 32, 32)
    assert train.images.dtype == torch.uint8
    assert train.images[:, :, :2].max() == 0 and train.images[:, :, :, 30:].max() == 0
    assert torch.equal(train.targets.bincount(), torch.full((10,), 6000))
    assert torch.equal(test.targets.bincount(), torch.full((10,), 1000))
    # The stored normalisation constants are those of the padded training images.
    x = train.images.float() / 255
    assert x.mean().item() == pytest.approx(train.mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(train.std[0], abs=1e-3)


def test_synthetic_set_is_deterministic_by_seed_and_balanced():
    a_train, a_test = make_synthetic(seed=3)
    b_train, b_test = make_synthetic(seed=3)
    c_train, _ = make_synthetic(seed=4)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_test.targets, b_test.targets)
    assert not torch.equal(a_train.images, c_train.images)
    assert a_train.images.shape == (1024, 3, 32, 32) and a_train.images.dtype == torch.uint8
    counts = a_train.targets.bincount()
    assert counts.max() - counts.min() <= 1
    grey, _ = make_synthetic(64, 8, channels=1)
    assert grey.images.shape == (64, 1, 32, 32) and len(grey.mean) == 1


def test_subsets_are_seeded_and_checked():
    full, _ = make_synthetic(100, 10)
    a, b, c = full.subset(30, seed=1), full.subset(30, seed=1), full.subset(30, seed=2)
    assert len(a) == 30 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert full.subset(None) is full
    with pytest.raises(ValueError, match=r"\[1, 100\]"):
        full.subset(101)


def test_cifar_missing_gives_a_clear_error(tmp_path):
    for name, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")):
        with pytest.raises(FileNotFoundError) as info:
            get_datasets(name, tmp_path)
        message = str(info.value)
        assert str(tmp_path / folder) in message and "download=True" in message


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="imagenet1k.*cifar10.*cifar100.*fashion_mnist.*synthetic.*imagenet"):
        get_datasets("imagenet1k")
    with pytest.raises(ValueError, match="channels must be 3"):
        get_datasets("cifar10", channels=1)


def test_cifar_crop_is_a_shifted_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    transform = CifarTrain((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), pad=4, flip=True)
    out = (transform(images, torch.Generator().manual_seed(0)) * 255).round()
    windows = F.pad(images, (4, 4, 4, 4)).float().unfold(2, 32, 1).unfold(3, 32, 1)  # B×C×9×9×32×32
    same = (out[:, :, None, None] == windows).all(-1).all(-1).all(1).flatten(1).any(1)
    mirrored = (out.flip(-1)[:, :, None, None] == windows).all(-1).all(-1).all(1).flatten(1).any(1)
    assert (same | mirrored).all()
    assert mirrored.any() and same.any()  # both flipped and unflipped images occur
    again = (transform(images, torch.Generator().manual_seed(0)) * 255).round()
    assert torch.equal(out, again)


def test_flip_transform_mirrors_some_images_and_moves_no_pixel_otherwise():
    images = torch.randint(1, 256, (32, 1, 32, 32), dtype=torch.uint8)
    train, test = make_transforms("flip", (0.0,), (1.0,))
    out = (train(images, torch.Generator().manual_seed(0)) * 255).round()
    same = (out == images.float()).flatten(1).all(1)
    mirrored = (out == images.flip(-1).float()).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    assert torch.equal((test(images) * 255).round(), images.float())


def test_imagenet_test_transform_equals_resize_256_then_center_crop_224():
    import torchvision.transforms.v2.functional as TF

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ours = ImageNetTest((0.0,) * 3, (1.0,) * 3)(images)
    reference = TF.center_crop(TF.resize(images.float() / 255, [256], antialias=False), [224])
    assert ours.shape == (2, 3, 224, 224)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_imagenet_train_crops_follow_random_resized_crop_bounds():
    transform = ImageNetTrain((0.5,), (0.5,))
    top, left, h, w = transform.crop_boxes(500, 32, 32, torch.Generator().manual_seed(0))
    assert ((h >= 1) & (w >= 1) & (top >= 0) & (left >= 0)).all()
    assert ((top + h <= 32) & (left + w <= 32)).all()
    area = h * w / 1024
    assert area.min() >= 0.08 - 0.05 and area.max() <= 1.0
    out = transform(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 224, 224)
    # A constant image stays constant whatever the crop: (0 - 0.5) / 0.5 everywhere.
    assert torch.allclose(out, torch.full_like(out, -1.0))


def test_loader_visits_every_image_once_and_resumes_its_random_stream():
    train, test = make_synthetic(100, 10)
    loader, test_loader = make_loaders(train, test, 16, seed=5)
    assert len(loader) == 6 and len(test_loader) == 1  # the train loader drops the last 4
    seen = torch.cat([y for _, y in BatchLoader(train, 16, shuffle=True, seed=5)])
    assert torch.equal(seen.sort().values, train.targets.sort().values)
    for _ in loader:  # one epoch
        pass
    state = loader.state_dict()
    epoch2 = [x for x, _ in loader]
    fresh, _ = make_loaders(train, test, 16, seed=5)
    fresh.load_state_dict(state)
    for a, b in zip(epoch2, (x for x, _ in fresh)):
        assert torch.equal(a, b)
    assert loader.output_shape() == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown transform 'big'.*cifar"):
        make_loaders(train, test, 16, transform="big")


def write_jpeg_tree(root, classes=("cat", "dog", "fish"), per_class=(6, 2), sizes=((40, 30), (64, 48)),
                    seed=0):
    """An ImageNet-style tree of real JPEG files (PIL): train/<class>/*.JPEG and val/<class>/*.JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[(i + c) % len(sizes)]
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG", quality=90)
    return root


def test_image_folder_tree_of_jpegs_loads_through_torchvision(tmp_path, monkeypatch):
    tree = write_jpeg_tree(tmp_path / "tree")
    train, test = get_datasets("imagenet", tree)
    assert (len(train), len(test), train.classes, train.num_classes) == (18, 6, ("cat", "dog", "fish"), 3)
    assert train.channels == 3 and train.mean == datasets.STATS["imagenet"][0]
    sub = train.subset(5, seed=1)
    assert len(sub) == 5 and len(set(sub.indices.tolist())) == 5
    with pytest.raises(ValueError, match=r"subset size must be an integer in \[1, 18\]"):
        train.subset(19)
    loader, test_loader = make_loaders(train, test, 4, transform="imagenet", workers=1, seed=3)
    assert len(loader) == 4 and len(test_loader) == 2  # 18 // 4 full batches; 6 in 4 + 2
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert targets.dtype == torch.int64 and loader.output_shape() == (3, 224, 224)
    seen = torch.cat([y for _, y in test_loader])
    assert torch.equal(seen, torch.tensor([0, 0, 1, 1, 2, 2]))
    # The evaluation input is torchvision's Resize 256 + CenterCrop 224 of the decoded file, normalised.
    from PIL import Image
    import torchvision.transforms.v2 as v2
    first = v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224)])(
        Image.open(test.folder.samples[0][0]).convert("RGB"))
    mean, std = (torch.tensor(v).reshape(3, 1, 1) for v in datasets.STATS["imagenet"])
    x, _ = next(iter(test_loader))
    torch.testing.assert_close(x[0], (first.float() / 255 - mean) / std)
    # The tree from the environment variable, or <root>/imagenet.
    monkeypatch.setenv("FMD_IMAGENET", str(tree))
    assert len(get_datasets("imagenet")[0]) == 18
    assert len(get_datasets("imagenet", tmp_path.parent / tmp_path.name / "tree")[1]) == 6
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "imagenet").symlink_to(tree)
    assert len(get_datasets("imagenet", tmp_path / "parent")[0]) == 18
    with pytest.raises(ValueError, match="takes transform 'imagenet'"):
        make_loaders(train, test, 4, transform="cifar")


def test_image_folder_errors_say_what_was_expected_where(tmp_path, monkeypatch):
    monkeypatch.delenv("FMD_IMAGENET", raising=False)
    with pytest.raises(FileNotFoundError, match=r"no folder .*nowhere/train: expected an ImageNet-style "
                                                r"tree .*/train/<class>/<image>.*FMD_IMAGENET"):
        get_datasets("imagenet", tmp_path / "nowhere")
    tree = write_jpeg_tree(tmp_path / "tree")
    for f in (tree / "val" / "dog").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"val is not an image folder .*dog"):
        get_datasets("imagenet", tree)
    (tree / "val" / "dog").rmdir()
    with pytest.raises(ValueError, match=r"same class folders; in one only: \['dog'\]"):
        get_datasets("imagenet", tree)
    (tree / "train").rename(tree / "training")
    with pytest.raises(FileNotFoundError, match="no folder .*tree/train"):
        get_datasets("imagenet", tree)
    with pytest.raises(ValueError, match="channels must be 3 for imagenet"):
        get_datasets("imagenet", tree, channels=1)


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    fake_fashion_mnist(raw, n_train=7)
    monkeypatch.setenv("FMD_DATA_ROOT", str(tmp_path))
    assert datasets.default_root() == tmp_path and len(get_datasets("fashion_mnist")[0]) == 7


def test_grad_cam_picks_images_from_an_image_folder_as_from_a_tensor_set(tmp_path):
    # One "config → loaders" function serves training and Grad-CAM: a folder works as a tensor set does.
    from fmd.gradcam import pick_images
    from fmd.train import make_config

    write_jpeg_tree(tmp_path, per_class=(4, 2), sizes=((300, 260),))
    config = make_config("paper", dataset="imagenet")
    batch = pick_images(config, 3, data_root=tmp_path)
    assert batch.x.shape == (3, 3, 224, 224) and batch.names == ["cat", "dog", "fish"]
    synthetic = pick_images(make_config("smoke"), 4)
    assert synthetic.x.shape[1:] == (3, 32, 32) and len(set(synthetic.names)) == 4
