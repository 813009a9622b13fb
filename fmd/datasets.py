"""Datasets: CIFAR-10/100, Fashion-MNIST, a synthetic set for tests, ImageNet-style folders.

The small sets are held in memory as a ``uint8`` tensor N×C×H×W (:class:`ImageSet`); their loaders
(:mod:`fmd.data`) index whole batches and augment them as tensors (:mod:`fmd.transforms`).
ImageNet-style folders (``train/<class>/*``, ``val/<class>/*``) are read with torchvision's
``ImageFolder`` (:class:`FolderSet`). Data roots come from an argument, else ``$FMD_DATA_ROOT``
(ImageNet: ``$FMD_IMAGENET``), else ``data/`` in the repository.
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
from torch.utils.data import Dataset

from .provenance import REPO_ROOT

PathLike = Union[str, Path]

DATA_ROOT = REPO_ROOT / "data"
DATA_ROOT_ENV = "FMD_DATA_ROOT"  # the folder that holds the datasets, instead of data/
IMAGENET_ENV = "FMD_IMAGENET"  # an ImageNet-style tree (train/ and val/), instead of <data root>/imagenet
DATASETS = ("cifar10", "cifar100", "fashion_mnist", "synthetic", "imagenet")
# The channel counts each dataset can give (None: its own); the synthetic set draws any number.
DATASET_CHANNELS: Dict[str, Optional[Tuple[int, ...]]] = {
    "cifar10": (3,), "cifar100": (3,), "fashion_mnist": (1, 3), "synthetic": None, "imagenet": (3,)}
TRANSFORMS = ("cifar", "flip", "imagenet", "none")
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
    def targets(self) -> Tensor:
        """The class index of every image (from the folder names: no image is read)."""
        every = torch.tensor(self.folder.targets, dtype=torch.int64)
        return every if self.indices is None else every[self.indices]

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
