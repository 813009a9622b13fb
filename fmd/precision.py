"""Mixed precision and device synchronisation, one helper each: the autocast dtypes a run or a
benchmark may ask for, the autocast context, and the wait for a device's queued work."""
from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``amp``'s dtype ("bf16", "fp16") on ``device``; "none": fp32."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
