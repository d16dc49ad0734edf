"""The ``cmaes`` strategy: simulator-in-the-loop CMA-ES runs, every evaluated candidate a sample.

As the seed project and DELSSOME did: random samples almost never reach the good region, CMA-ES
trajectories do. Start s (of ``n_starts``) belongs to shard ``s % num_shards``; a shard's starts run
together, their populations simulated as one batch. Each generation is a chunk: its rows and the
searcher's state are written atomically, so a killed run resumes after its last generation.
"""

from __future__ import annotations

import numpy as np

from pmfm.cost import Costs
from pmfm.datasets.store import concat_rows, rows_from
from pmfm.evaluate.objective import SimulatorObjective
from pmfm.search.cmaes import CMAESSettings, MultiStartCMAES
from pmfm.search.runner import start_points

SETTING_KEYS = (
    "popsize",
    "mu",
    "sigma0",
    "sigma_cap",
    "max_generations",
    "stop_cost",
    "stop_psigma",
    "stop_count",
    "stop_sigma",
)


TERMS = ("fc_cost", "fc_l1", "ks", "n_valid_fc", "n_valid_fcd")


def fill_cmaes_shard(gen, shard: int) -> dict[str, np.ndarray]:
    """Run (or resume) the CMA-ES starts of ``shard``; returns all their candidates as rows."""
    spec = gen.spec
    options = dict(spec.cmaes)
    n_starts = int(options.pop("n_starts"))
    settings = CMAESSettings(**{k: options[k] for k in SETTING_KEYS if k in options})
    starts = list(range(shard, n_starts, spec.num_shards))
    if not starts:
        return concat_rows([], gen.space.dim)
    objective = SimulatorObjective(
        gen.space,
        gen.data,
        gen.simulator,
        repeats=spec.repeats,
        seed=spec.seed,
        variant=gen.variant,
        common_noise=True,
        keep_stats=gen.with_stats,
    )
    searcher = MultiStartCMAES(
        objective, start_points(gen.space, spec.seed, starts), settings, seed=spec.seed, start_ids=starts
    )
    parts, state = gen.store.read_chunks(shard)
    if state is None:  # a kill between the first chunk and its state: that chunk is redone
        parts = []
    else:
        searcher.load_state_dict(state)
        gen._advance(sum(len(p["sample_id"]) for p in parts) * spec.repeats)
    while not searcher.done:
        result = gen.timed(searcher.step, result_sims=lambda r: r.batch_size * spec.repeats)
        chunk = []
        for run in result.starts:
            if len(run.candidates) == 0:
                continue
            s, g = starts[run.start], run.generation - 1  # global start, 0-based generation
            first = (g * n_starts + s) * settings.popsize
            rates = {k: run.terms[k] for k in ("mean_rate", "n_valid_rate") if k in run.terms}  # FIC
            costs = Costs(total=run.total, repeats=spec.repeats, **{k: run.terms[k] for k in TERMS}, **rates)
            ids = np.arange(first, first + len(run.candidates))
            stats = {k: run.terms[k] for k in ("fc_z", "fcd_levels")} if gen.with_stats else None
            chunk.append(
                rows_from(run.candidates, costs, stats, sample_id=ids, shard=shard, start=s, generation=g)
            )
        rows = concat_rows(chunk, gen.space.dim)
        gen.store.write_chunk(shard, len(parts), rows, state=searcher.state_dict())
        parts.append(rows)
    return concat_rows(parts, gen.space.dim)
