"""Fill a dataset's shards with simulated samples, resumably.

A shard is made of chunks; each chunk is simulated, costed and written atomically with the state
needed to continue after it. A rerun skips complete shards, replays the chunks of an incomplete
one and continues: killed at any moment and rerun, the dataset comes out identical to an
uninterrupted run, because every sample's parameters and noise depend only on the seed and the
sample's own place in the dataset (shard, row, CMA-ES start and generation), never on batching.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import scipy
import torch

import pmfm
from pmfm.cost import Costs, CostVariant
from pmfm.data import EmpiricalData
from pmfm.datasets.samplers import FeasibleStream
from pmfm.datasets.store import ShardStore, concat_rows, rows_from
from pmfm.evaluate.costs import evaluate_params
from pmfm.params import ParamSpace
from pmfm.pipelines.cmaes_dataset import fill_cmaes_shard
from pmfm.sim.simulator import Simulator

SAMPLERS = ("uniform", "sobol", "around", "start")
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
                "dtype": simulator.dtype,
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
    return {
        "pmfm": pmfm.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


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

    def run(self, shard_index: int | None = None) -> dict:
        """Fill every shard (or only ``shard_index``); returns the updated manifest."""
        self.store.claim(self.identity, config_hash(self.identity), package_versions())
        # a dataset begun before statistics were kept goes on without them
        self.with_stats = self.store.schema >= 2
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
            costs, stats = self.evaluate(theta, sample_ids=np.arange(first_id, first_id + n))
            rows = rows_from(
                theta,
                costs,
                stats,
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

    def evaluate(self, theta: torch.Tensor, sample_ids: np.ndarray) -> tuple[Costs, dict | None]:
        """Simulate and cost ``theta`` with independent noise keyed by the sample ids (whatever
        ``simulator.noise`` says); with the samples' statistics where the dataset keeps them."""
        evaluation = self.timed(
            lambda: evaluate_params(
                theta,
                self.space,
                self.data,
                self.simulator,
                repeats=self.spec.repeats,
                seed=self.spec.seed,
                variant=self.variant,
                common=False,
                sample_ids=sample_ids,
                keep_set_stats=self.with_stats,
            ),
            result_sims=lambda _: len(theta) * self.spec.repeats,
        )
        stats = evaluation.set_stats
        kept = None if stats is None else {"fc_z": stats.fc_z, "fcd_levels": stats.fcd_levels}
        return evaluation.costs, kept

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
