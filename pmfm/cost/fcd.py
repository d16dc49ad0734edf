"""Static FC and the sliding-window FCD CDF of simulated or empirical BOLD, batched on any device
(docs/cost.md#fc, docs/cost.md#fcd)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from pmfm.cost.variants import KONG2021, CostVariant


@functools.lru_cache(maxsize=32)
def _triu_flat_index(n: int, device: torch.device) -> Tensor:
    """Flat indices of the strict upper triangle of an n x n matrix, np.triu_indices(n, 1) order."""
    rows, cols = np.triu_indices(n, 1)
    return torch.as_tensor(rows * n + cols, dtype=torch.long, device=device)  # (n (n - 1) / 2,)


def upper_triangle(mat) -> Tensor:
    """Strict upper triangle of the last two axes: (..., N, N) -> (..., E), E = N (N - 1) / 2.

    Same order as ``np.triu_indices(N, 1)`` (row by row). Accepts a tensor or an array.
    """
    mat = torch.as_tensor(mat)
    n = mat.shape[-1]
    if mat.shape[-2] != n:
        raise ValueError(f"expected (..., N, N), got {tuple(mat.shape)}")
    index = _triu_flat_index(n, mat.device)  # (E,)
    return mat.flatten(-2)[..., index]  # (..., E) (faster than index_select on CPU)


def as_float(x) -> Tensor:
    """A floating tensor: floats keep their dtype, anything else gets the default dtype."""
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _unit_rows(x: Tensor) -> Tensor:
    """Centre and scale the last axis to unit norm, so that dot products are Pearson r.

    A constant row gives 0 / 0 = NaN, which propagates into invalid flags (never an exception).
    """
    x = x - x.mean(-1, keepdim=True)
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def fc_matrix(bold) -> Tensor:
    """Static FC: Pearson correlation between regions over time, (..., N, T) -> (..., N, N)."""
    x = _unit_rows(as_float(bold))  # (..., N, T)
    return x @ x.transpose(-1, -2)  # (..., N, N)


def window_fc(bold, window: int) -> Tensor:
    """Each sliding window's FC upper triangle, (B, N, T) -> (B, W, E), W = T - window + 1.

    Windows of ``window`` TRs with step 1 (docs/cost.md#fcd: 83 TRs, 1,118 windows at T = 1,200). No loop over
    windows: one ``unfold`` view and one batched matrix product (W small N x N products per row).
    """
    bold = as_float(bold)
    n_tr = bold.shape[-1]
    if window < 2 or window > n_tr:
        raise ValueError(f"need 2 <= window <= T, got window={window}, T={n_tr}")
    x = bold.unfold(-1, window, 1).transpose(-3, -2)  # (B, W, N, L) overlapping view, L = window
    x = x.clone(memory_format=torch.contiguous_format)  # (B, W, N, L) one copy, then in place
    x -= x.mean(-1, keepdim=True)  # (much faster than reducing over the strided view)
    x /= torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # unit rows: dot products are r
    fc = x @ x.transpose(-1, -2)  # (B, W, N, N)
    return upper_triangle(fc)  # (B, W, E)


def fcd_matrix(bold, window: int) -> Tensor:
    """FCD: Pearson correlation between the window FC vectors, (B, N, T) -> (B, W, W)."""
    v = _unit_rows(window_fc(bold, window))  # (B, W, E), each window vector unit-normed
    return v @ v.transpose(-1, -2)  # (B, W, W)


def cumulative_histogram(values: Tensor, hist_min: float, hist_max: float, n_bins: int) -> Tensor:
    """Per-row cumulative histogram in counts, (B, P) -> (B, n_bins) int64, as numpy.histogram.

    ``n_bins`` equal bins on [hist_min, hist_max]; each bin is [e_i, e_i+1) except the last, which
    includes hist_max; values outside the range and NaN are not counted. Bin assignment reproduces
    ``np.histogram(row, n_bins, (hist_min, hist_max))`` on the row's dtype exactly: edges are
    ``np.linspace`` in float64 cast to that dtype, the index is estimated by scaling and then
    corrected against the edges by one bin either way, as numpy does. All rows share one
    ``bincount`` (row b's bins offset by b * n_bins), with no loop over rows.
    """
    if values.ndim < 2:
        raise ValueError(f"values must be (B, P), got {tuple(values.shape)}")
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()  # too coarse to place 10,000 bins by scaling
    n_rows = values.shape[0]
    values = values.reshape(n_rows, -1)  # (B, P)
    edges = torch.as_tensor(
        np.linspace(hist_min, hist_max, n_bins + 1), dtype=values.dtype, device=values.device
    )  # (n_bins + 1,)
    keep = (values >= edges[0]) & (values <= edges[-1])  # (B, P); NaN -> False
    x = torch.where(keep, values, edges[0])  # (B, P) out-of-range values parked on bin 0
    index = ((x - hist_min) / (hist_max - hist_min) * n_bins).long()  # (B, P) estimate
    index = index.clamp_(0, n_bins - 1)  # the right edge itself belongs to the last bin
    index -= (x < edges[index]).long()  # numpy's one-bin corrections against exact edges
    index += ((x >= edges[index + 1]) & (index != n_bins - 1)).long()
    offsets = torch.arange(n_rows, device=values.device).unsqueeze(1) * n_bins  # (B, 1)
    trash = n_rows * n_bins  # one extra bin that collects what is not counted
    flat = torch.where(keep, index + offsets, trash)  # (B, P)
    counts = torch.bincount(flat.flatten(), minlength=trash + 1)[:trash]  # (B * n_bins,)
    return counts.view(n_rows, n_bins).cumsum(-1)  # (B, n_bins) int64


def fcd_cdf(bold, variant: CostVariant = KONG2021) -> Tensor:
    """FCD CDF in counts, (B, N, T) -> (B, n_bins) int64 (docs/cost.md).

    The histogram of the FCD strict upper triangle (W (W - 1) / 2 values) with ``variant.n_bins``
    equal bins on [``hist_min``, ``hist_max``], cumulated. Values outside the range or NaN are not
    counted, so a valid repeat ends at ``fcd_pair_count(T, window)``. Correlations are clamped to
    [-1, 1] first: nearly identical overlapping windows can round to 1 + 1 ulp, which would
    otherwise drop a pair and flag a healthy repeat invalid (NaN stays NaN).
    """
    fcd = fcd_matrix(bold, variant.window)  # (B, W, W)
    pairs = upper_triangle(fcd).clamp(-1.0, 1.0)  # (B, W (W - 1) / 2)
    return cumulative_histogram(pairs, variant.hist_min, variant.hist_max, variant.n_bins)
