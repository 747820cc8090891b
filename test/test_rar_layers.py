"""RAR's pieces against the paper and against references written here from first principles:
the deformable convolution, the Table-1 backbone and its torchvision loader, the hierarchical
attention (eq. 1-4) and the contextual correlation layer (eq. 5, 7, 9)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtrack_core.backbones.deform_conv import DeformConv2d, _torchvision_deform_conv2d, deform_conv2d_reference
from vtrack_core.backbones.resnet import SPECS, ResNetOS8, output_size
from vtrack_core.ops.maps import gaussian_label, hann_window
from vtrack_core.trackers.rar import (
    BACKBONES,
    FEATURE_STRIDE,
    LevelAttention,
    RARNet,
    cell_pixels,
    learn_filter,
    load_rar_weights,
    load_torchvision_resnet50,
    peak_offset,
    respond,
    search_gradient,
)
from vtrack_core.weights import WeightsError


# --- deformable convolution -------------------------------------------------------------------
def _bilinear(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """C-vector at a real position; neighbours outside the image count as zero."""
    height, width = image.shape[1:]
    y0, x0 = math.floor(y), math.floor(x)
    value = torch.zeros(image.shape[0], dtype=image.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < height and 0 <= xx < width:
                value += (1 - abs(y - yy)) * (1 - abs(x - xx)) * image[:, yy, xx]
    return value


def _deform_loop(x, offset, weight, stride, padding, dilation):
    """Dai et al.'s definition, one output cell and one tap at a time."""
    out_c, in_c, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    out = torch.zeros(x.shape[0], out_c, out_h, out_w, dtype=x.dtype)
    for n in range(x.shape[0]):
        for i in range(out_h):
            for j in range(out_w):
                for a in range(kh):
                    for b in range(kw):
                        k = a * kw + b
                        y = i * stride - padding + a * dilation + float(offset[n, 2 * k, i, j])
                        xx = j * stride - padding + b * dilation + float(offset[n, 2 * k + 1, i, j])
                        out[n, :, i, j] += weight[:, :, a, b] @ _bilinear(x[n], y, xx)
    return out


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_deform_conv_matches_its_definition(stride, padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out_h = (7 + 2 * padding - dilation * 2 - 1) // stride + 1
    out_w = (8 + 2 * padding - dilation * 2 - 1) // stride + 1
    zero = torch.zeros(2, 18, out_h, out_w, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d_reference(x, zero, weight, None, stride, padding, dilation),
                               F.conv2d(x, weight, None, stride, padding, dilation))
    offset = torch.randn(2, 18, out_h, out_w, dtype=torch.float64) * 1.5  # some taps leave the image
    torch.testing.assert_close(deform_conv2d_reference(x, offset, weight, None, stride, padding, dilation),
                               _deform_loop(x, offset, weight, stride, padding, dilation))


def test_deform_conv_gradients_and_torchvision():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 18, 5, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()  # off the kinks
    assert torch.autograd.gradcheck(lambda a, o, w: deform_conv2d_reference(a, o, w, None, 1, 1, 1),
                                    (x, offset, weight))
    op = _torchvision_deform_conv2d()
    if op is None:
        pytest.skip("torchvision's compiled ops do not load here: only the plain-PyTorch path is checked")
    torch.testing.assert_close(op(x, offset, weight, padding=1), deform_conv2d_reference(x, offset, weight, None, 1, 1))


def test_fresh_deformable_module_is_an_ordinary_convolution():
    module = DeformConv2d(4, 6, 3, 1, 1)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(module(x), F.conv2d(x, module.weight, None, 1, 1), atol=1e-5, rtol=1e-5)


# --- backbone (Table 1) -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(SPECS))
def test_backbone_sizes_follow_table_1(variant):
    net = ResNetOS8(variant).eval()
    sizes = {}
    for name in ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-1]))
    with torch.no_grad():
        conv3, conv4, conv5 = net(torch.rand(1, 3, 255, 255) * 255).values()
    assert sizes == {"conv1": 127, "maxpool": 63, "layer1": 63, "layer2": 31, "layer3": 31, "layer4": 31}
    stem, widths, _ = SPECS[variant]
    assert [t.shape[1] for t in (conv3, conv4, conv5)] == [4 * w for w in widths[1:]]
    assert output_size(255) == 31 and output_size(225) == 27
    assert isinstance(net.layer3[0].conv2, DeformConv2d)  # conv4_1's 3x3 only
    assert not any(isinstance(m, DeformConv2d) for m in [*net.layer3[1:].modules(), *net.layer4.modules()])
    assert net.layer3[0].conv2.stride == 1 and net.layer4[0].conv2.stride == (1, 1)


def test_one_cell_is_the_stride_in_input_pixels():
    """The tracker turns a response peak's offset in cells into image pixels with
    cell_pixels: moving the input by 2 x FEATURE_STRIDE pixels must move every level's
    features by exactly 2 cells (away from the zero-padded border), and a 225 px patch of
    a 225 px image is FEATURE_STRIDE pixels per cell, not 225 / 27."""
    torch.manual_seed(0)
    net = ResNetOS8("resnet_light").eval()
    shift = 2 * FEATURE_STRIDE
    image = torch.rand(1, 3, 225 + shift, 225 + shift) * 255
    with torch.no_grad():
        unshifted = net(image[:, :, :225, :225]).values()
        shifted = net(image[:, :, shift:, shift:]).values()
    for a, b in zip(unshifted, shifted):
        assert torch.allclose(a[:, :, 8:19, 8:19], b[:, :, 6:17, 6:17], atol=1e-4)
        assert not torch.allclose(a[:, :, 8:19, 8:19], b[:, :, 8:19, 8:19], atol=1e-2)
    assert cell_pixels(225.0, 225) == FEATURE_STRIDE
    assert cell_pixels(450.0, 225) == 2 * FEATURE_STRIDE


TORCHVISION_BLOCKS = (3, 4, 6, 3)


def _torchvision_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's resnet50 names and shapes (written out from its
    definition: Bottleneck, expansion 4, stride in conv2, downsample = 1x1 conv + BN)."""
    generator = torch.Generator().manual_seed(seed)

    def bn(prefix: str, channels: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": torch.rand(channels, generator=generator) + 0.5,
                f"{prefix}.bias": torch.randn(channels, generator=generator) * 0.1,
                f"{prefix}.running_mean": torch.randn(channels, generator=generator) * 0.1,
                f"{prefix}.running_var": torch.rand(channels, generator=generator) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(100)}

    def conv(out_c: int, in_c: int, k: int) -> torch.Tensor:
        return torch.randn(out_c, in_c, k, k, generator=generator) * math.sqrt(2.0 / (in_c * k * k))

    state = {"conv1.weight": conv(64, 3, 7), **bn("bn1", 64)}
    in_c = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), TORCHVISION_BLOCKS), start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            state.update({f"{p}.conv1.weight": conv(width, in_c, 1), **bn(f"{p}.bn1", width),
                          f"{p}.conv2.weight": conv(width, width, 3), **bn(f"{p}.bn2", width),
                          f"{p}.conv3.weight": conv(4 * width, width, 1), **bn(f"{p}.bn3", 4 * width)})
            if block == 0:
                state.update({f"{p}.downsample.0.weight": conv(4 * width, in_c, 1), **bn(f"{p}.downsample.1", 4 * width)})
            in_c = 4 * width
    state["fc.weight"] = torch.randn(1000, 2048, generator=generator) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    return state


def _reference_forward(state: dict[str, torch.Tensor], rgb: torch.Tensor) -> list[torch.Tensor]:
    """Table 1's network written with functional ops from the file's tensors: conv1 padded by
    2, pooling unpadded, conv3_1 strided without padding (shortcut on the inner pixels),
    conv4_1 / conv5_1 at stride 1."""
    def bn(x, p):
        return F.batch_norm(x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(rgb, state["conv1.weight"], stride=2, padding=2), "bn1"))
    x = F.max_pool2d(x, 3, 2)
    levels = []
    for stage, blocks in enumerate(TORCHVISION_BLOCKS, start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            strided = stage == 2 and block == 0
            out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=2 if strided else 1,
                                     padding=0 if strided else 1), f"{p}.bn2"))
            out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            shortcut = x[:, :, 1:-1, 1:-1] if strided else x
            if block == 0:
                shortcut = bn(F.conv2d(shortcut, state[f"{p}.downsample.0.weight"], stride=2 if strided else 1),
                              f"{p}.downsample.1")
            x = F.relu(out + shortcut)
        if stage >= 2:
            levels.append(x)
    return levels


def test_torchvision_resnet50_layout_loads_and_computes_table_1(tmp_path):
    state = _torchvision_resnet50_state()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    backbone = ResNetOS8("resnet50").eval()
    left = load_torchvision_resnet50(backbone, path)
    assert left and all(".offset." in name for name in left)  # only the deformable offsets
    assert not backbone.layer3[0].conv2.offset.weight.any()
    loaded = backbone.state_dict()
    for name, value in state.items():
        if not name.startswith("fc.") and not name.endswith("num_batches_tracked"):
            torch.testing.assert_close(loaded[name], value.float())
    bgr = torch.rand(1, 3, 79, 79, dtype=torch.float64) * 255
    state = {k: (v.double() if v.is_floating_point() else v) for k, v in state.items()}
    with torch.no_grad():
        ours = backbone.double()(bgr).values()
        # torchvision's normalisation, RGB, on 0..255 input (constants rounded to float32 as stored)
        mean = (torch.tensor([0.485, 0.456, 0.406]) * 255).double().reshape(1, 3, 1, 1)
        std = (torch.tensor([0.229, 0.224, 0.225]) * 255).double().reshape(1, 3, 1, 1)
        rgb = (bgr.flip(1) - mean) / std
        reference = _reference_forward(state, rgb)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    # The same file fills a whole RAR network's backbone (a training start) ...
    net = RARNet("resnet50")
    load_rar_weights(net, path)
    torch.testing.assert_close(net.backbone.conv1.weight, state["conv1.weight"].float())
    # ... and a file of another network is refused with a reason.
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vgg.pth")
    with pytest.raises(WeightsError):
        load_torchvision_resnet50(ResNetOS8("resnet50"), tmp_path / "vgg.pth")
    with pytest.raises(WeightsError):
        load_rar_weights(RARNet("light"), path)  # resnet50 weights, light network


# --- hierarchical attention (eq. 1-4) -----------------------------------------------------------
def test_attention_follows_eq_4_and_carries_state():
    torch.manual_seed(0)
    attention = LevelAttention(32, hidden=8).eval()
    phi = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        same, none = attention(phi, None, inter=False, channel=False, spatial=False)
        assert none is None and torch.equal(same, phi)  # RAR_NAA: features untouched
        out, state = attention(phi, None)
        # eq. 4: phi^a = phi * Psi^s * Psi^c + phi with both attentions in (0, 1): phi^a / phi in (1, 2)
        ratio = out / phi
        assert ratio.min() > 1.0 and ratio.max() < 2.0
        channel_only, _ = attention(phi, None, inter=True, channel=True, spatial=False)
        factor = channel_only / phi - 1.0  # Psi^c, constant over each map
        assert torch.allclose(factor, factor[:, :, :1, :1].expand_as(factor), atol=1e-5)
        # eq. 1: the state moves with what the LSTM sees, and the next frame's attention reads it.
        h, c = state
        assert h.shape == (2, 8, 9, 9) and h.abs().max() < 1.0
        again, state2 = attention(phi, state)
        assert not torch.allclose(state2[1], c) and not torch.allclose(again, out)
        # One state read by several patches (the scales of a frame) broadcasts.
        first = (h[:1], c[:1])
        many, _ = attention(phi, first)
        single, _ = attention(phi[:1], first)
        torch.testing.assert_close(many[:1], single)


# --- contextual correlation layer (eq. 5, 7, 9) -----------------------------------------------------
def test_filter_fits_its_template_and_finds_shifts():
    torch.manual_seed(0)
    size = 15
    template = torch.randn(2, 6, size, size, dtype=torch.float64) * hann_window(size, dtype=torch.float64)
    label = gaussian_label(size, 1.2, dtype=torch.float64)
    assert label.argmax() == (size * size) // 2 and label.max() == 1.0
    state = learn_filter(template, label)
    torch.testing.assert_close(respond(state, template, 1e-9), label.expand(2, -1, -1), atol=1e-6, rtol=0)
    moved = torch.roll(template, shifts=(3, -2), dims=(2, 3))
    for response in respond(state, moved):
        d_row, d_col, peak = peak_offset(response)
        assert (round(d_row, 3), round(d_col, 3)) == (3.0, -2.0) and peak == pytest.approx(1.0, abs=1e-3)


def test_context_patches_are_pushed_towards_zero():
    """The lambda2 term of eq. 6: with context, the filter answers less on the context."""
    torch.manual_seed(1)
    size = 15
    template = torch.randn(1, 4, size, size, dtype=torch.float64)
    context = torch.randn(1, 3, 4, size, size, dtype=torch.float64)
    label = gaussian_label(size, 1.2, dtype=torch.float64)
    plain = learn_filter(template, label)
    contextual = learn_filter(template, label, context, lambda2=0.5)
    energy = [float((respond(s, context[0]) ** 2).sum()) for s in (plain, contextual)]
    assert energy[1] < 0.5 * energy[0]
    # lambda2 = 0 or no context is the plain DCF.
    torch.testing.assert_close(learn_filter(template, label, context, lambda2=0.0).denominator, plain.denominator)


def test_gradients_are_eq_9_and_finite_differences():
    torch.manual_seed(2)
    size, channels = 9, 3
    label = gaussian_label(size, 1.0, dtype=torch.float64)
    template = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    context = torch.randn(1, 2, channels, size, size, dtype=torch.float64, requires_grad=True)
    search = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)

    def loss(z, c, x):  # eq. 8 through eq. 7 and eq. 5
        return ((respond(learn_filter(z, label, c, 0.1), x, 1e-2) - label) ** 2).sum()

    grad_search, = torch.autograd.grad(loss(template, context, search), search)
    state = learn_filter(template.detach(), label, context.detach(), 0.1)
    torch.testing.assert_close(grad_search, search_gradient(state, search.detach(), label, 1e-2))
    assert torch.autograd.gradcheck(loss, (template, context, search))


def test_peak_offset_is_sub_cell():
    size = 11
    label = gaussian_label(size, 1.5, center=(5.3, 4.6))
    d_row, d_col, _ = peak_offset(label)
    assert d_row == pytest.approx(0.3, abs=0.08) and d_col == pytest.approx(-0.4, abs=0.08)
    # A peak across the border (circular response) is found as a negative shift.
    wrapped = torch.roll(gaussian_label(size, 1.0), shifts=(6, 0), dims=(0, 1))
    assert peak_offset(wrapped)[0] == pytest.approx(-5.0, abs=1e-6)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_rar_on_an_imagenet_trunk_reads_three_stride_8_levels_with_a_deformable_stage4(backbone):
    """RAR on a pretrained trunk: stride 8, 16 and 32 stages all at output stride 8 (29 cells
    for a 225 px patch), the deformable convolution in the first block of the stride-16
    stage (conv4_1's place), and the installed ImageNet weights under it."""
    from vtrack_core.trackers.rar import feature_size

    net = RARNet(backbone, trunk_weights=None).eval()
    with torch.no_grad():
        features, state = net(torch.rand(2, 3, 225, 225) * 255)
    assert features.shape == (2, 64, 29, 29) and feature_size(backbone, 225) == 29
    assert len(state) == 3 and all(s[0].shape[-1] == 29 for s in state)
    deformable = [n for n, m in net.backbone.named_modules() if isinstance(m, DeformConv2d)]
    assert len(deformable) == 1
    assert deformable[0].startswith(("features.7.", "_blocks.5."))  # stage4's first block
