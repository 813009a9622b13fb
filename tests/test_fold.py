"""Folding the kernel attention: exact on the images it was averaged over, smaller, one convolution."""
import pytest
import torch

from fmd import resnet18
from fmd.conv import FMDConv2d
from fmd.fold import fold_kernel_attention, mean_kernel_attention


def model(**options):
    torch.manual_seed(0)
    net = resnet18(conv="fmdconv", num_classes=10, stem="cifar", width=8, **options)
    with torch.no_grad():  # sharpen the kernel attentions so that the mix depends on the image
        for m in net.modules():
            if isinstance(m, FMDConv2d):
                m.set_temperature(1.0)
                for p in m.kernel_attention.parameters():
                    p.mul_(10)
    return net.eval()


def test_folding_is_exact_for_the_image_it_averaged_over():
    net, x = model(), torch.randn(3, 3, 32, 32)
    pis = mean_kernel_attention(net, x[:1])
    assert len(pis) == 16
    assert all(p.shape == (4,) and torch.isclose(p.sum(), torch.tensor(1.0)) for p in pis.values())
    assert max((p.max() - p.min()).item() for p in pis.values()) > 1e-3  # not a uniform mix
    folded = fold_kernel_attention(net, x[:1])
    with torch.no_grad():
        assert torch.allclose(folded(x[:1]), net(x[:1]), atol=1e-5)
        assert not torch.allclose(folded(x[1:]), net(x[1:]), atol=1e-5)  # other images mix otherwise
    layers = [m for m in folded.modules() if isinstance(m, FMDConv2d)]
    assert all(m.kernel_attention is None and m.weight.shape[0] == 1 for m in layers)
    assert all(m.attentions == ("input", "output") for m in layers)
    with torch.no_grad():
        folded(x)
    assert {m.last_strategy for m in layers} == {"shared"}  # one ordinary convolution per layer
    assert sum(p.numel() for p in folded.parameters()) < 0.4 * sum(p.numel() for p in net.parameters())
    assert all(m.kernel_attention is not None for m in net.modules() if isinstance(m, FMDConv2d))


def test_a_uniform_attention_folds_without_changing_any_output():
    net, x = model(), torch.randn(4, 3, 32, 32)
    for m in net.modules():
        if isinstance(m, FMDConv2d):
            m.set_temperature(1e6)  # π = 1/K for every image
    folded = fold_kernel_attention(net, x[:2])
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)


def test_a_model_without_kernel_attention_is_refused():
    with pytest.raises(ValueError, match="no FMDConv layer with a kernel attention"):
        fold_kernel_attention(resnet18(num_classes=10, width=8), torch.randn(1, 3, 32, 32))
