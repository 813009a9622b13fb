"""Datasets (CIFAR-10/100, Fashion-MNIST, a synthetic set for tests, ImageNet-style folders) and
their loaders.

The small sets are held in memory as a ``uint8`` tensor N×C×H×W. Their loaders index whole batches
and augment them as tensors, on the training device, with random numbers drawn from the loader's
own ``torch.Generator``: no per-image work (on the same 32×32 images the in-memory loader is many
times faster than decoding files through a DataLoader; the README's "Paper scale" section has the
measurement), and one generator state is all a checkpoint needs to resume the data stream exactly.

ImageNet-style folders (``train/<class>/*``, ``val/<class>/*``) are read with torchvision's
``ImageFolder`` and ``transforms.v2`` in DataLoader worker processes (:class:`FolderLoader`).
Data roots come from an argument, else ``$FMD_DATA_ROOT`` (ImageNet: ``$FMD_IMAGENET``), else
``data/`` in the repository.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .provenance import REPO_ROOT

PathLike = Union[str, Path]

DATA_ROOT = REPO_ROOT / "data"
DATA_ROOT_ENV = "FMD_DATA_ROOT"  # the folder that holds the datasets, instead of data/
IMAGENET_ENV = "FMD_IMAGENET"  # an ImageNet-style tree (train/ and val/), instead of <data root>/imagenet
DATASETS = ("cifar10", "cifar100", "fashion_mnist", "synthetic", "imagenet")
# The channel counts each dataset can give (None: its own); the synthetic set draws any number.
DATASET_CHANNELS: Dict[str, Optional[Tuple[int, ...]]] = {
    "cifar10": (3,), "cifar100": (3,), "fashion_mnist": (1, 3), "synthetic": None, "imagenet": (3,)}
TRANSFORMS = ("cifar", "imagenet", "none")
# Where the Debian package dataset-fashion-mnist installs the IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
# Per-channel statistics of the training images. Fashion-MNIST's are of the 28×28 images
# zero-padded to 32×32 (the unpadded ones are 0.2860 / 0.3530).
STATS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2190,), (0.3318,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet models'
}


def default_root(root: Optional[PathLike] = None) -> Path:
    """The datasets folder: ``root`` if given, else ``$FMD_DATA_ROOT``, else ``data/``."""
    if root is not None:
        return Path(root)
    return Path(os.environ[DATA_ROOT_ENV]) if os.environ.get(DATA_ROOT_ENV) else DATA_ROOT


class _Split(Dataset):
    """What the splits of every dataset share."""

    classes: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


@dataclass(eq=False)
class ImageSet(_Split):
    """One split of a dataset in memory: ``images`` N×C×H×W uint8, ``targets`` N int64."""

    name: str
    split: str
    images: Tensor
    targets: Tensor
    classes: Tuple[str, ...]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be N×C×H×W uint8, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.targets.shape != self.images.shape[:1]:
            raise ValueError(f"{self.images.shape[0]} images but {self.targets.shape[0]} targets")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values, got {self.mean}, {self.std}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        return self.images[index], int(self.targets[index])

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return self.images.shape[1]

    def subset(self, size: Optional[int], seed: int = 0) -> "ImageSet":
        """A random subset of ``size`` images, the same for the same seed; ``None`` keeps all."""
        keep = _subset_indices(len(self), size, seed, self.split, self.name)
        if keep is None:
            return self
        return ImageSet(self.name, self.split, self.images[keep], self.targets[keep], self.classes,
                        self.mean, self.std)


# ---------------------------------------------------------------------------------------------
# Reading datasets


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped) of unsigned bytes into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}) — "
                         "delete it and copy or download it again") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported, type code {raw[2]:#x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise ValueError(f"{path}: header says shape {shape} but the file holds "
                         f"{len(raw) - header} bytes of data (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def fashion_mnist_dirs(root: PathLike) -> Tuple[Path, ...]:
    """Where Fashion-MNIST is looked for, in order: under ``root``, then the Debian package."""
    root = Path(root)
    return (root / "FashionMNIST" / "raw", root / "fashion_mnist", root / "fashion-mnist",
            FASHION_MNIST_SYSTEM_DIR)


def _find_idx(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _find_fashion_mnist(dirs: Sequence[Path]) -> Optional[Dict[str, Tuple[Path, Path]]]:
    for directory in dirs:
        found = {split: tuple(_find_idx(directory, stem) for stem in stems)
                 for split, stems in _FASHION_FILES.items()}
        if all(p is not None for pair in found.values() for p in pair):
            return found  # type: ignore[return-value]
    return None


def _pad_to_32(images: np.ndarray) -> Tensor:
    """N×28×28 → N×1×32×32 uint8, a 2-pixel zero border (as the LeNet-5 MNIST inputs)."""
    return F.pad(torch.from_numpy(images.copy()), (2, 2, 2, 2)).unsqueeze(1)


def load_fashion_mnist(root: Optional[PathLike] = None, *, channels: int = 1, download: bool = False,
                       dirs: Optional[Sequence[PathLike]] = None) -> Tuple[ImageSet, ImageSet]:
    """Fashion-MNIST, 28×28 grey images zero-padded to 32×32, as 1 or 3 (replicated) channels.

    Looked for in ``dirs`` (default :func:`fashion_mnist_dirs`: torchvision's layout under
    ``root``, then the Debian package); downloaded with torchvision only if ``download``.
    """
    root = default_root(root)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 for fashion_mnist, got {channels!r}")
    search = tuple(Path(d) for d in dirs) if dirs is not None else fashion_mnist_dirs(root)
    found = _find_fashion_mnist(search)
    if found is None and download:
        import torchvision

        with _downloading("fashion_mnist", root):
            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        found = _find_fashion_mnist((root / "FashionMNIST" / "raw",))
    if found is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found; looked for train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz] in " + ", ".join(str(d) for d in search) +
            ". Install the Debian package dataset-fashion-mnist, copy the files into "
            f"{root / 'FashionMNIST' / 'raw'}, or pass download=True when online.")
    splits = []
    for split, (image_path, label_path) in found.items():
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape}, {labels.shape} "
                             f"in {image_path.parent}")
        x = _pad_to_32(images)
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)  # a view: batches are copied when indexed anyway
        mean, std = STATS["fashion_mnist"]
        splits.append(ImageSet("fashion_mnist", split, x, torch.from_numpy(labels.astype(np.int64)),
                               FASHION_MNIST_CLASSES, mean * channels, std * channels))
    return splits[0], splits[1]


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@contextlib.contextmanager
def _downloading(name: str, root: Path) -> Iterator[None]:
    """Turn a failed download (offline, a server error) into one clear error."""
    try:
        yield
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        raise FileNotFoundError(f"could not download {name} into {root} ({error}) — run where the "
                                "internet is reachable, or copy the files there by hand") from error


def load_cifar(name: str = "cifar10", root: Optional[PathLike] = None, *,
               download: bool = False) -> Tuple[ImageSet, ImageSet]:
    """CIFAR-10 or CIFAR-100 through torchvision, from ``root`` (default ``data/``)."""
    if name not in _CIFAR_FOLDERS:
        raise ValueError(f"name must be one of {tuple(_CIFAR_FOLDERS)}, got {name!r}")
    import torchvision

    root = default_root(root)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    splits = []
    for train in (True, False):
        try:
            with _downloading(name, root) if download else contextlib.nullcontext():
                ds = cls(str(root), train=train, download=download)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{name} not found (or corrupt) under {root / _CIFAR_FOLDERS[name]}. Download the "
                f"Python version from {_CIFAR_URL} and extract it into {root} (so that "
                f"{root / _CIFAR_FOLDERS[name]} exists), or pass download=True when online."
            ) from error
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # N×H×W×C → N×C×H×W
        mean, std = STATS[name]
        splits.append(ImageSet(name, "train" if train else "test", images,
                               torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes),
                               mean, std))
    return splits[0], splits[1]


def make_synthetic(train_size: int = 1024, test_size: int = 256, *, num_classes: int = 10,
                   channels: int = 3, size: int = 32, noise: float = 0.2,
                   seed: int = 0) -> Tuple[ImageSet, ImageSet]:
    """A small learnable set for tests: one random grating per class, shifted, plus noise.

    Each class has an orientation, frequency and colour; every image shows its class's grating at
    a random phase and contrast under Gaussian noise of std ``noise`` (in [0, 1] units).
    Deterministic for a given seed.
    """
    for name, value in (("train_size", train_size), ("test_size", test_size),
                        ("num_classes", num_classes), ("channels", channels), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(num_classes, generator=g) * math.pi
    frequency = 1.5 + 3.0 * torch.rand(num_classes, generator=g)  # cycles per image
    colour = 0.5 + 0.5 * torch.rand(num_classes, channels, generator=g)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def draw(n: int) -> Tuple[Tensor, Tensor]:
        targets = torch.arange(n) % num_classes  # balanced classes
        targets = targets[torch.randperm(n, generator=g)]
        a, f = angle[targets, None, None], frequency[targets, None, None]
        phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
        contrast = 0.3 + 0.2 * torch.rand(n, 1, 1, generator=g)
        wave = torch.sin(2 * math.pi * f * (xx * torch.cos(a) + yy * torch.sin(a)) + phase)
        x = 0.5 + contrast[:, None] * wave[:, None] * colour[targets][:, :, None, None]
        x = x + noise * torch.randn(n, channels, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), targets

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    # Normalisation statistics from the training images, like the real datasets' constants.
    as_float = train_x.double() / 255
    mean = tuple(as_float.mean(dim=(0, 2, 3)).tolist())
    std = tuple(as_float.std(dim=(0, 2, 3)).tolist())
    classes = tuple(f"class {i}" for i in range(num_classes))
    return (ImageSet("synthetic", "train", train_x, train_y, classes, mean, std),
            ImageSet("synthetic", "test", test_x, test_y, classes, mean, std))


def _subset_indices(n: int, size: Optional[int], seed: int, split: str, name: str) -> Optional[Tensor]:
    """The sorted indices of a seeded random subset of ``size`` of ``n`` items; None keeps all."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n:
        raise ValueError(f"{split} subset size must be an integer in [1, {n}] for {name}, got {size!r}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


@dataclass(eq=False)
class FolderSet(_Split):
    """One split of an ImageNet-style folder: torchvision's ``ImageFolder``, optionally a subset.

    Items are ``(uint8 C×H×W tensor after transform, class index)``; ``transform`` is a
    ``torchvision.transforms.v2`` pipeline set by :func:`make_loaders`.
    """

    name: str
    split: str
    folder: Any  # torchvision.datasets.ImageFolder
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    indices: Optional[Tensor] = None
    transform: Optional[Callable[[Any], Tensor]] = None

    def __len__(self) -> int:
        return len(self.folder) if self.indices is None else len(self.indices)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        image, target = self.folder[index if self.indices is None else int(self.indices[index])]
        return (image if self.transform is None else self.transform(image)), target

    @property
    def classes(self) -> Tuple[str, ...]:
        """Class names: the sub-folder names, sorted."""
        return tuple(self.folder.classes)

    @property
    def channels(self) -> int:
        """Number of image channels (ImageFolder converts every image to RGB)."""
        return 3

    def subset(self, size: Optional[int], seed: int = 0) -> "FolderSet":
        """A random subset of ``size`` images, the same for the same seed; ``None`` keeps all."""
        keep = _subset_indices(len(self), size, seed, self.split, self.name)
        if keep is None:
            return self
        base = keep if self.indices is None else self.indices[keep]
        return dataclasses.replace(self, indices=base)


def imagenet_root(root: Optional[PathLike] = None) -> Path:
    """The ImageNet-style tree: ``root`` (or ``root/imagenet``) if given, else ``$FMD_IMAGENET``,
    else ``<data root>/imagenet`` (see :func:`default_root`)."""
    if root is not None:
        root = Path(root)
        return root / "imagenet" if not (root / "train").is_dir() and (root / "imagenet").is_dir() else root
    if os.environ.get(IMAGENET_ENV):
        return Path(os.environ[IMAGENET_ENV])
    return default_root() / "imagenet"


def load_image_folder(root: Optional[PathLike] = None) -> Tuple[FolderSet, FolderSet]:
    """The ``train/`` and ``val/`` splits of an ImageNet-style tree (ImageNet-1k, ImageNet-100, …):
    one sub-folder per class in each, the same class names in both."""
    from torchvision.datasets import ImageFolder

    tree = imagenet_root(root)
    expected = (f"expected an ImageNet-style tree {tree}/train/<class>/<image> and "
                f"{tree}/val/<class>/<image> (pass --data-root TREE or set ${IMAGENET_ENV})")
    splits = []
    for split in ("train", "val"):
        if not (tree / split).is_dir():
            raise FileNotFoundError(f"no folder {tree / split}: {expected}")
        try:
            folder = ImageFolder(str(tree / split))
        except FileNotFoundError as error:  # no class folder, or a class folder without images
            raise FileNotFoundError(f"{tree / split} is not an image folder ({error}): "
                                    f"{expected}") from None
        splits.append(FolderSet("imagenet", "train" if split == "train" else "test", folder,
                                *STATS["imagenet"]))
    train, test = splits
    if train.classes != test.classes:
        missing = sorted(set(train.classes) ^ set(test.classes))
        raise ValueError(f"{tree}/train and {tree}/val must hold the same class folders; "
                         f"in one only: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    return train, test


def check_channels(dataset: str, channels: Optional[int]) -> None:
    """Refuse a channel count that ``dataset`` cannot give, naming those it can."""
    allowed = DATASET_CHANNELS[dataset]
    if channels is not None and allowed is not None and channels not in allowed:
        raise ValueError(f"channels must be {' or '.join(map(str, allowed))} for {dataset}, "
                         f"got {channels!r}")


def get_datasets(name: str, root: Optional[PathLike] = None, *, train_subset: Optional[int] = None,
                 test_subset: Optional[int] = None, channels: Optional[int] = None,
                 download: bool = False, seed: int = 0) -> Tuple[Any, Any]:
    """The train and test splits of dataset ``name``, optionally as seeded random subsets.

    ``channels``: Fashion-MNIST 1 (default) or 3 (replicated); the synthetic set 3 (default) or
    any positive number; CIFAR and ImageNet only 3. ``root``: see :func:`default_root` (ImageNet:
    :func:`imagenet_root`). The small sets are :class:`ImageSet` objects, ImageNet :class:`FolderSet`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    check_channels(name, channels)
    if name == "fashion_mnist":
        train, test = load_fashion_mnist(root, channels=1 if channels is None else channels,
                                         download=download)
    elif name == "synthetic":
        train, test = make_synthetic(channels=3 if channels is None else channels, seed=seed)
    elif name == "imagenet":
        train, test = load_image_folder(root)
    else:
        train, test = load_cifar(name, root, download=download)
    return train.subset(train_subset, seed), test.subset(test_subset, seed)


# ---------------------------------------------------------------------------------------------
# Batched transforms: uint8 B×C×H×W in, normalised float out, random numbers from a generator


class BatchTransform:
    """Base of the batched transforms; ``generator`` supplies every random number (on the CPU)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images → (x/255 − mean) / std, float32."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.normalize(images)

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """Spatial size of the output for inputs of ``size``."""
        return size


class CifarTrain(BatchTransform):
    """CIFAR augmentation: zero-pad by ``pad``, random crop back to H×W, random horizontal flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 4,
                 flip: bool = True) -> None:
        super().__init__(mean, std)
        self.pad, self.flip = pad, flip

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, C, H, W = images.shape
        p = self.pad
        offsets = torch.randint(0, 2 * p + 1, (2, B), generator=generator)
        flips = torch.rand(B, generator=generator) < 0.5
        x = images
        if p > 0:
            padded = F.pad(images, (p, p, p, p))
            rows = (offsets[0][:, None] + torch.arange(H)).to(images.device)  # B×H
            cols = (offsets[1][:, None] + torch.arange(W)).to(images.device)  # B×W
            batch = torch.arange(B, device=images.device)[:, None, None, None]
            channel = torch.arange(C, device=images.device)[None, :, None, None]
            x = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            x = torch.where(flips.to(images.device)[:, None, None, None], x.flip(-1), x)
        return self.normalize(x)


def _resample(images: Tensor, theta: Tensor, size: int) -> Tensor:
    """Bilinear crop-and-resize of each image by a B×2×3 affine map to size×size.

    With ``align_corners=False`` this matches resizing with half-pixel centres (torchvision's
    bilinear ``Resize`` for upsampling) exactly.
    """
    x = images.float().div_(255) if images.dtype == torch.uint8 else images
    grid = F.affine_grid(theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], size, size],
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_theta(top: Tensor, left: Tensor, height: Tensor, width: Tensor, H: int, W: int,
                flip: Optional[Tensor] = None) -> Tensor:
    """Affine maps (B×2×3) from output coordinates to the pixel box top/left/height/width."""
    sx, sy = width / W, height / H
    cx, cy = (2 * left + width) / W - 1, (2 * top + height) / H - 1
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, cx], -1), torch.stack([zero, sy, cy], -1)], 1)


class ImageNetTrain(BatchTransform):
    """The official code's ImageNet-style training input: RandomResizedCrop(size) + flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int = 224,
                 scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> None:
        super().__init__(mean, std)
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip

    def crop_boxes(self, B: int, H: int, W: int,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, ...]:
        """top, left, height, width per image: torchvision's RandomResizedCrop, 10 tries each."""
        tries = 10
        area = H * W * torch.empty(B, tries).uniform_(*self.scale, generator=generator)
        log_ratio = torch.empty(B, tries).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                                   generator=generator)
        aspect = torch.exp(log_ratio)
        w = torch.sqrt(area * aspect).round()
        h = torch.sqrt(area / aspect).round()
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = ok.int().argmax(dim=1)  # first successful try
        w = w.gather(1, first[:, None])[:, 0]
        h = h.gather(1, first[:, None])[:, 0]
        u = torch.rand(2, B, generator=generator)
        top = torch.floor(u[0] * (H - h + 1))
        left = torch.floor(u[1] * (W - w + 1))
        # No try succeeded: torchvision's fallback, the central crop with the ratio clamped.
        failed = ~ok.any(dim=1)
        if failed.any():
            in_ratio = W / H
            if in_ratio < self.ratio[0]:
                fw, fh = W, round(W / self.ratio[0])
            elif in_ratio > self.ratio[1]:
                fh, fw = H, round(H * self.ratio[1])
            else:
                fw, fh = W, H
            w[failed], h[failed] = float(fw), float(fh)
            top[failed], left[failed] = float((H - fh) // 2), float((W - fw) // 2)
        return top, left, h, w

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, _, H, W = images.shape
        top, left, h, w = self.crop_boxes(B, H, W, generator)
        flips = (torch.rand(B, generator=generator) < 0.5) if self.flip else None
        theta = _crop_theta(top, left, h, w, H, W, flips)
        return self.normalize(_resample(images, theta, self.size))

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        return (self.size, self.size)


class ImageNetTest(BatchTransform):
    """The official code's ImageNet-style test input: Resize(resize) + CenterCrop(crop)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], resize: int = 256,
                 crop: int = 224) -> None:
        super().__init__(mean, std)
        self.resize, self.crop = resize, crop

    def __call__(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        B, _, H, W = images.shape
        if H != W:
            raise ValueError(f"ImageNetTest expects square images, got {H}×{W}")
        # Resize then center-crop is one crop of the central crop/resize fraction, resized.
        side = torch.full((B,), H * self.crop / self.resize)
        offset = (H - side) / 2
        theta = _crop_theta(offset, offset, side, side, H, W)
        return self.normalize(_resample(images, theta, self.crop))

    def output_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        return (self.crop, self.crop)


def make_transforms(style: str, mean: Sequence[float],
                    std: Sequence[float]) -> Tuple[BatchTransform, BatchTransform]:
    """(train, test) transforms: ``"cifar"`` (pad-4 crop + flip | normalise), ``"imagenet"``
    (RandomResizedCrop 224 + flip | Resize 256 + CenterCrop 224) or ``"none"`` (normalise only)."""
    if style == "cifar":
        return CifarTrain(mean, std), BatchTransform(mean, std)
    if style == "imagenet":
        return ImageNetTrain(mean, std), ImageNetTest(mean, std)
    if style == "none":
        return BatchTransform(mean, std), BatchTransform(mean, std)
    raise ValueError(f"unknown transform {style!r}; choose one of {TRANSFORMS}")


# ---------------------------------------------------------------------------------------------
# Loaders


def folder_transforms(style: str) -> Tuple[Callable[[Any], Tensor], Callable[[Any], Tensor]]:
    """(train, test) ``transforms.v2`` pipelines of the images of a :class:`FolderSet`, uint8 out
    (normalised on the training device by the loader): ``"imagenet"`` only, RandomResizedCrop 224 +
    flip | Resize 256 + CenterCrop 224."""
    if style != "imagenet":
        raise ValueError(f"an ImageNet-style folder takes transform 'imagenet' (its images differ "
                         f"in size), got {style!r}")
    from torchvision.transforms import v2

    return (v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224, antialias=True),
                        v2.RandomHorizontalFlip()]),
            v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224)]))


def shard(data: Any, rank: int, world_size: int) -> Any:
    """Every ``world_size``-th item from ``rank`` (a rank's part of the test set: no item twice,
    unlike a padded ``DistributedSampler``, so metrics summed over ranks are exact)."""
    if world_size == 1:
        return data
    if isinstance(data, ImageSet):
        return ImageSet(data.name, data.split, data.images[rank::world_size],
                        data.targets[rank::world_size], data.classes, data.mean, data.std)
    base = torch.arange(len(data)) if data.indices is None else data.indices
    return dataclasses.replace(data, indices=base[rank::world_size])


def _batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class BatchLoader:
    """Iterates over (images, targets) batches of an :class:`ImageSet`, transformed on ``device``.

    Shuffling and augmentation draw from one ``torch.Generator`` seeded by ``seed``; its state is
    in :meth:`state_dict`, so a resumed run sees the same batches as an uninterrupted one.
    A training loader drops the last incomplete batch (a batch of one breaks BatchNorm).
    With a ``sampler`` (a ``DistributedSampler``), the sampler orders the images instead.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, transform: Optional[BatchTransform] = None,
                 device: Union[str, torch.device] = "cpu", seed: int = 0,
                 sampler: Optional[Sampler] = None) -> None:
        self.data, self.batch_size, self.shuffle = data, _batch_size(batch_size), shuffle
        self.sampler = sampler
        # With fewer images than one batch, one short batch beats an empty epoch.
        self.drop_last = drop_last and self._count() >= batch_size
        self.transform = transform if transform is not None else BatchTransform(data.mean, data.std)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def _count(self) -> int:
        return len(self.data) if self.sampler is None else len(self.sampler)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Tell the sampler the epoch (a ``DistributedSampler`` reshuffles per epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        n = len(self.data)
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.int64)
        else:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        pin = self.device.type == "cuda"
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            images, targets = self.data.images[index], self.data.targets[index]
            if pin:
                images, targets = images.pin_memory(), targets.pin_memory()
            images = images.to(self.device, non_blocking=pin)
            targets = targets.to(self.device, non_blocking=pin)
            yield self.transform(images, self.generator), targets

    def output_shape(self) -> Tuple[int, int, int]:
        """C×H×W of the batches this loader yields."""
        _, C, H, W = self.data.images.shape
        return (C, *self.transform.output_size((H, W)))

    def state_dict(self) -> Dict[str, Tensor]:
        """The random state (shuffling and augmentation) for a checkpoint."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        """Restore the random state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])


class FolderLoader(BatchLoader):
    """Batches of a :class:`FolderSet` through a ``torch.utils.data.DataLoader``: ``workers``
    processes decode and transform (``transforms.v2``), pinned memory towards a GPU, persistent
    workers; normalised on ``device``. Shuffling and the workers' seeds come from the loader's
    generator (its state is in :meth:`state_dict`); each worker's augmentation stream is its own."""

    def __init__(self, data: FolderSet, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, device: Union[str, torch.device] = "cpu", seed: int = 0,
                 sampler: Optional[Sampler] = None, workers: int = 0) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, drop_last=drop_last, device=device,
                         seed=seed, sampler=sampler)  # type: ignore[arg-type]
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
        self.loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                 sampler=sampler, drop_last=self.drop_last, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 generator=self.generator)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        pin = self.device.type == "cuda"
        for images, targets in self.loader:
            yield (self.transform(images.to(self.device, non_blocking=pin)),
                   targets.to(self.device, non_blocking=pin))

    def output_shape(self) -> Tuple[int, int, int]:
        return (3, 224, 224)


def make_loaders(train: Any, test: Any, batch_size: int, *, transform: str = "cifar",
                 eval_batch_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                 seed: int = 0, workers: int = 0, rank: int = 0,
                 world_size: int = 1) -> Tuple[BatchLoader, BatchLoader]:
    """A shuffling, augmenting training loader and a deterministic test loader.

    In-memory sets (:class:`ImageSet`) get :class:`BatchLoader` objects, folders (:class:`FolderSet`)
    :class:`FolderLoader` objects with ``workers`` processes. With ``world_size`` > 1 (one process per
    device, torchrun) the training images are split by a ``DistributedSampler`` and the test
    images by :func:`shard`; augmentation differs per rank.
    """
    from torch.utils.data.distributed import DistributedSampler

    eval_batch_size = eval_batch_size or batch_size
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(train, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
    seed = seed + 1000003 * rank  # each rank its own augmentation stream
    test = shard(test, rank, world_size)
    if isinstance(train, FolderSet):
        train_tf, test_tf = folder_transforms(transform)
        train = dataclasses.replace(train, transform=train_tf)
        test = dataclasses.replace(test, transform=test_tf)
        return (FolderLoader(train, batch_size, shuffle=True, drop_last=True, device=device, seed=seed,
                             sampler=sampler, workers=workers),
                FolderLoader(test, eval_batch_size, device=device, seed=seed, workers=workers))
    train_tf, test_tf = make_transforms(transform, train.mean, train.std)
    return (BatchLoader(train, batch_size, shuffle=True, drop_last=True, transform=train_tf,
                        device=device, seed=seed, sampler=sampler),
            BatchLoader(test, eval_batch_size, transform=test_tf, device=device, seed=seed))
