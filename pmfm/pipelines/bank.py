"""Make (or add to) a bank of simulated statistics: ``python -m pmfm.generate dataset=bank``.

A bank run has parts (pmfm.datasets.bank): space-filling Sobol samples of the feasible set on the
run's data; samples drawn as a fit's random starts are (denser in the middle of the set, where
reliable subjects lie); Kong2021's CMA-ES against each of a spread of targets (by default synthetic
subjects made here with their own seed, so that they are never the targets a fit is judged on), so
that the regions where good fits live are covered. Every sample keeps its statistics (pmfm.cost.stats).
``dataset.shard_index`` picks one shard of the whole plan (Hydra multirun: ``-m
dataset.shard_index=0,1,...`` with the joblib or SLURM launcher); a rerun skips what is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pmfm.cost import fcd_pair_count
from pmfm.cost.stats import cost_from_stats
from pmfm.data import EmpiricalData
from pmfm.data.targets import TARGET_FILE, find_targets
from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.datasets.store import ShardStore, atomic_write_bytes, load_dataset
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.folders import dataset_folder
from pmfm.pipelines.generation import DatasetSpec, Generator, config_hash
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.targets import synthetic_subjects

log = logging.getLogger(__name__)
CMAES_KEYS = ("popsize", "mu", "sigma0", "sigma_cap", "max_generations")
STARTS_SEED = 100_000  # added to dataset.seed: the starts' own draws and noise, never a CMA-ES part's seed


@dataclass(frozen=True)
class Part:
    """One part of a bank run: what it samples, on which data, into which folder."""

    spec: DatasetSpec
    data: EmpiricalData  # what it simulates on (its SC) and costs against (its own target)
    folder: Path


def bank_parts(cfg: DictConfig, bank: Bank, simulator, variant, space) -> list[Part]:
    """The parts of the configured bank run: Sobol samples, random starts, then CMA-ES runs against
    each target."""
    d = cfg.dataset
    data = load_data(cfg.data, simulator, variant)
    bank.claim(fingerprint(data, simulator, variant))
    parts = []
    if d.sobol.num_shards > 0:
        spec = DatasetSpec(name="sobol", strategy="sobol", seed=d.seed, repeats=d.repeats, **dict(d.sobol))
        parts.append(_part(bank, spec, data, simulator, variant, space))
    if d.starts.num_shards > 0:
        spec = DatasetSpec(
            name="starts", strategy="start", seed=d.seed + STARTS_SEED, repeats=d.repeats, **dict(d.starts)
        )
        parts.append(_part(bank, spec, data, simulator, variant, space))
    for k, target in enumerate(bank_targets(cfg, bank.folder, data, simulator, variant)):
        target_data = target.load("train", window=variant.window, n_bins=variant.n_bins)
        bank.check(fingerprint(target_data, simulator, variant), f"target {target.folder}")
        cmaes = {"n_starts": d.cmaes.n_starts, **{key: d.cmaes[key] for key in CMAES_KEYS}}
        spec = DatasetSpec(
            name=f"cmaes_{target.name}", strategy="cmaes", seed=d.seed + 1 + k, repeats=d.repeats,
            num_shards=1, cmaes=cmaes,
        )  # fmt: skip
        parts.append(_part(bank, spec, target_data, simulator, variant, space))
    return parts


def _part(bank: Bank, spec: DatasetSpec, data, simulator, variant, space) -> Part:
    tag = config_hash(spec.identity(simulator, data, variant, space.dim))[:8]
    return Part(spec, data, bank.folder / f"{spec.name}_{tag}")


def bank_targets(cfg: DictConfig, folder: Path, data, simulator, variant) -> list:
    """The targets of the bank's CMA-ES runs: ``dataset.cmaes.targets``, or synthetic subjects made
    on ``data``'s SC into ``<bank>/targets/seed<synthetic_seed>`` (4 + 4 runs each, redrawn while
    their FC is mostly noise). Subject k depends only on the seed and k, so each is made once: in a
    private folder, then moved in unless a run beside this one moved it first."""
    c = cfg.dataset.cmaes
    if c.targets:
        return find_targets(c.targets)
    if c.synthetic < 1:
        return []
    made = folder / "targets" / f"seed{c.synthetic_seed}"
    have = {p.parent.name for p in made.glob(f"*/{TARGET_FILE}")} if made.is_dir() else set()
    if len(have) < c.synthetic:
        made.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging_", dir=made.parent))
        synthetic_subjects(
            c.synthetic, staging, data, simulator, variant, runs={"train": 4, "vali": 4},
            seed=c.synthetic_seed, from_dataset=c.synthetic_near_dataset,
            min_reliability=c.synthetic_min_reliability, max_draws=30, overwrite=True,
            progress=cfg.get("progress", True), skip=sorted(have),
        )  # fmt: skip
        made.mkdir(parents=True, exist_ok=True)
        for subject in sorted(p for p in staging.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                os.rename(subject, made / subject.name)
            except OSError:  # another run moved the same subject in first
                pass
        shutil.rmtree(staging, ignore_errors=True)
    return find_targets(made)[: c.synthetic]


def make_bank(cfg: DictConfig, out_dir: Path) -> dict:
    """Fill the bank's parts (or the one shard ``dataset.shard_index`` names); returns a summary."""
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    space = simulator.param_space(load_data(cfg.data, simulator, variant))
    bank = Bank(dataset_folder(cfg, simulator))
    parts = bank_parts(cfg, bank, simulator, variant, space)
    shards = [(part, shard) for part in parts for shard in range(part.spec.num_shards)]
    index = cfg.dataset.shard_index
    if index is not None and not 0 <= index < len(shards):
        raise ConfigError(f"dataset.shard_index={index}; this bank plan has shards 0..{len(shards) - 1}")
    chosen = shards if index is None else [shards[index]]
    total = sum(_simulations(part.spec) for part, _ in chosen)
    log.info(
        "bank %s: %d parts, %d shards here, %s", bank.folder, len(parts), len(chosen), simulator.describe()
    )
    made = {"simulations": 0, "seconds": 0.0}
    with progress_bar(total, "bank", enabled=cfg.get("progress", True)) as bar:
        for part, shard in chosen:
            store = ShardStore(part.folder)
            generator = Generator(part.spec, space, part.data, simulator, variant, store, bar=bar)
            generator.run(shard)
            made["simulations"] += generator.progress.simulations
            made["seconds"] += generator.progress.seconds
    check = stats_check(parts, simulator, variant)
    shown = ", ".join(f"{key} {value:.5f}" for key, value in check.items() if key != "rows")
    summary = bank_summary(bank, made) + (
        f"\n  cost from stored statistics vs the simulations' own, {check['rows']} rows: "
        f"max |difference| {shown}"
    )
    print(summary)
    atomic_write_bytes(out_dir / "bank_summary.txt", (summary + "\n").encode())
    return {"folder": str(bank.folder), **made, "stats_check": check}


def stats_check(parts: list[Part], simulator, variant) -> dict:
    """Each part's rows costed from their stored statistics against the part's own target, beside
    the cost its simulations gave (stored with them): the largest difference per term, and rows."""
    diffs = {"total": 0.0, "fc_cost": 0.0, "ks": 0.0}
    n_rows = 0
    fcd_total = fcd_pair_count(simulator.protocol.n_tr, variant.window)
    for part in parts:
        rows = load_dataset(part.folder) if ShardStore(part.folder).read_manifest() else {}
        if not len(rows.get("sample_id", ())):
            continue
        costs = cost_from_stats(bank_stats(rows, fcd_total), part.data.fc, part.data.fcd_cdf, variant, "fit")
        for key in diffs:
            diff = np.abs(getattr(costs, key).numpy() - rows[key])
            diffs[key] = max(diffs[key], float(np.nanmax(diff, initial=0.0)))
        n_rows += len(rows["sample_id"])
    return diffs | {"rows": n_rows}


def _simulations(spec: DatasetSpec) -> int:
    if spec.strategy != "cmaes":
        return spec.shard_size * spec.repeats
    c = spec.cmaes
    return int(c["n_starts"]) * int(c["popsize"]) * int(c["max_generations"]) * spec.repeats


def bank_summary(bank: Bank, made: dict) -> str:
    """Rows per part, the share valid, and this run's simulations/s."""
    lines = [f"bank {bank.folder}"]
    total = 0
    for part in bank.parts():
        manifest = ShardStore(part).read_manifest() or {}
        counts = manifest.get("counts", {})
        rows = int(counts.get("rows", 0))
        total += rows
        done = f"{counts.get('shards_complete', 0)}/{counts.get('shards_total', '?')} shards"
        lines.append(f"  {part.name:<40} {rows:>7} rows  {done}")
    if made["simulations"]:
        rate = made["simulations"] / made["seconds"]
        run = f"this run: {made['simulations']} simulations, {rate:.2f} simulations/s"
    else:
        run = "this run: nothing to simulate, every shard was complete"
    lines.append(f"  {total} rows in all; {run}")
    return "\n".join(lines)
