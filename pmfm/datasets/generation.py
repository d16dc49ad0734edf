"""Fill a dataset's shards with simulated samples, resumably.

A shard is made of chunks; each chunk is simulated, costed and written atomically with the state
needed to continue after it. A rerun skips complete shards, replays the chunks of an incomplete
one and continues: killed at any moment and rerun, the dataset comes out identical to an
uninterrupted run, because every sample's parameters and noise depend only on the seed and the
sample's own place in the dataset (shard, row, CMA-ES start and generation), never on batching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pmfm.cost import Costs, CostVariant
from pmfm.data import EmpiricalData
from pmfm.datasets.samplers import FeasibleStream
from pmfm.datasets.store import COLUMNS, RATE_COLUMNS, ShardStore, concat_rows
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamSpace
from pmfm.sim.simulator import Simulator

BUNDLED_DATASETS = Path(__file__).parent / "bundled"  # datasets shipped with the package
SAMPLERS = ("uniform", "sobol", "around")
STRATEGIES = (*SAMPLERS, "cmaes")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: its strategy and sizes (the ``dataset`` config group)."""

    name: str
    strategy: str
    seed: int = 0
    repeats: int = 3  # R per sample
    num_shards: int = 2
    shard_size: int = 64  # samplers: samples per shard
    chunk_size: int = 32  # samplers: samples per resumable chunk
    centers: tuple = ()  # around: raw parameter sets to perturb
    scale: float = 0.02  # around: perturbation sd in normalised units
    cmaes: dict = field(default_factory=dict)  # cmaes: n_starts and CMAESSettings fields

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"dataset.strategy={self.strategy!r}; expected one of {STRATEGIES}")
        if self.num_shards < 1 or self.repeats < 1:
            raise ValueError("dataset.num_shards and dataset.repeats must be >= 1")
        if self.strategy in SAMPLERS and (self.shard_size < 1 or self.chunk_size < 1):
            raise ValueError(f"dataset.shard_size and dataset.chunk_size must be >= 1 for {self.strategy}")
        if self.strategy == "cmaes" and int(self.cmaes.get("n_starts", 0)) < 1:
            raise ValueError("dataset.cmaes.n_starts must be >= 1")

    def identity(self, simulator: Simulator, data: EmpiricalData, variant: CostVariant, dim: int) -> dict:
        """Everything that determines the samples, recorded in the manifest and hashed."""
        p = simulator.protocol
        return {
            "dataset": {
                "name": self.name,
                "strategy": self.strategy,
                "seed": self.seed,
                "repeats": self.repeats,
                "num_shards": self.num_shards,
                "shard_size": self.shard_size,
                "chunk_size": self.chunk_size,
                "centers": [list(map(float, c)) for c in self.centers],
                "scale": self.scale,
                "cmaes": dict(self.cmaes),
            },
            "simulator": {
                "method": simulator.resolved_method,
                "dtype": str(simulator.dtype).removeprefix("torch."),
                "coupling": simulator.coupling,
                "noise": "common per generation" if self.strategy == "cmaes" else "independent per sample",
                "dt": p.dt,
                "warmup_steps": p.warmup_steps,
                "duration_s": p.duration_s,
                "tr_s": p.tr_s,
                "burn_in_samples": p.burn_in_samples,
                **({"precision": simulator.precision} if simulator.resolved_method == "fused" else {}),
            },
            "data": {"name": data.name, "split": data.split, "n_regions": data.n_regions},
            "cost": {"variant": variant.name},
            "dim": dim,
        } | fic_identity(simulator)


def fic_identity(simulator: Simulator) -> dict:
    """What the FIC model adds to a dataset's identity (nothing for the pMFM: its hashes stay)."""
    if simulator.circuit != "fic":
        return {}
    return {
        "circuit": {
            "name": "fic",
            "bounds": simulator.bounds,
            "sc_transform": simulator.sc_transform,
            "target_rate": simulator.target_rate,
            "rate_band": list(simulator.rate_band),
        }
    }


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def package_versions() -> dict:
    import scipy

    import pmfm

    return {
        "pmfm": pmfm.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def rows_from(theta: torch.Tensor, costs: Costs, **ids) -> dict[str, np.ndarray]:
    """Dataset rows of evaluated parameter sets; ``ids`` give sample_id, shard, start, generation."""
    n = len(theta)
    rows = {
        "theta": theta.numpy(),
        "repeats": np.full(n, costs.repeats),
        "n_valid_fc": costs.n_valid_fc.numpy(),
        "n_valid_fcd": costs.n_valid_fcd.numpy(),
        "fc_cost": costs.fc_cost.numpy(),
        "fc_l1": costs.fc_l1.numpy(),
        "ks": costs.ks.numpy(),
        "total": costs.total.numpy(),
    }
    for key, value in ids.items():
        rows[key] = np.broadcast_to(np.asarray(value), (n,)).copy()
    out = {k: rows[k].astype(t) for k, t in COLUMNS.items()}
    if costs.mean_rate is not None and costs.n_valid_rate is not None:  # FIC: rates and their validity
        out["mean_rate"] = costs.mean_rate.numpy().astype(RATE_COLUMNS["mean_rate"])
        out["n_valid_rate"] = costs.n_valid_rate.numpy().astype(RATE_COLUMNS["n_valid_rate"])
    return out


@dataclass
class Progress:
    """Counts and rates of a generation run, for the progress bar and the summary."""

    simulations: int = 0
    seconds: float = 0.0
    acceptance: list = field(default_factory=list)
    skipped_shards: list = field(default_factory=list)
    written_shards: list = field(default_factory=list)


class Generator:
    """Fills the shards of one dataset folder with one strategy."""

    def __init__(
        self,
        spec: DatasetSpec,
        space: ParamSpace,
        data: EmpiricalData,
        simulator: Simulator,
        variant: CostVariant,
        store: ShardStore,
        bar=None,
    ):
        self.spec, self.space, self.data, self.simulator, self.variant = spec, space, data, simulator, variant
        self.store, self.bar, self.progress = store, bar, Progress()
        self.identity = spec.identity(simulator, data, variant, space.dim)
        # sampler rows always use independent noise keyed by sample id, whatever simulator.noise says
        self.simulator = dataclasses.replace(simulator, noise="independent")

    def run(self, shard_index: int | None = None) -> dict:
        """Fill every shard (or only ``shard_index``); returns the updated manifest."""
        self.store.claim(self.identity, config_hash(self.identity), package_versions())
        shards = range(self.spec.num_shards) if shard_index is None else [shard_index]
        for shard in shards:
            if not 0 <= shard < self.spec.num_shards:
                raise ValueError(f"dataset.shard_index={shard}; expected 0..{self.spec.num_shards - 1}")
            if self.store.complete_info(shard) is not None:
                self.progress.skipped_shards.append(shard)
                continue
            rows = self._fill(shard)
            meta = {"device": str(self.simulator.device), "strategy": self.spec.strategy}
            self.store.write_shard(shard, rows, meta)
            self.progress.written_shards.append(shard)
            self.store.update_manifest(self.spec.num_shards)
        return self.store.update_manifest(self.spec.num_shards)

    # -- samplers ---------------------------------------------------------------------------------
    def _fill(self, shard: int) -> dict[str, np.ndarray]:
        if self.spec.strategy == "cmaes":
            from pmfm.datasets.cmaes_runs import fill_cmaes_shard

            return fill_cmaes_shard(self, shard)
        spec = self.spec
        parts, _ = self.store.read_chunks(shard)
        done = sum(len(p["sample_id"]) for p in parts)
        self._advance(done * spec.repeats)
        stream = FeasibleStream(self.space, spec.strategy, spec.seed, shard, spec.centers or None, spec.scale)
        stream.take(done)  # replay what the chunks already hold
        while done < spec.shard_size:
            n = min(spec.chunk_size, spec.shard_size - done)
            theta = stream.take(n)
            first_id = shard * spec.shard_size + done
            costs = self.evaluate(theta, first_key=first_id * spec.repeats)
            rows = rows_from(
                theta,
                costs,
                sample_id=np.arange(first_id, first_id + n),
                shard=shard,
                start=-1,
                generation=-1,
            )
            self.store.write_chunk(shard, len(parts), rows)
            parts.append(rows)
            done += n
        self.progress.acceptance.append(stream.acceptance)
        return concat_rows(parts, self.space.dim)

    def evaluate(self, theta: torch.Tensor, first_key: int) -> Costs:
        """Simulate and cost ``theta`` with independent noise keyed from ``first_key``."""
        result = self.timed(
            lambda: evaluate_params(
                theta,
                self.space,
                self.data,
                self.simulator,
                repeats=self.spec.repeats,
                seed=self.spec.seed,
                variant=self.variant,
                first_key=first_key,
            ),
            result_sims=lambda _: len(theta) * self.spec.repeats,
        )
        return result.costs

    def timed(self, fn, result_sims):
        """Call ``fn()``, adding its time and ``result_sims(result)`` simulations to the progress."""
        start = time.perf_counter()
        result = fn()
        self.progress.seconds += time.perf_counter() - start
        self._advance(result_sims(result), count=True)
        return result

    def _advance(self, simulations: int, count: bool = False) -> None:
        if count:
            self.progress.simulations += simulations
        if self.bar is not None:
            self.bar.update(simulations)
            if self.progress.seconds > 0:
                self.bar.set_postfix(sims_per_s=f"{self.progress.simulations / self.progress.seconds:.2f}")
