"""Parameters to costs: simulate each set R times and cost it, in memory-bounded chunks.

The one path every stage scores parameter sets through with the real simulator: the searchers'
simulator objective, dataset generation, validation, test, the studies and the benchmark. One
function, :func:`repeat_noise`, says which noise stream each simulation gets (docs/protocol.md#noise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pmfm.cost import KONG2021, Costs, CostVariant, RepeatStats, combine_repeats, fcd_pair_count, repeat_stats
from pmfm.cost.stats import SetStats, set_stats
from pmfm.physics import fic
from pmfm.sim.noise import Noise
from pmfm.sim.simulate import SimResult, simulate
from pmfm.sim.simulator import Simulator

STATS_FIELDS = ("fc", "cdf", "fc_valid", "fcd_valid")
CPU_SIMS_PER_CHUNK = 480  # BOLD of one simulation is N x 1,200 floats (326 kB at N = 68, float32)
CUDA_SIMS_PER_CHUNK = 15_000  # a GPU wants thousands at once (about 5 GB of BOLD in float32)
CRN_STRIDE = 1_000_003  # prime > any generation count: seed * CRN_STRIDE + generation is one-to-one


def crn_seed(seed: int, generation: int) -> int:
    """Noise seed of generation ``generation`` under ``seed`` (common random numbers).

    ``seed * CRN_STRIDE + generation``: distinct for distinct pairs with ``0 <= generation <
    CRN_STRIDE`` (any integer seed), so every generation of every run gets its own streams.
    """
    if not 0 <= generation < CRN_STRIDE:
        raise ValueError(f"generation must be in [0, {CRN_STRIDE}), got {generation}")
    return int(seed) * CRN_STRIDE + int(generation)


def repeat_noise(
    n_sets: int,
    repeats: int,
    seed: int,
    *,
    common: bool = False,
    sample_ids=None,
    generation: int | None = None,
) -> Noise:
    """The noise of ``n_sets`` sets x ``repeats`` repeats, set-major (row i R + r: set i, repeat r).

    Independent: repeat r of set i has stream ``sample_ids[i] * R + r`` under ``seed`` (default ids
    0..n_sets - 1), so a set's result depends only on its id, never on batching or on which call
    evaluated it. Common random numbers: repeat r of every set shares stream r, under ``seed``
    or, for a search generation, under :func:`crn_seed` ``(seed, generation)``.
    """
    if common:
        noise_seed = seed if generation is None else crn_seed(seed, generation)
        return Noise.common(noise_seed, torch.arange(repeats).repeat(n_sets))
    ids = torch.arange(n_sets) if sample_ids is None else torch.as_tensor(sample_ids, dtype=torch.int64)
    if ids.shape != (n_sets,):
        raise ValueError(f"{len(ids)} sample ids for {n_sets} parameter sets")
    return Noise.independent(seed, (ids[:, None] * repeats + torch.arange(repeats)).flatten())


def sims_per_chunk(simulator: Simulator, n_regions: int = 68, n_bins: int = 10_000) -> int:
    """Simulations per call: the simulator's chunk_size if set, else a per-device default.

    On CUDA at most as many as keep their BOLD and per-repeat statistics within half of
    ``simulator.memory_budget_gb`` (the cost's temporaries get the other half).
    """
    if simulator.chunk_size:
        return int(simulator.chunk_size)
    if simulator.torch_device.type != "cuda":
        return CPU_SIMS_PER_CHUNK
    itemsize = torch.empty((), dtype=simulator.torch_dtype).element_size()
    edges = n_regions * (n_regions - 1) // 2
    per_sim = itemsize * (n_regions * simulator.protocol.n_tr + edges) + 8 * n_bins  # BOLD, FC, CDF
    return max(1, min(CUDA_SIMS_PER_CHUNK, int(simulator.memory_budget_gb * 2**29) // per_sim))


def simulation_stats(result: SimResult, variant: CostVariant, simulator: Simulator) -> RepeatStats:
    """Per-repeat statistics of simulated runs; a run the simulator flags invalid counts for no term.

    The simulator's flag is "every BOLD value finite" for the pMFM (which the FC and FCD checks
    already imply) and adds the firing-rate band for the FIC model (invalid runs drop out of the
    averages, docs/fic.md#validity). The cost uses half of the simulator's memory budget.
    """
    budget = simulator.memory_budget_gb / 2
    stats = repeat_stats(result.bold, variant, memory_budget_gb=budget, precision=simulator.cost_precision)
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
    set_stats: SetStats | None = None  # per set: what its cost against any target needs


def evaluate_params(
    theta,
    space,
    data,
    simulator: Simulator,
    *,
    repeats: int = 3,
    seed: int = 0,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
    common: bool | None = None,
    sample_ids=None,
    generation: int | None = None,
    keep_stats: bool = False,
    keep_bold: bool = False,
    keep_set_stats: bool = False,
    target_index=None,
    progress=None,
) -> Evaluation:
    """Cost (S, P) parameter sets, each simulated ``repeats`` times on ``data``'s SC.

    ``data`` may be a list of targets sharing one SC, with ``target_index`` (S,) naming each set's:
    all sets are simulated together and each costed against its own target.

    The noise is :func:`repeat_noise`'s: ``common`` (default: ``simulator.noise == "common"``)
    chooses common random numbers, keyed by ``generation`` when given; otherwise set i's repeats
    use the streams of ``sample_ids[i]``. ``stage`` "fit" or "test" (docs/cost.md#repeats-and-validity).
    ``keep_set_stats``: also each set's mean FC and FCD CDF (:mod:`pmfm.cost.stats`), to cost it
    later against other targets.
    ``progress(n)`` is called as simulations complete (n may be a fraction, ``repeats`` per set).
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    theta = theta[None] if theta.ndim == 1 else theta
    space.check(theta)
    n_sets = theta.shape[0]
    targets = list(data) if isinstance(data, list | tuple) else [data]
    index = torch.zeros(n_sets, dtype=torch.long) if target_index is None else torch.as_tensor(target_index)
    if any(not np.array_equal(t.sc, targets[0].sc) for t in targets[1:]):
        raise ValueError("targets simulated together must share their SC")
    common = simulator.noise == "common" if common is None else common
    noise = repeat_noise(n_sets, repeats, seed, common=common, sample_ids=sample_ids, generation=generation)
    keys = noise.resolved_keys(n_sets * repeats)  # (S * R,)
    per_chunk = max(1, min(n_sets, sims_per_chunk(simulator, space.n_regions, variant.n_bins) // repeats))
    parts, stats_parts, bolds, set_parts = [], [], [], []
    fcd_total = fcd_pair_count(simulator.protocol.n_tr, variant.window)
    for start in range(0, n_sets, per_chunk):
        chunk = theta[start : start + per_chunk]
        rows = slice(start * repeats, (start + len(chunk)) * repeats)
        chunk_noise = dataclasses.replace(noise, keys=keys[rows])
        result = simulate(
            chunk.repeat_interleave(repeats, dim=0), space, targets[0].sc, simulator, chunk_noise,
            progress=progress,
        )  # fmt: skip
        chunk_stats = simulation_stats(result, variant, simulator)
        costs = against_targets(
            chunk_stats, targets, index[start : start + len(chunk)], repeats, variant, stage
        )
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
        if keep_set_stats:
            set_parts.append(set_stats(chunk_stats, repeats, fcd_total))
    stats = None
    if keep_stats:
        stats = RepeatStats(*(torch.cat([getattr(p, f) for p in stats_parts]) for f in STATS_FIELDS))
    kept = concat_set_stats(set_parts) if keep_set_stats else None
    return Evaluation(concat_costs(parts, repeats), stats, torch.cat(bolds) if keep_bold else None, kept)


def against_targets(
    stats: RepeatStats, targets: list, index: torch.Tensor, repeats: int, variant, stage
) -> Costs:
    """``combine_repeats`` of each set (R consecutive rows of ``stats``) against its target ``index``."""
    if len(targets) == 1:
        return combine_repeats(stats, targets[0].fc, targets[0].fcd_cdf, repeats, variant, stage)
    parts, order = [], []
    for t in index.unique().tolist():
        sets = torch.nonzero(index == t).flatten()  # (s,)
        rows = (sets[:, None] * repeats + torch.arange(repeats)).flatten()
        sub = RepeatStats(*(getattr(stats, f)[rows.to(stats.fc.device)] for f in STATS_FIELDS))
        parts.append(combine_repeats(sub, targets[t].fc, targets[t].fcd_cdf, repeats, variant, stage))
        order.append(sets)
    back = torch.argsort(torch.cat(order))  # the sets' own order
    fields = ("fc_cost", "fc_l1", "ks", "total", "n_valid_fc", "n_valid_fcd")
    return Costs(**{f: torch.cat([getattr(p, f) for p in parts])[back] for f in fields}, repeats=repeats)


def concat_set_stats(parts: list[SetStats]) -> SetStats:
    """The set statistics of consecutive chunks as one."""
    fields = ("fc_z", "fcd_levels", "n_valid_fc", "n_valid_fcd")
    cat = {f: torch.cat([getattr(p, f) for p in parts]) for f in fields}
    return SetStats(**cat, fcd_total=parts[0].fcd_total, repeats=parts[0].repeats)


def concat_costs(parts: list[Costs], repeats: int) -> Costs:
    """The costs of consecutive chunks as one :class:`~pmfm.cost.Costs`."""
    fields = ("fc_cost", "fc_l1", "ks", "total", "n_valid_fc", "n_valid_fcd")
    optional = [f for f in ("mean_rate", "n_valid_rate") if parts and getattr(parts[0], f) is not None]
    return Costs(
        **{f: torch.cat([getattr(p, f) for p in parts]) for f in (*fields, *optional)}, repeats=repeats
    )
