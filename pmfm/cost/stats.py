"""What a cost needs from a set's simulations, kept once and costed against any target.

A set's simulated statistics do not depend on the target (docs/data.md#targets-from-bold): the mean
FC over the FC term's valid repeats and the mean FCD CDF over the KS term's valid repeats, with the
counts of valid repeats, give its cost against any FC and FCD of the same protocol. Stored compactly
(about 6.6 kB a set at 68 regions): the mean FC as Fisher z in float16 (2,278 values) and the mean
CDF as the bins where it crosses 1,000 evenly spaced levels (uint16). ``cost_from_stats`` then
matches the exact cost of the same simulations within 0.002 per term (0.0005 measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pmfm.cost.repeats import Costs, RepeatStats, combine_repeats, fisher_z, masked_mean
from pmfm.cost.variants import KONG2021, CostVariant

N_LEVELS = 1000  # levels of the FCD CDF kept per set: its error is at most half a level, 0.0005 of KS
FC_Z_DTYPE = torch.float16  # Fisher z of a mean FC: |z| <= 8.4 after the clamp, 3 significant digits


@dataclass(frozen=True)
class SetStats:
    """Per parameter set, what its cost against any target needs; tensors on CPU."""

    fc_z: Tensor  # (S, E) float16 atanh of the mean FC over the FC-valid repeats (0 where none)
    fcd_levels: Tensor  # (S, L) int32 (uint16 on disk): bin where the mean CDF reaches (l + 1/2) / L
    n_valid_fc: Tensor  # (S,) int64 repeats that entered the FC terms
    n_valid_fcd: Tensor  # (S,) int64 repeats that entered the KS term
    fcd_total: int  # window pairs of a valid repeat's FCD (the CDF's final count)
    repeats: int  # R, the repeats each set's statistics average

    def __len__(self) -> int:
        return int(self.fc_z.shape[0])

    def __getitem__(self, index) -> SetStats:
        return SetStats(
            self.fc_z[index], self.fcd_levels[index], self.n_valid_fc[index], self.n_valid_fcd[index],
            self.fcd_total, self.repeats,
        )  # fmt: skip


def set_stats(stats: RepeatStats, repeats: int, fcd_total: int, n_levels: int = N_LEVELS) -> SetStats:
    """Average each group of R consecutive repeats (valid ones only) into a set's statistics."""
    n_rows, n_edges = stats.fc.shape
    if repeats < 1 or n_rows % repeats:
        raise ValueError(f"{n_rows} repeats cannot be split into groups of {repeats}")
    groups = n_rows // repeats
    fc_mean, n_fc = masked_mean(
        stats.fc.reshape(groups, repeats, n_edges), stats.fc_valid.reshape(groups, repeats)
    )
    cdf = stats.cdf.reshape(groups, repeats, -1)
    cdf_mean, n_fcd = masked_mean(cdf, stats.fcd_valid.reshape(groups, repeats))  # (G, K) float64
    fc_z = fisher_z(fc_mean)
    fc_z = torch.where((n_fc > 0)[:, None] & torch.isfinite(fc_z), fc_z, torch.zeros((), dtype=fc_z.dtype))
    return SetStats(
        fc_z=fc_z.to(FC_Z_DTYPE).cpu(),
        fcd_levels=cdf_levels(torch.nan_to_num(cdf_mean, nan=0.0), fcd_total, n_levels).cpu(),
        n_valid_fc=n_fc.cpu(),
        n_valid_fcd=n_fcd.cpu(),
        fcd_total=int(fcd_total),
        repeats=repeats,
    )


def cdf_levels(cdf: Tensor, total: float, n_levels: int = N_LEVELS) -> Tensor:
    """(S, K) CDFs in counts -> (S, L) int32: the first bin whose count reaches (l + 1/2) total / L."""
    levels = (torch.arange(n_levels, dtype=torch.float64, device=cdf.device) + 0.5) * (
        total / n_levels
    )  # (L,)
    index = torch.searchsorted(cdf.double().contiguous(), levels.expand(len(cdf), -1).contiguous())
    return index.clamp_(max=cdf.shape[1] - 1).to(torch.int32)  # (S, L)


def cdf_from_levels(levels: Tensor, total: float, n_bins: int) -> Tensor:
    """(S, L) level bins -> (S, n_bins) float64 CDF in counts: within total / (2 L) of the original."""
    n_sets, n_levels = levels.shape
    flat = (levels.long() + torch.arange(n_sets, device=levels.device)[:, None] * n_bins).flatten()
    steps = torch.bincount(flat, minlength=n_sets * n_bins).view(n_sets, n_bins)  # levels reached at a bin
    return steps.cumsum(1).double() * (total / n_levels)


def cost_from_stats(
    stats: SetStats,
    emp_fc,
    emp_cdf,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
    chunk: int = 2048,
) -> Costs:
    """The cost of each set against one target (its (N, N) FC and (n_bins,) FCD CDF), from its stored
    statistics: the same terms, validity rules and stages as :func:`pmfm.cost.combine_repeats`.

    The stored FC is Fisher z (Kong2021's correlation uses it; the raw-FC variants take its tanh)
    and the CDF is rebuilt from its levels, ``chunk`` sets at a time (a CDF is 80 kB in float64).
    """
    parts = []
    for start in range(0, len(stats), chunk):
        part = stats[start : start + chunk]
        fc = torch.tanh(part.fc_z.double())  # (S, E) mean FC of the valid repeats
        cdf = cdf_from_levels(part.fcd_levels, part.fcd_total, len(np.asarray(emp_cdf).reshape(-1)))
        as_repeats = RepeatStats(fc, cdf, part.n_valid_fc > 0, part.n_valid_fcd > 0)  # one "repeat" a set
        costs = combine_repeats(as_repeats, emp_fc, emp_cdf, 1, variant, stage)
        parts.append(costs)
    cat = {f: torch.cat([getattr(p, f) for p in parts]) for f in ("fc_cost", "fc_l1", "ks", "total")}
    return Costs(
        **cat,
        n_valid_fc=stats.n_valid_fc.cpu().clone(),
        n_valid_fcd=stats.n_valid_fcd.cpu().clone(),
        repeats=stats.repeats,
    )
