"""Deformable convolution (Dai et al. 2017), the op RAR puts in conv4_1's 3x3 convolution (the
backbones build it into the stage a tracker names).

`torchvision.ops.deform_conv2d` is used where torchvision's compiled ops load. Where they do
not (the CPU machines here have only torchvision's CUDA build, whose library needs CUDA's),
`deform_conv2d` below computes the same thing in plain PyTorch: all kernel taps of all
output cells are sampled in one `grid_sample` call (bilinear, zero outside the image, as
torchvision), then one matrix product applies the weights. Autograd gives the backward pass.

Offsets follow torchvision's layout: channel 2k is the row (y) offset and 2k+1 the column (x)
offset of kernel tap k (taps in row-major order), one (dy, dx) map per output cell.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _torchvision_deform_conv2d():
    """torchvision's op if its compiled library loads here, else None."""
    try:
        from torchvision.ops import deform_conv2d as op  # noqa: PLC0415

        return op
    except Exception:  # ImportError, or a RuntimeError from a CUDA build on a CPU-only torch
        return None


def deform_conv2d_reference(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> torch.Tensor:
    """Deformable convolution in plain PyTorch (one offset group, no modulation mask; weight
    groups as nn.Conv2d's, so a depthwise convolution can be deformable too).

    input N x C x H x W, offset N x 2*kh*kw x Ho x Wo, weight Cout x C x kh x kw.
    """
    batch, channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    if channels % group_channels:
        raise ValueError(f"weight expects groups of {group_channels} input channels, input has {channels}")
    groups = channels // group_channels
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    taps = kh * kw
    if offset.shape != (batch, 2 * taps, out_h, out_w):
        raise ValueError(f"offset must be {(batch, 2 * taps, out_h, out_w)}, got {tuple(offset.shape)}")
    dtype, device = input.dtype, input.device
    # Regular sampling positions of every tap at every output cell, then the learned offsets.
    rows = torch.arange(out_h, device=device, dtype=dtype) * stride - padding
    cols = torch.arange(out_w, device=device, dtype=dtype) * stride - padding
    tap_rows = (torch.arange(kh, device=device, dtype=dtype) * dilation).repeat_interleave(kw)
    tap_cols = (torch.arange(kw, device=device, dtype=dtype) * dilation).repeat(kh)
    offset = offset.reshape(batch, taps, 2, out_h, out_w)
    ys = tap_rows.reshape(1, taps, 1, 1) + rows.reshape(1, 1, out_h, 1) + offset[:, :, 0]
    xs = tap_cols.reshape(1, taps, 1, 1) + cols.reshape(1, 1, 1, out_w) + offset[:, :, 1]
    # align_corners=True: -1 and +1 are the centres of the first and last pixel; zero padding
    # gives torchvision's rule (neighbours outside the image count as 0).
    grid = torch.stack([2.0 * xs / max(width - 1, 1) - 1.0, 2.0 * ys / max(height - 1, 1) - 1.0], dim=-1)
    sampled = F.grid_sample(input, grid.reshape(batch, taps * out_h, out_w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)  # N x C x taps*Ho x Wo
    # (group, c in group, tap) order = the weight's; one matrix product per group.
    columns = sampled.reshape(batch, groups, group_channels * taps, out_h * out_w)
    kernels = weight.reshape(groups, out_channels // groups, group_channels * taps)
    out = torch.matmul(kernels.unsqueeze(0), columns).reshape(batch, out_channels, out_h * out_w)
    if bias is not None:
        out = out + bias.reshape(1, out_channels, 1)
    return out.reshape(batch, out_channels, out_h, out_w)


_TORCHVISION_OP = _torchvision_deform_conv2d()


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0,
                  dilation: int = 1) -> torch.Tensor:
    """torchvision's deformable convolution where it runs, the plain-PyTorch one elsewhere."""
    if _TORCHVISION_OP is not None:
        return _TORCHVISION_OP(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
    return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation)


class DeformConv2d(nn.Module):
    """A 3x3 (or kxk) convolution whose taps move by offsets a plain convolution predicts
    from the same input. Offsets start at zero, so a fresh module (or one loaded from an
    ordinary convolution's weights) computes exactly that ordinary convolution.

    `weight` / `bias` are named as nn.Conv2d's, so state dicts of ordinary networks load.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False, groups: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, stride, padding, dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, self.offset(x), self.weight, self.bias, self.stride, self.padding, self.dilation)
