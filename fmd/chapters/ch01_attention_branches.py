"""Chapter 01 (the attention branches of FMDConv): the example batch the figures show."""
from __future__ import annotations

from typing import Dict

import torch


def example_batch(batch_size: int = 8, seed: int = 0) -> Dict[str, object]:
    """A batch of Fashion-MNIST test images via :mod:`fmd.data`, or random normal data without it.

    Returns ``images`` (B×1×32×32 uint8 for display, or None), ``x`` (the normalised float batch),
    ``targets`` (class names, or None) and ``dataset`` (what the batch is, for captions).
    """
    try:
        from ..data import BatchLoader, get_datasets

        _, test = get_datasets("fashion_mnist", test_subset=batch_size, seed=seed)
    except (ImportError, FileNotFoundError):
        g = torch.Generator().manual_seed(seed)
        return {"images": None, "x": torch.randn(batch_size, 1, 32, 32, generator=g),
                "targets": None, "dataset": "random normal (Fashion-MNIST not found)"}
    x, targets = next(iter(BatchLoader(test, batch_size)))
    return {"images": test.images, "x": x, "targets": [test.classes[t] for t in targets.tolist()],
            "dataset": f"Fashion-MNIST test split ({batch_size} images)"}
