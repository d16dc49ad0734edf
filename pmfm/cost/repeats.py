"""Per-repeat statistics and the cost of each group of R repeats (docs/cost.md).

After Kong et al. 2021 (Nature Communications 12:6373) and its released code (CBIG,
stable_projects/fMRI_dynamics/Kong2021_pMFM, ``CBIG_FCcorrelation_multi_simulation`` and
``CBIG_FCDKSstat_multi_simulation``). Lower is better.

Two stages, so that repeats can be produced in any order and costed later:

1. ``repeat_stats(bold)``: per simulated repeat, the FC upper triangle and the FCD CDF in counts,
   plus a validity flag for each term (heavy: window FCs and FCD products, in the input's dtype,
   ``chunk_size`` simulations at a time).
2. ``combine_repeats(stats, emp_fc, emp_cdf, repeats)``: average the valid repeats of each group of
   R consecutive rows and cost the group against the empirical FC / FCD CDF (light, float64, CPU
   result).

``evaluate`` chains the two. Every cost depends on R (more repeats, lower KS): ``Costs.repeats``
carries it, and costs should only be compared at equal R.

Deliberate differences from the released code (documented, none changes a valid repeat's cost):

- Validity of a repeat's FC is "every edge finite" (the released code tests edge 0 only).
- The FCD histogram follows ``numpy.histogram`` bin assignment exactly (the released code used
  ``torch.histc``, whose float rounding can move a value lying within ~1 ulp of an edge).
- Before ``atanh``, mean simulated FC and empirical FC are clamped to [-1 + 1e-7, 1 - 1e-7]. This
  is a no-op for every |r| < 1 - 1e-7 (the empirical upper triangle and any non-degenerate
  simulation); it only keeps an edge that is exactly +-1 (or a float32 rounding just past it) from
  turning the correlation into NaN, which the released code then scored as 10.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pmfm.cost.fcd import as_float, fc_matrix, fcd_cdf, upper_triangle
from pmfm.cost.variants import KONG2021, CostVariant
from pmfm.data.checks import fcd_pair_count

MEMORY_BUDGET_GB = 8.0  # GiB of temporaries per repeat_stats call on CUDA (chunks sized to fit)
CPU_CHUNK = 16  # simulations per chunk on the CPU (about 1 GB of temporaries at N = 68, T = 1,200)
MATMUL_PRECISIONS = ("float32", "tf32")
STAGES = ("fit", "test")  # "fit": training and validation (invalid -> 10); "test": invalid -> NaN
ATANH_CLAMP = 1e-7  # |r| is clamped to 1 - ATANH_CLAMP before atanh (see module docstring)


@dataclass(frozen=True)
class RepeatStats:
    """Per simulated repeat, before averaging; tensors on the BOLD's device."""

    fc: Tensor  # (B, E) upper triangle of each repeat's FC, BOLD dtype
    cdf: Tensor  # (B, n_bins) int64 FCD CDF in counts
    fc_valid: Tensor  # (B,) bool: every FC edge finite
    fcd_valid: Tensor  # (B,) bool: cdf[:, -1] == fcd_pair_count(T, window)

    def __len__(self) -> int:
        return self.fc.shape[0]


def cost_bytes_per_sim(n_regions: int, n_tr: int, window: int, itemsize: int = 4) -> int:
    """Upper bound of ``repeat_stats``' temporaries for one simulation, in bytes.

    Window copies (W x N x L), window FCs (W x N x N), three (W x E) window-vector arrays, the FCD
    (W x W), and about 64 bytes per FCD pair for the histogram's indices and masks. About 100 MB at
    N = 68, T = 1,200, L = 83 in float32.
    """
    n_windows = n_tr - window + 1
    n_edges = n_regions * (n_regions - 1) // 2
    n_pairs = n_windows * (n_windows - 1) // 2
    floats = n_windows * n_regions * (window + n_regions) + 3 * n_windows * n_edges + n_windows**2
    return itemsize * floats + 64 * n_pairs


def cost_chunk_size(bold_shape, window: int, device, itemsize: int = 4, memory_budget_gb=MEMORY_BUDGET_GB):
    """Simulations per ``repeat_stats`` chunk: ``CPU_CHUNK`` on the CPU, else what fits the budget."""
    if torch.device(device).type == "cpu":
        return CPU_CHUNK
    _, n_regions, n_tr = bold_shape
    per_sim = cost_bytes_per_sim(n_regions, n_tr, window, itemsize)
    return max(1, int(memory_budget_gb * 2**30) // per_sim)


@contextlib.contextmanager
def matmul_precision(precision: str):
    """Let CUDA float32 products use TF32 tensor cores (``"tf32"``) or not (``"float32"``) inside."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision {precision!r}; expected one of {MATMUL_PRECISIONS}")
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@torch.no_grad()
def repeat_stats(
    bold,
    variant: CostVariant = KONG2021,
    *,
    chunk_size: int | None = None,
    memory_budget_gb: float = MEMORY_BUDGET_GB,
    precision: str = "float32",
) -> RepeatStats:
    """FC, FCD CDF and validity of every simulated repeat, (B, N, T) -> RepeatStats.

    ``bold`` is a tensor (or array) of any floating dtype on any device. All simulations of a chunk
    go through one batched pipeline (window FCs and the FCD as batched matrix products, one
    histogram for all rows); chunks hold ``chunk_size`` simulations, by default 16 on the CPU and
    on CUDA as many as keep the temporaries under ``memory_budget_gb`` (``cost_bytes_per_sim``).
    ``precision="tf32"`` lets CUDA run the FC and FCD products on TF32 tensor cores (window vectors
    of 2,278 edges: errors near 1e-5 in a correlation, bins are 2e-4 wide). NaN or Inf BOLD never
    raises: it gives non-finite FC (``fc_valid`` False) and uncounted FCD values (``fcd_valid`` False).
    """
    bold = as_float(bold)
    if bold.ndim != 3:
        raise ValueError(f"bold must be (B, N, T), got {tuple(bold.shape)}")
    if chunk_size is None:
        chunk_size = cost_chunk_size(
            bold.shape, variant.window, bold.device, bold.element_size(), memory_budget_gb
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n_tr = bold.shape[-1]
    n_pairs = fcd_pair_count(n_tr, variant.window)
    fcs, cdfs = [], []
    with matmul_precision(precision):
        for start in range(0, bold.shape[0], chunk_size):
            chunk = bold[start : start + chunk_size]  # (b, N, T)
            fcs.append(upper_triangle(fc_matrix(chunk)))  # (b, E)
            cdfs.append(fcd_cdf(chunk, variant))  # (b, n_bins)
    n_edges = bold.shape[1] * (bold.shape[1] - 1) // 2
    fc = torch.cat(fcs) if fcs else bold.new_empty(0, n_edges)  # (B, E)
    cdf = torch.cat(cdfs) if cdfs else torch.empty(0, variant.n_bins, dtype=torch.long)  # (B, K)
    cdf = cdf.to(bold.device)
    return RepeatStats(
        fc=fc,
        cdf=cdf,
        fc_valid=torch.isfinite(fc).all(-1),  # (B,)
        fcd_valid=cdf[:, -1] == n_pairs,  # (B,)
    )


@dataclass(frozen=True)
class Costs:
    """One entry per group of R repeats; float64 (G,) tensors on CPU. Lower is better.

    ``repeats`` is R: costs are comparable only at equal R (more repeats, lower KS).
    """

    fc_cost: Tensor  # (G,) 1 - corr(f(mean sim FC), f(emp FC)), f = atanh or identity
    fc_l1: Tensor  # (G,) |mean(mean sim FC) - mean(emp FC)| over the upper triangle
    ks: Tensor  # (G,) max |mean sim CDF - emp CDF| / emp CDF total
    total: Tensor  # (G,) fc_cost + ks (+ fc_l1 when the variant uses it)
    n_valid_fc: Tensor  # (G,) int64 repeats that entered the FC terms
    n_valid_fcd: Tensor  # (G,) int64 repeats that entered the KS term
    repeats: int  # R, the repeats per group, to state beside every cost
    # FIC (docs/fic.md), filled by pmfm.evaluate: None for the pMFM
    mean_rate: Tensor | None = None  # (G, N) float64 mean excitatory rate per region over the R repeats, Hz
    n_valid_rate: Tensor | None = None  # (G,) int64 repeats whose every regional mean rate was in the band

    def n_valid(self) -> Tensor:
        """(G,) int64: repeats valid for both terms at most (the smaller of the two counts)."""
        return torch.minimum(self.n_valid_fc, self.n_valid_fcd)

    def __len__(self) -> int:
        return self.total.shape[0]


def masked_mean(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over axis 1 of the rows flagged valid, (G, R, K), (G, R) -> (G, K) float64, (G,).

    Invalid rows are replaced by 0 (not multiplied, so their NaN cannot leak); a group with no valid
    row gives 0 / 0 = NaN.
    """
    if x.is_floating_point():
        x = x.double()  # integer counts are summed exactly as int64 first
    n = valid.sum(1)  # (G,)
    total = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return total.sum(1).double() / n.unsqueeze(-1), n  # (G, K), (G,)


def _row_corr(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of a with b, (G, E), (E,) -> (G,)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean()
    return (a @ b) / (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b))


def _float64(x) -> Tensor:
    """A float64 tensor copy of an array or tensor (read-only arrays included)."""
    if isinstance(x, Tensor):
        return x.to(torch.float64)
    return torch.from_numpy(np.array(x, dtype=np.float64))


def fisher_z(fc: Tensor) -> Tensor:
    """atanh, clamped to |r| <= 1 - 1e-7 first (a no-op for any non-degenerate FC)."""
    return torch.atanh(fc.clamp(-1 + ATANH_CLAMP, 1 - ATANH_CLAMP))


def combine_repeats(
    stats: RepeatStats,
    emp_fc,
    emp_cdf,
    repeats: int,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
) -> Costs:
    """Average each group's valid repeats and cost it against the empirical FC and FCD CDF.

    Rows of ``stats`` are grouped consecutively: group g is rows g R .. g R + R - 1. ``emp_fc`` is
    the (N, N) empirical FC, ``emp_cdf`` the (n_bins,) empirical FCD CDF in counts. As docs/cost.md states it:

    - FC cost = 1 - corr(f(mean FC over FC-valid repeats), f(emp FC)), upper triangles, f = atanh
      (Kong2021) or identity (DELSSOME).
    - FC L1 = |mean(mean sim FC) - mean(emp FC)| over the upper triangle (FC-valid repeats).
    - KS = max |mean CDF over FCD-valid repeats - emp CDF| / emp_cdf[-1] (624,403 for HCP).
    - stage "fit" (training, validation): a term with no valid repeat, or a correlation that comes
      out NaN, is ``variant.invalid_value`` (10). stage "test": no 10; such a term is NaN, to be
      left out of the final mean.
    - total = FC cost + KS (+ FC L1 when ``variant.use_l1``).

    The averaging and correlations run in float64 on the stats' device; the result is on CPU.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(STAGES)}")
    n_rows, n_edges = stats.fc.shape
    if repeats < 1 or n_rows % repeats:
        raise ValueError(f"{n_rows} repeats cannot be split into groups of {repeats}")
    n_groups = n_rows // repeats
    device = stats.fc.device

    emp_fc = upper_triangle(_float64(emp_fc)).to(device)  # (E,)
    emp_cdf = _float64(emp_cdf).to(device).flatten()  # (K,)
    if emp_fc.shape[0] != n_edges:
        raise ValueError(f"empirical FC has {emp_fc.shape[0]} edges, simulations {n_edges}")
    if emp_cdf.shape[0] != stats.cdf.shape[1]:
        raise ValueError(f"empirical CDF has {emp_cdf.shape[0]} bins, simulations {stats.cdf.shape[1]}")

    # FC terms
    fc = stats.fc.reshape(n_groups, repeats, n_edges)  # (G, R, E)
    fc_mean, n_fc = masked_mean(fc, stats.fc_valid.reshape(n_groups, repeats))  # (G, E), (G,)
    f = fisher_z if variant.fisher_z else (lambda r: r)
    fc_cost = 1.0 - _row_corr(f(fc_mean), f(emp_fc))  # (G,)
    fc_l1 = (fc_mean.mean(-1) - emp_fc.mean()).abs()  # (G,)

    # KS term: CDFs summed exactly in int64, then averaged in float64
    cdf = stats.cdf.reshape(n_groups, repeats, -1)  # (G, R, K)
    cdf_mean, n_fcd = masked_mean(cdf, stats.fcd_valid.reshape(n_groups, repeats))  # (G, K)
    ks = (cdf_mean - emp_cdf).abs().amax(-1) / emp_cdf[-1]  # (G,)

    if stage == "fit":
        bad = torch.tensor(variant.invalid_value, dtype=torch.float64, device=device)
        fc_cost = torch.where((n_fc == 0) | fc_cost.isnan(), bad, fc_cost)
        fc_l1 = torch.where((n_fc == 0) | fc_l1.isnan(), bad, fc_l1)
        ks = torch.where((n_fcd == 0) | ks.isnan(), bad, ks)
    total = fc_cost + ks + (fc_l1 if variant.use_l1 else 0.0)  # (G,)
    return Costs(
        fc_cost=fc_cost.cpu(),
        fc_l1=fc_l1.cpu(),
        ks=ks.cpu(),
        total=total.cpu(),
        n_valid_fc=n_fc.cpu(),
        n_valid_fcd=n_fcd.cpu(),
        repeats=repeats,
    )


def evaluate(
    bold,
    emp_fc,
    emp_cdf,
    repeats: int,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
    chunk_size: int | None = None,
) -> Costs:
    """Cost simulated BOLD (B, N, T), B = G x R rows grouped consecutively (docs/cost.md).

    ``repeat_stats`` followed by ``combine_repeats``; see those for the details.
    """
    stats = repeat_stats(bold, variant, chunk_size=chunk_size)
    return combine_repeats(stats, emp_fc, emp_cdf, repeats, variant, stage)
