"""The oneDNN fault behind issue 22, reduced, and what the ResNets do about it.

torch 2.14.1 ships oneDNN 3.12.0. On an AMD EPYC Zen 3 host (family 25 model 1, AVX2) the weight
gradient of a 1×1 convolution with stride 2 in channels_last, with 2, 4 or 6 input channels (8×8 or
larger maps, batch 8 or more), writes past its buffer; glibc aborts the process later ("corrupted
size vs. prev_size", "double free or corruption"). NCHW, stride 1, 8 or more input channels, or
oneDNN disabled do not. The ResNets' downsampling shortcut is that convolution (4 → 8 channels at the
tests' width 4), in eager training with ``--channels-last`` and in compiled training, where inductor
turns convolutions to channels_last. :class:`fmd.models.StridedPointwise` computes it at stride 1 on
every second pixel instead. A host without the fault passes either form; on that host the
subprocess test below aborts with ``nn.Conv2d``'s strided form.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fmd.models import StridedPointwise

REDUCTION = """
import torch
from fmd.models import ResNet
torch.set_num_threads(1)
torch.manual_seed(0)
shortcut = ResNet(18, "static", 10, "imagenet", 4).layer2[0].downsample[0]
assert (shortcut.in_channels, shortcut.out_channels, shortcut.stride) == (4, 8, (2, 2)), shortcut
shortcut = shortcut.to(memory_format=torch.channels_last)
for _ in range(50):
    x = torch.randn(32, 4, 8, 8).to(memory_format=torch.channels_last)
    shortcut(x).sum().backward()
print("finished")
"""


def test_the_downsampling_shortcut_trains_in_channels_last_without_corrupting_the_heap():
    env = dict(os.environ, MALLOC_CHECK_="3", MALLOC_PERTURB_="165")
    done = subprocess.run([sys.executable, "-c", REDUCTION], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "finished" in done.stdout, (
        f"exit {done.returncode} (a negative value is the signal): {done.stderr[-2000:]}")


@pytest.mark.parametrize("stride,size", [(2, (8, 8)), (2, (7, 9)), (3, (10, 11))])
def test_strided_pointwise_is_a_strided_1x1_convolution(stride, size):
    torch.manual_seed(0)
    ours = StridedPointwise(6, 10, stride)
    reference = nn.Conv2d(6, 10, 1, stride, bias=False)  # NCHW: the fault needs channels_last
    reference.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight"]
    x = torch.randn(3, 6, *size)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), reference(x2)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y1)
    y1.backward(g), y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)
