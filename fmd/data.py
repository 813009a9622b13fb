"""Loaders: batches of a dataset on the training device, shuffled and augmented reproducibly.

An in-memory set (:class:`fmd.datasets.ImageSet`) is batched by :class:`BatchLoader`, which indexes
whole batches and augments them as tensors on the device: no per-image work (on the same 32×32
images it is many times faster than decoding files through a DataLoader; the README's "Paper scale"
section has the measurement). An image folder is batched by :class:`FolderLoader`, through a
``torch.utils.data.DataLoader`` whose workers decode and transform. Both are :class:`Loader` objects:
one interface, whose random state (shuffling and augmentation) is one generator a checkpoint keeps.
:func:`config_loaders` turns a run's config into the loaders it trains and evaluates on.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from .datasets import (DATASETS, TRANSFORMS, FolderSet, ImageSet, check_channels,  # noqa: F401
                       get_datasets, make_synthetic)
from .transforms import BatchTransform, folder_transforms, make_transforms

PathLike = Union[str, Path]


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


class Loader:
    """The interface of every loader: batches of ``(images, targets)`` on ``device``, its length,
    the epoch for a distributed sampler, the C×H×W of its batches, and its random state.

    Shuffling and augmentation draw from one ``torch.Generator`` seeded by ``seed``; its state is
    in :meth:`state_dict`, so a resumed run sees the same batches as an uninterrupted one.
    A training loader drops the last incomplete batch (a batch of one breaks BatchNorm).
    With a ``sampler`` (a ``DistributedSampler``), the sampler orders the images instead.
    """

    def __init__(self, data: Any, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 device: Union[str, torch.device] = "cpu", seed: int = 0,
                 sampler: Optional[Sampler] = None) -> None:
        self.data, self.batch_size, self.shuffle = data, _batch_size(batch_size), shuffle
        self.sampler = sampler
        # With fewer images than one batch, one short batch beats an empty epoch.
        self.drop_last = drop_last and self._count() >= batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def _count(self) -> int:
        return len(self.data) if self.sampler is None else len(self.sampler)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def output_shape(self) -> Tuple[int, int, int]:
        """C×H×W of the batches this loader yields."""
        raise NotImplementedError

    def images(self, indices: Sequence[int]) -> Tensor:
        """The images at ``indices`` of the loader's set, transformed as its batches are."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Tell the sampler the epoch (a ``DistributedSampler`` reshuffles per epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # type: ignore[union-attr]

    def state_dict(self) -> Dict[str, Tensor]:
        """The random state (shuffling and augmentation) for a checkpoint."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        """Restore the random state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def _to_device(self, images: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        pin = self.device.type == "cuda"
        return images.to(self.device, non_blocking=pin), targets.to(self.device, non_blocking=pin)


class BatchLoader(Loader):
    """Batches of an in-memory :class:`ImageSet`: whole batches indexed at once and transformed on
    ``device`` by a batched ``transform`` (default: normalisation only)."""

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, transform: Optional[BatchTransform] = None,
                 device: Union[str, torch.device] = "cpu", seed: int = 0,
                 sampler: Optional[Sampler] = None) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, drop_last=drop_last, device=device,
                         seed=seed, sampler=sampler)
        self.transform = transform if transform is not None else BatchTransform(data.mean, data.std)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        n = len(self.data)
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.int64)
        else:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            images, targets = self.data.images[index], self.data.targets[index]
            if self.device.type == "cuda":
                images, targets = images.pin_memory(), targets.pin_memory()
            images, targets = self._to_device(images, targets)
            yield self.transform(images, self.generator), targets

    def output_shape(self) -> Tuple[int, int, int]:
        _, C, H, W = self.data.images.shape
        return (C, *self.transform.output_size((H, W)))

    def images(self, indices: Sequence[int]) -> Tensor:
        index = torch.as_tensor(list(indices), dtype=torch.int64)
        return self.transform(self.data.images[index].to(self.device), self.generator)


class FolderLoader(Loader):
    """Batches of a :class:`FolderSet` through a ``torch.utils.data.DataLoader``: ``workers``
    processes decode and transform (``transforms.v2``, the set's own ``transform``), pinned memory
    towards a GPU, persistent workers; normalised on ``device``. Shuffling and the workers' seeds
    come from the loader's generator; each worker's augmentation stream is its own."""

    def __init__(self, data: FolderSet, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, device: Union[str, torch.device] = "cpu", seed: int = 0,
                 sampler: Optional[Sampler] = None, workers: int = 0) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, drop_last=drop_last, device=device,
                         seed=seed, sampler=sampler)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
        self.normalize = BatchTransform(data.mean, data.std)
        self.loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                 sampler=sampler, drop_last=self.drop_last, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 generator=self.generator)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        for images, targets in self.loader:
            images, targets = self._to_device(images, targets)
            yield self.normalize(images), targets

    def output_shape(self) -> Tuple[int, int, int]:
        # What the set's transform makes of its first image (the test pipeline draws no random number).
        return tuple(self.data[0][0].shape)  # type: ignore[return-value]

    def images(self, indices: Sequence[int]) -> Tensor:
        return self.normalize(torch.stack([self.data[int(i)][0] for i in indices]).to(self.device))


def make_loaders(train: Any, test: Any, batch_size: int, *, transform: str = "cifar",
                 eval_batch_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                 seed: int = 0, workers: int = 0, rank: int = 0,
                 world_size: int = 1) -> Tuple[Loader, Loader]:
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


def config_loaders(config: Any, data_root: Optional[PathLike] = None, *,
                   device: Union[str, torch.device] = "cpu", download: bool = False, workers: int = 0,
                   rank: int = 0, world_size: int = 1) -> Tuple[Any, Any, Loader, Loader]:
    """The train and test sets a run's ``config`` (:class:`fmd.config.TrainConfig`) names and its
    two loaders: what training, a chapter's evaluation and Grad-CAM all see of a run's images."""
    train_set, test_set = get_datasets(config.dataset, data_root, train_subset=config.train_subset,
                                       test_subset=config.test_subset, channels=config.channels,
                                       download=download, seed=config.data_seed)
    train_loader, test_loader = make_loaders(
        train_set, test_set, config.batch_size, transform=config.transform,
        eval_batch_size=config.eval_batch_size or 2 * config.batch_size, device=device,
        seed=config.seed, workers=workers if config.dataset == "imagenet" else 0, rank=rank,
        world_size=world_size)
    return train_set, test_set, train_loader, test_loader


def eval_loader(config: Any, split: str = "test", data_root: Optional[PathLike] = None, *,
                device: Union[str, torch.device] = "cpu") -> Loader:
    """A deterministic loader over the config's ``split`` ("train" or "test") images, with the
    run's test transform (no augmentation, no shuffling): what evaluation sees of a run's images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train_set, test_set, _, loader = config_loaders(config, data_root, device=device)
    if split == "train":  # the training images through the test transform
        _, loader = make_loaders(train_set, train_set, config.batch_size, transform=config.transform,
                                 eval_batch_size=config.eval_batch_size or 2 * config.batch_size,
                                 device=device, seed=config.seed)
    return loader
