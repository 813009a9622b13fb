"""Behaviour of the dynamic layers and of every strategy of the shared core."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmd
import fmd.engine as engine_module
from fmd.attention import Attention
from fmd.conv import CONVS, CondConv2d, DynamicConv2d, FMDConv2d, ODConv2d, make_conv
from fmd.engine import Geometry, applicable_strategies, dynamic_conv2d

DYNAMIC = ["condconv", "dyconv", "odconv", "fmdconv"]


def reference(x, weight, bias, att: Attention, stride=1, padding=1, groups=1):
    """One sample at a time, straight from the defining equation."""
    outs = []
    for b in range(x.shape[0]):
        pi = att.kernel[b] if att.kernel is not None else torch.full((weight.shape[0],), 1 / weight.shape[0],
                                                                      dtype=x.dtype)
        w = (pi[:, None, None, None, None] * weight).sum(0)
        if att.spatial is not None:
            w = w * att.spatial[b]
        xb = x[b:b + 1] if att.input is None else x[b:b + 1] * att.input[b][None, :, None, None]
        bb = None if bias is None else (pi[:, None] * bias).sum(0)
        y = F.conv2d(xb, w, bb, stride, padding, 1, groups)
        if att.output is not None:
            y = y * att.output[b][None, :, None, None]
        outs.append(y)
    return torch.cat(outs)


def random_attention(B, C, O, K, k, spatial=True):
    return Attention(input=torch.rand(B, C, dtype=torch.double),
                     kernel=torch.rand(B, K, dtype=torch.double).softmax(1),
                     spatial=torch.rand(B, k, k, dtype=torch.double) if spatial else None,
                     output=torch.rand(B, O, dtype=torch.double))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [7, 11])  # 11: the grouped path folds both gates into the kernels
def test_every_strategy_matches_reference_outputs_and_gradients(groups, stride, spatial, batch, size):
    C, O, K, k = 4, 6, 3, 3
    x = torch.randn(batch, C, size, size, dtype=torch.double, requires_grad=True)
    weight = torch.randn(K, O, C // groups, k, k, dtype=torch.double, requires_grad=True)
    bias = torch.randn(K, O, dtype=torch.double, requires_grad=True)
    att = random_attention(batch, C, O, K, k, spatial)
    att = Attention(*(a.requires_grad_() if a is not None else None for a in att))
    geo = Geometry((stride, stride), (1, 1), (1, 1), groups)
    expected = reference(x, weight, bias, att, stride, 1, groups)
    grad_out = torch.randn_like(expected)
    leaves = [x, weight, bias] + [a for a in att if a is not None]
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)
    strategies = applicable_strategies(att, geo)
    assert "grouped" in strategies and ("kfold_conv" in strategies) == (not spatial)
    assert ("kfold_im2col" in strategies) == ("sample_im2col" in strategies) == (groups == 1)
    for strategy in strategies:
        out = dynamic_conv2d(x, weight, bias, att, geo, strategy)
        torch.testing.assert_close(out, expected, msg=f"strategy {strategy}")
        for g, e in zip(torch.autograd.grad(out, leaves, grad_out), expected_grads):
            torch.testing.assert_close(g, e, msg=f"gradient, strategy {strategy}")


@pytest.mark.parametrize("chunk", [1, 2])
def test_sample_im2col_in_chunks_matches_reference(monkeypatch, chunk):
    # Chunks of 1 and 2 samples over a batch of 5 (the last chunk is short), every attention on.
    B, C, O, K, k = 5, 4, 6, 3, 3
    weight = torch.randn(K, O, C, k, k, dtype=torch.double, requires_grad=True)
    monkeypatch.setattr(engine_module, "SAMPLE_IM2COL_CHUNK_BYTES", chunk * weight[0].numel() * 8)
    x = torch.randn(B, C, 9, 9, dtype=torch.double, requires_grad=True)
    bias = torch.randn(K, O, dtype=torch.double, requires_grad=True)
    att = Attention(*(a.requires_grad_() for a in random_attention(B, C, O, K, k)))
    geo = Geometry((2, 2), (1, 1), (1, 1), 1)
    leaves = [x, weight, bias, *att]
    expected = reference(x, weight, bias, att, stride=2)
    out = dynamic_conv2d(x, weight, bias, att, geo, "sample_im2col")
    torch.testing.assert_close(out, expected)
    grad_out = torch.randn_like(out)
    for g, e in zip(torch.autograd.grad(out, leaves, grad_out),
                    torch.autograd.grad(expected, leaves, grad_out)):
        torch.testing.assert_close(g, e)


def test_shared_strategy_without_per_sample_kernel_matches_reference():
    x = torch.randn(2, 4, 6, 6, dtype=torch.double)
    weight = torch.randn(3, 5, 4, 3, 3, dtype=torch.double)
    att = Attention(input=torch.rand(2, 4, dtype=torch.double), output=torch.rand(2, 5, dtype=torch.double))
    geo = Geometry((1, 1), (1, 1), (1, 1), 1)
    assert applicable_strategies(att, geo) == ("shared", "grouped")
    for strategy in ("shared", "grouped"):
        torch.testing.assert_close(dynamic_conv2d(x, weight, None, att, geo, strategy),
                                   reference(x, weight, None, att))


def test_forcing_an_inapplicable_strategy_is_refused():
    layer = ODConv2d(4, 4, 3, 1, 1, strategy="kfold_conv")
    with pytest.raises(ValueError, match="cannot compute this layer"):
        layer(torch.randn(2, 4, 5, 5))


@pytest.mark.parametrize("name", DYNAMIC)
def test_k1_with_attentions_off_equals_conv2d(name):
    conv = nn.Conv2d(6, 8, 3, 2, 1, bias=True)
    options = {"num_experts": 1} if name == "condconv" else {"kernel_num": 1}
    layer = make_conv(name, 6, 8, 3, 2, 1, bias=name != "odconv", **options)
    with torch.no_grad():
        layer.weight.copy_(conv.weight[None])
        if layer.bias is not None:
            layer.bias.copy_(conv.bias[None])
        else:
            conv.bias.zero_()
    # Every attention off: π ≡ 1 over the single kernel, no input/spatial/output scaling.
    layer.attend = lambda x: Attention(kernel=torch.ones(x.shape[0], 1))
    x = torch.randn(3, 6, 9, 9)
    for strategy in ("grouped", "kfold_conv", "kfold_im2col"):
        layer.strategy = strategy
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_fmdconv_without_attentions_and_k1_equals_conv2d():
    conv = nn.Conv2d(5, 7, 3, 1, 1)
    layer = FMDConv2d(5, 7, 3, 1, 1, kernel_num=1, attentions=())
    with torch.no_grad():
        layer.weight.copy_(conv.weight[None])
        layer.bias.copy_(conv.bias[None])
    x = torch.randn(2, 5, 8, 8)
    torch.testing.assert_close(layer(x), conv(x))
    assert layer.last_strategy == "shared"


def build(name, C=8, O=16, **kw):
    return make_conv(name, C, O, 3, 1, 1, **kw)


@pytest.mark.parametrize("name", DYNAMIC)
def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(name):
    layer = build(name).eval()
    x = torch.randn(5, 8, 6, 6)
    with torch.no_grad():
        together = layer(x)
        alone = torch.cat([layer(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DYNAMIC)
def test_gradients_reach_every_parameter(name):
    layer = build(name).train()
    layer(torch.randn(4, 8, 6, 6)).square().mean().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", DYNAMIC)
def test_gradcheck_in_double_precision(name):
    layer = make_conv(name, 3, 4, 3, 1, 1).double()
    layer.set_temperature(kernel=2.0, gate=2.0) if hasattr(layer, "set_temperature") else None
    layer.eval()  # BatchNorm in the trunk uses running statistics: a fixed function of x
    x = torch.randn(2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", DYNAMIC)
def test_trains_at_batch_size_one(name):
    layer = build(name).train()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    out = layer(torch.randn(1, 8, 6, 6))
    out.square().mean().backward()
    optimizer.step()
    assert out.shape == (1, 16, 6, 6)
    assert not torch.equal(before, layer.weight)


@pytest.mark.parametrize("name", DYNAMIC)
def test_channels_last_input_gives_the_same_output(name):
    layer = build(name).eval()
    x = torch.randn(3, 8, 7, 7)
    with torch.no_grad():
        for strategy in applicable_strategies(layer.attend(x), layer.geometry):
            layer.strategy = strategy
            torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), layer(x),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DYNAMIC)
def test_automatic_strategy_is_visible_in_repr(name):
    layer = build(name).eval()
    with torch.no_grad():
        layer(torch.randn(1, 8, 6, 6))
    assert layer.last_strategy == "grouped"  # batch 1: the mixed kernel is one ordinary conv
    assert "last: grouped" in repr(layer)


def test_state_dict_round_trip_keeps_temperatures():
    layer = FMDConv2d(8, 8, 3, 1, 1)
    layer.set_temperature(kernel=7.0, gate=3.0)
    clone = FMDConv2d(8, 8, 3, 1, 1)
    clone.load_state_dict(layer.state_dict())
    assert clone.kernel_attention.head.temperature.item() == 7.0
    assert clone.input_head.temperature.item() == 3.0
    assert clone.output_head.temperature.item() == 3.0


def test_expert_kernels_are_initialised_separately_like_conv2d():
    layer = DynamicConv2d(32, 32, 3, kernel_num=4)
    assert not torch.equal(layer.weight[0], layer.weight[1])
    bound = 1 / (32 * 9) ** 0.5  # kaiming_uniform(a=√5) on fan_in, as nn.Conv2d
    assert layer.weight.abs().max() <= bound + 1e-7
    assert layer.weight.std() > 0.5 * bound / 3 ** 0.5


@pytest.mark.parametrize("name", DYNAMIC)
def test_bad_input_channels_and_rank_are_named(name):
    layer = build(name)
    with pytest.raises(ValueError, match="expects 8 input channels, got 5"):
        layer(torch.randn(2, 5, 6, 6))
    with pytest.raises(ValueError, match="4-D input"):
        layer(torch.randn(8, 6, 6))


def test_bad_construction_arguments_are_named():
    with pytest.raises(ValueError, match="kernel_num must be a positive integer"):
        DynamicConv2d(4, 4, 3, kernel_num=0)
    with pytest.raises(ValueError, match="num_experts must be a positive integer"):
        CondConv2d(4, 4, 3, num_experts=0)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        ODConv2d(4, 4, 3, temperature=0)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        FMDConv2d(4, 4, 3, kernel_temperature=-1)
    with pytest.raises(ValueError, match="divisible by groups"):
        FMDConv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="unknown conv 'deform'"):
        make_conv("deform", 4, 4, 3)
    with pytest.raises(ValueError, match="strategy must be one of"):
        FMDConv2d(4, 4, 3, strategy="fastest")
    with pytest.raises(ValueError, match="attentions must be a subset"):
        FMDConv2d(4, 4, 3, attentions=("input", "spatial"))
    for bad in (30, 33.6):  # the same exact rule as StepDecay's, not a rounded one
        with pytest.raises(ValueError, match="≡ 1 \\(mod 3\\)"):
            FMDConv2d(4, 4, 3, preset="paper", kernel_temperature=bad)
    with pytest.raises(ValueError, match="norm must be one of"):
        ODConv2d(4, 4, 3, norm="group")
    with pytest.raises(ValueError, match="static conv takes no options"):
        make_conv("static", 4, 4, 3, kernel_num=4)


def test_make_conv_keeps_each_layer_s_own_bias_default():
    assert make_conv("odconv", 4, 4, 3).bias is None  # as ODConv2d and the official layer
    assert make_conv("odconv", 4, 4, 3, bias=True).bias is not None
    assert make_conv("fmdconv", 4, 4, 3).bias is not None
    assert make_conv("static", 4, 4, 3, bias=False).bias is None


def test_output_size_of_string_paddings():
    from fmd.engine import _output_size
    x, w = torch.empty(1, 2, 12, 12), torch.empty(4, 3, 2, 3, 3)
    for padding in ("valid", "same"):
        expected = F.conv2d(x, w[0], padding=padding).shape[-2:]
        assert _output_size(x, w, Geometry((1, 1), padding, (1, 1), 1)) == tuple(expected)


@pytest.mark.parametrize("name", list(CONVS))
def test_each_registry_entry_builds_what_it_describes(name):
    spec = CONVS[name]
    layer = make_conv(name, 8, 16, 3, padding=1)
    assert isinstance(layer, spec.layer)
    kernels = layer.weight.shape[0] if layer.weight.dim() == 5 else 1
    assert kernels == spec.kernel_count({})
    if spec.kernel_option is not None:
        assert make_conv(name, 8, 16, 3, **{spec.kernel_option: 3}).weight.shape[0] == 3
        assert spec.kernel_count({spec.kernel_option: 3}) == 3
    block = fmd.resnet18(conv=name, width=8, num_classes=10).layer1[0].conv1
    assert isinstance(block, spec.layer) and (block.bias is not None) == spec.resnet_bias
    roles = set(fmd.default_schedules(name))
    assert roles <= {"kernel", "gate"} and bool(roles) == (spec.schedules is not None)


def test_run_fields_derive_from_layer_options_and_schedules():
    assert CONVS["static"].run_fields == ()
    assert CONVS["condconv"].run_fields == ("kernel_num",)
    assert CONVS["odconv"].run_fields == ("kernel_num", "anneal_epochs", "temperature_clock")
    assert CONVS["fmdconv"].run_fields == ("kernel_num", "preset", "kernel_temperature",
                                           "gate_temperature", "attentions", "anneal_epochs",
                                           "temperature_clock")


def test_a_conv_without_temperatures_keeps_its_key_on_either_clock():
    from fmd.config import make_config
    for conv in ("static", "condconv"):
        assert (make_config("smoke", conv=conv, temperature_clock="official").key()
                == make_config("smoke", conv=conv, temperature_clock="fmd").key())
    assert (make_config("smoke", conv="dyconv", temperature_clock="official").key()
            != make_config("smoke", conv="dyconv", temperature_clock="fmd").key())


def test_backbones_take_conv_options_directly():
    model = fmd.resnet18(conv="fmdconv", kernel_num=2, preset="paper", kernel_temperature=31)
    layer = model.layer2[0].conv2
    assert layer.kernel_num == 2 and layer.preset == "paper"
    with pytest.raises(TypeError, match="kernel_num"):
        fmd.resnet18(conv="condconv", kernel_num=2)  # CondConv counts experts: num_experts
    with pytest.raises(ValueError, match="static conv takes no options"):
        fmd.resnet18(conv="static", kernel_num=2)


def test_default_schedules_refuse_unknown_fields_and_convs():
    with pytest.raises(ValueError, match="unknown schedule field"):
        fmd.default_schedules("fmdconv", kernel_temp=30)
    with pytest.raises(ValueError, match="unknown conv 'deform'"):
        fmd.default_schedules("deform")


def test_odconv_skips_heads_like_the_official_code():
    pointwise = ODConv2d(16, 32, 1, kernel_num=1)
    assert pointwise.spatial_head is None and pointwise.kernel_head is None
    depthwise = ODConv2d(16, 16, 3, 1, 1, groups=16)
    assert depthwise.output_head is None
    assert depthwise.trunk.width == 16 and ODConv2d(512, 512, 3).trunk.width == 32


def test_fmdconv_branch_widths_follow_the_official_code():
    layer = FMDConv2d(256, 128, 3)
    assert layer.trunk.width == 16  # max(int(256/16), 16)
    assert layer.kernel_attention.fc.out_features == 65  # int(256 * 0.25) + 1
    assert FMDConv2d(512, 512, 3).trunk.width == 32
    assert layer.bias.shape == (4, 128)


def test_kernel_branch_on_a_three_channel_input_has_k_hidden_units_like_the_official_code():
    # attention2d in the FMDConv and DynamicConv code: hidden = K when in_planes == 3
    assert FMDConv2d(3, 16, 3, kernel_num=4).kernel_attention.fc.out_features == 4
    assert DynamicConv2d(3, 16, 3, kernel_num=6).kernel_attention.fc.out_features == 6
    assert DynamicConv2d(4, 16, 3).kernel_attention.fc.out_features == 2  # int(4 * 0.25) + 1


def test_initialisation_is_torchs_not_the_official_one_as_the_readme_says():
    """The README's "Differences from the official code": nn.Conv2d / nn.Linear defaults here.

    The official FMDConv layer draws kernels and attention FCs kaiming-normal on fan-out with zero
    biases: kernel std √(2/(64·9)) = 0.059, kernel-branch FCs √(2/17) = 0.34 and √(2/4) = 0.71.
    """
    torch.manual_seed(0)
    layer = FMDConv2d(64, 64, 3, 1, 1, kernel_num=4)
    uniform_std = lambda fan_in: 1 / (3 * fan_in) ** 0.5  # noqa: E731 - kaiming-uniform, a = √5
    branch = layer.kernel_attention
    for weight, fan_in in ((layer.weight, 64 * 9), (layer.trunk.fc.weight, 64),
                           (branch.fc.weight, 64), (branch.head.fc.weight, 17),
                           (layer.input_head.fc.weight, 16)):
        assert weight.std().item() == pytest.approx(uniform_std(fan_in), rel=0.15)
    for bias, fan_in in ((layer.bias, 64 * 9), (branch.head.fc.bias, 17)):
        assert bias.abs().max() <= fan_in ** -0.5 and bias.abs().max() > 0


def test_gates_fold_into_the_kernel_only_where_the_kernel_is_smaller_than_the_map():
    from fmd.engine import _foldable_gates

    weight = torch.zeros(4, 16, 16, 3, 3)  # 2,304 weights per kernel
    att = Attention(input=torch.rand(2, 16), kernel=torch.rand(2, 4), spatial=None,
                    output=torch.rand(2, 16))
    geo = Geometry((1, 1), (1, 1), (1, 1), 1)
    large, small = torch.zeros(2, 16, 32, 32), torch.zeros(2, 16, 8, 8)  # 16,384 and 1,024 values
    assert _foldable_gates(large, weight, att, geo, True) == (True, True)
    assert _foldable_gates(small, weight, att, geo, True) == (False, False)
    assert _foldable_gates(large, weight, att, geo, False) == (False, False)  # no per-sample kernel
    strided = Geometry((4, 4), (1, 1), (1, 1), 1)  # 8×8 outputs of a 32×32 input
    assert _foldable_gates(large, weight, att, strided, True) == (True, False)


def test_mix_kernels_returns_a_new_tensor_for_every_call_at_batch_1():
    from fmd.engine import mix_kernels
    weight = torch.randn(4, 8, 8, 3, 3)
    pis = torch.softmax(torch.randn(4, 1, 4), -1)
    with torch.no_grad():
        one_at_a_time = [mix_kernels(weight, pi, None) for pi in pis]
        together = mix_kernels(weight, pis[:, 0], None)
    for b, mixed in enumerate(one_at_a_time):
        torch.testing.assert_close(mixed[0], together[b])


@pytest.mark.parametrize("old, new", [("parallel", "kfold_conv"), ("unfold", "kfold_im2col"),
                                      ("batched", "sample_im2col")])
def test_old_strategy_names_are_refused_with_the_new_name(old, new):
    with pytest.raises(ValueError, match=f"strategy '{old}' was renamed '{new}'"):
        FMDConv2d(4, 4, 3, strategy=old)
    with pytest.raises(ValueError, match="strategy must be one of"):
        FMDConv2d(4, 4, 3, strategy="fastest")
