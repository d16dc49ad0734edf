"""Parameters to costs: simulate each set R times and cost it, in memory-bounded chunks.

The one path every stage uses to score parameter sets with the real simulator (the simulator
objective of the searchers, dataset generation, validation and test).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pmfm.cost import KONG2021, Costs, CostVariant, RepeatStats, combine_repeats, repeat_stats
from pmfm.data import EmpiricalData
from pmfm.params import ParamSpace
from pmfm.sim import fic
from pmfm.sim.simulate import SimResult
from pmfm.sim.simulator import Simulator

STATS_FIELDS = ("fc", "cdf", "fc_valid", "fcd_valid")
CPU_SIMS_PER_CHUNK = 480  # BOLD of one simulation is N x 1,200 floats (326 kB at N = 68, float32)
CUDA_SIMS_PER_CHUNK = 15_000  # a GPU wants thousands at once (about 5 GB of BOLD in float32)


def sims_per_chunk(simulator: Simulator, n_regions: int = 68, n_bins: int = 10_000) -> int:
    """Simulations per call: the simulator's chunk_size if set, else a per-device default.

    On CUDA at most as many as keep their BOLD and per-repeat statistics within half of
    ``simulator.memory_budget_gb`` (the cost's temporaries get the other half).
    """
    if simulator.chunk_size:
        return int(simulator.chunk_size)
    if simulator.device.type != "cuda":
        return CPU_SIMS_PER_CHUNK
    itemsize = torch.empty((), dtype=simulator.dtype).element_size()
    edges = n_regions * (n_regions - 1) // 2
    per_sim = itemsize * (n_regions * simulator.protocol.n_tr + edges) + 8 * n_bins  # BOLD, FC, CDF
    return max(1, min(CUDA_SIMS_PER_CHUNK, int(simulator.memory_budget_gb * 2**29) // per_sim))


def bold_stats(bold: torch.Tensor, variant: CostVariant, simulator: Simulator) -> RepeatStats:
    """``repeat_stats`` within the other half of the simulator's memory budget and its precision."""
    budget = simulator.memory_budget_gb / 2
    return repeat_stats(bold, variant, memory_budget_gb=budget, precision=simulator.cost_precision)


def simulation_stats(result: SimResult, variant: CostVariant, simulator: Simulator) -> RepeatStats:
    """Per-repeat statistics of simulated runs; a run the simulator flags invalid counts for no term.

    The simulator's flag is "every BOLD value finite" for the pMFM (which the FC and FCD checks
    already imply: a no-op there) and adds the firing-rate band for the FIC model (SPEC section 9:
    invalid runs drop out of the averages).
    """
    stats = bold_stats(result.bold, variant, simulator)
    valid = result.valid.to(stats.fc_valid.device)  # (B,)
    return dataclasses.replace(stats, fc_valid=stats.fc_valid & valid, fcd_valid=stats.fcd_valid & valid)


def rate_summary(result: SimResult, repeats: int, simulator: Simulator) -> dict[str, torch.Tensor]:
    """FIC: per group of R repeats, ``mean_rate`` (G, N) (mean over the repeats, NaN runs ignored)
    and ``n_valid_rate`` (G,) (repeats in the rate band); empty for the pMFM."""
    if result.rate is None:
        return {}
    rate = result.rate.detach().double().cpu()  # (B, N)
    grouped = rate.reshape(-1, repeats, rate.shape[-1])  # (G, R, N)
    ok = fic.rate_valid(rate, simulator.rate_band).reshape(-1, repeats)  # (G, R)
    return {"mean_rate": grouped.nanmean(1), "n_valid_rate": ok.sum(1).to(torch.int64)}


@dataclass(frozen=True)
class Evaluation:
    """Costs of S parameter sets and, when asked for, what they were computed from."""

    costs: Costs  # S groups of R repeats
    stats: RepeatStats | None = None  # per repeat (S*R rows, set-major), on CPU
    bold: torch.Tensor | None = None  # (S, R, N, T) on CPU


def evaluate_params(
    theta,
    space: ParamSpace,
    data: EmpiricalData,
    simulator: Simulator,
    *,
    repeats: int = 3,
    seed: int = 0,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
    first_key: int = 0,
    keep_stats: bool = False,
    keep_bold: bool = False,
    progress=None,
) -> Evaluation:
    """Cost (S, P) parameter sets, each simulated ``repeats`` times on ``data``'s SC.

    Set i's repeats use noise keys ``first_key + i*R .. first_key + i*R + R - 1`` (or the common
    streams 0..R-1), so a set's result never depends on how the sets were chunked.

    ``progress(n_sets_done)`` is called after each chunk.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    theta = theta[None] if theta.ndim == 1 else theta
    space.check(theta)
    n_sets = theta.shape[0]
    per_sim_chunk = sims_per_chunk(simulator, space.n_regions, variant.n_bins)
    per_chunk = max(1, min(n_sets, per_sim_chunk // repeats))
    parts, stats_parts, bolds = [], [], []
    for start in range(0, n_sets, per_chunk):
        chunk = theta[start : start + per_chunk]
        noise = simulator.noise_for(len(chunk), repeats, seed, first_key + start * repeats)
        result = simulator.run(chunk.repeat_interleave(repeats, dim=0), space, data.sc, noise)
        chunk_stats = simulation_stats(result, variant, simulator)
        costs = combine_repeats(chunk_stats, data.fc, data.fcd_cdf, repeats, variant, stage)
        rates = rate_summary(result, repeats, simulator)
        parts.append(
            dataclasses.replace(
                costs, mean_rate=rates.get("mean_rate"), n_valid_rate=rates.get("n_valid_rate")
            )
        )
        if keep_stats:
            stats_parts.append(RepeatStats(*(getattr(chunk_stats, f).cpu() for f in STATS_FIELDS)))
        if keep_bold:
            bolds.append(result.bold.cpu().reshape(len(chunk), repeats, *result.bold.shape[1:]))
        if progress is not None:
            progress(len(chunk))
    costs = Costs(
        **{f: torch.cat([getattr(p, f) for p in parts]) for f in ("fc_cost", "fc_l1", "ks", "total")},
        n_valid_fc=torch.cat([p.n_valid_fc for p in parts]),
        n_valid_fcd=torch.cat([p.n_valid_fcd for p in parts]),
        repeats=repeats,
        **{
            f: torch.cat([getattr(p, f) for p in parts])
            for f in ("mean_rate", "n_valid_rate")
            if parts and getattr(parts[0], f) is not None
        },
    )
    stats = None
    if keep_stats:
        stats = RepeatStats(*(torch.cat([getattr(p, f) for p in stats_parts]) for f in STATS_FIELDS))
    return Evaluation(costs, stats, torch.cat(bolds) if keep_bold else None)
