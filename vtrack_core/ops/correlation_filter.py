"""A differentiable discriminative correlation filter with context (CACF, Mueller et al. 2017),
the decision layer of RAR (Gao et al., sec. 3.3). Shared by the tracker and its training.

Conventions. Feature maps are real, B x C x S x S with S odd; the filter acts by circular
cross-correlation, g(n) = sum_l sum_m w_l(m) x_l(m + n), i.e. g^ = sum_l conj(w^_l) x^_l in the
Fourier domain (`torch.fft.rfft2`, so only S x (S//2 + 1) frequencies are stored). The desired
response y is a Gaussian centred on the middle cell c = (S - 1) / 2: a target moved by d cells
from the centre of the training patch answers with a peak at c + d.

Closed form (eq. 7). For template patches z_0 (target in the middle) and context patches z_i
(around it) of T frames with weights beta_t, per frequency,

    w^_l = sum_t beta_t z^_{0,t,l} conj(y^) / (sum_t beta_t (sum_l |z^_{0,t,l}|^2
           + lambda2 sum_i sum_l |z^_{i,t,l}|^2) + lambda1).

For one channel this is exactly the CACF solution; for C channels the channel energies are
summed in one shared denominator, the usual multi-channel approximation (DCFNet, CFNet)
that keeps the solve per frequency. The filter is kept as numerator and denominator
(`FilterState`) so that the T-frame sum is a running sum: online, beta_t decays
geometrically (each frame's patches enter with weight `rate`, older ones are multiplied by
1 - rate), which updates the filter every frame without touching the backbone.

Gradients. Everything is torch.fft, so autograd differentiates the layer end to end. The
gradient with respect to the search features is the paper's eq. 9 (first line):
dL/dphi_l(x) = 2 F^-1((g^ - y^) w^_l) for L = ||g - y||^2; `search_gradient` writes it out
and the tests compare it with autograd, and the template / context gradients with finite
differences.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def hann_window(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """S x S cosine window: the DCF's usual taper against the boundary of circular shifts."""
    hann = torch.hann_window(size, periodic=False, device=device, dtype=dtype)
    if size <= 2:
        hann = torch.ones(size, device=device, dtype=dtype)
    return torch.outer(hann, hann)


def gaussian_label(size: int, sigma: float, center: tuple[float, float] | torch.Tensor | None = None,
                   device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """S x S Gaussian with peak 1 at `center` (row, col; default the middle cell), or
    B x S x S for a B x 2 tensor of centres. sigma in cells."""
    cells = torch.arange(size, device=device, dtype=dtype)
    if center is None:
        center = ((size - 1) / 2.0, (size - 1) / 2.0)
    centers = torch.as_tensor(center, device=device, dtype=dtype)
    flat = centers.dim() == 1
    centers = centers.reshape(-1, 2)
    rows = (cells.reshape(1, -1) - centers[:, 0:1]) ** 2  # B x S
    cols = (cells.reshape(1, -1) - centers[:, 1:2]) ** 2
    label = torch.exp(-(rows.unsqueeze(2) + cols.unsqueeze(1)) / (2.0 * sigma * sigma))
    return label[0] if flat else label


@dataclass
class FilterState:
    """Numerator (B x C x S x S//2+1, complex) and denominator (B x 1 x S x S//2+1, real)
    of eq. 7 without lambda1, which `respond` adds."""

    numerator: torch.Tensor
    denominator: torch.Tensor

    def blend(self, new: "FilterState", rate: float) -> "FilterState":
        """Running beta_t-weighted sum: old frames * (1 - rate) + the new frame * rate."""
        return FilterState((1.0 - rate) * self.numerator + rate * new.numerator,
                           (1.0 - rate) * self.denominator + rate * new.denominator)


def learn_filter(template: torch.Tensor, label: torch.Tensor, context: torch.Tensor | None = None,
                 lambda2: float = 0.1) -> FilterState:
    """Eq. 7 for one frame per item. template: B x C x S x S (windowed features of z_0);
    context: B x k x C x S x S (of z_1..z_k) or None (a plain DCF); label: S x S or B x S x S."""
    spectrum = torch.fft.rfft2(template)
    label_spectrum = torch.fft.rfft2(label)
    if label_spectrum.dim() == 3:
        label_spectrum = label_spectrum.unsqueeze(1)
    numerator = spectrum * torch.conj(label_spectrum)
    denominator = (spectrum.real ** 2 + spectrum.imag ** 2).sum(dim=1, keepdim=True)
    if context is not None and context.shape[1] > 0 and lambda2 > 0:
        context_spectrum = torch.fft.rfft2(context)
        energy = (context_spectrum.real ** 2 + context_spectrum.imag ** 2).sum(dim=(1, 2))
        denominator = denominator + lambda2 * energy.unsqueeze(1)
    return FilterState(numerator, denominator)


def respond(state: FilterState, search: torch.Tensor, lambda1: float = 1e-4) -> torch.Tensor:
    """Eq. 5: g = F^-1(sum_l conj(w^_l) x^_l). search: N x C x S x S where N is the filter's
    batch B or a multiple of it (several scales per filter, filters repeated in order), or
    B == 1 (one filter for all). Returns N x S x S."""
    size = search.shape[-1]
    numerator, denominator = state.numerator, state.denominator
    if numerator.shape[0] not in (1, search.shape[0]):
        repeats = search.shape[0] // numerator.shape[0]
        numerator = numerator.repeat_interleave(repeats, dim=0)
        denominator = denominator.repeat_interleave(repeats, dim=0)
    product = (torch.conj(numerator) * torch.fft.rfft2(search)).sum(dim=1) / (denominator[:, 0] + lambda1)
    return torch.fft.irfft2(product, s=(search.shape[-2], size))


def filter_spectrum(state: FilterState, lambda1: float = 1e-4) -> torch.Tensor:
    """w^ itself (B x C x S x S//2+1), for inspection and the gradient check."""
    return state.numerator / (state.denominator + lambda1)


def search_gradient(state: FilterState, search: torch.Tensor, label: torch.Tensor, lambda1: float = 1e-4) -> torch.Tensor:
    """Eq. 9, first line, for L = sum ||g(x) - y||^2: dL/dphi_l(x) = 2 F^-1((g^ - y^) w^_l)."""
    residual = respond(state, search, lambda1) - label
    spectrum = torch.fft.rfft2(residual).unsqueeze(1) * filter_spectrum(state, lambda1)
    return 2.0 * torch.fft.irfft2(spectrum, s=search.shape[-2:])


def peak_offset(response: torch.Tensor) -> tuple[float, float, float]:
    """(row, col) of the maximum of an S x S response relative to the middle cell, refined to
    sub-cell precision by a parabola through the peak and its neighbours (circularly), and the
    peak value."""
    size_r, size_c = response.shape
    flat = int(torch.argmax(response))
    row, col = divmod(flat, size_c)
    window = response[[(row - 1) % size_r, row, (row + 1) % size_r]][:, [(col - 1) % size_c, col, (col + 1) % size_c]]
    values = window.double().cpu().numpy()
    peak = values[1, 1]

    def vertex(left: float, right: float) -> float:
        curvature = left - 2.0 * peak + right
        return 0.0 if curvature >= 0 else float(0.5 * (left - right) / curvature)

    sub_row = row + vertex(values[0, 1], values[2, 1])
    sub_col = col + vertex(values[1, 0], values[1, 2])
    return sub_row - (size_r - 1) / 2.0, sub_col - (size_c - 1) / 2.0, float(peak)
