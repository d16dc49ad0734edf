"""Make (or finish) a simulator-made dataset (``python -m pmfm.generate``): one strategy's samples,
or a bank of statistics (``dataset=bank``, pmfm.pipelines.bank). What the samples depend on is the
dataset's identity, hashed in its manifest (the name is not part of it): a folder made under other
settings is refused. Its folder: pmfm.pipelines.folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from pmfm.datasets.report import summarise
from pmfm.datasets.store import ShardStore
from pmfm.params import ParamSpace, read_params_csv
from pmfm.pipelines.bank import make_bank
from pmfm.pipelines.config import load_data, simulator_of, variant_of
from pmfm.pipelines.folders import dataset_folder
from pmfm.pipelines.generation import DatasetSpec, Generator
from pmfm.pipelines.progress import progress_bar
from pmfm.search.cmaes import CMAESSettings

log = logging.getLogger(__name__)


def dataset_spec(cfg: DictConfig, space: ParamSpace) -> DatasetSpec:
    """The ``dataset`` config as a DatasetSpec (centers read from their CSV for ``around``)."""
    centers: tuple = ()
    if cfg.strategy == "around":
        centers = tuple(map(tuple, read_params_csv(cfg.centers_csv, space).tolist()))
    return DatasetSpec(
        name=cfg.name,
        strategy=cfg.strategy,
        seed=cfg.seed,
        repeats=cfg.repeats,
        num_shards=cfg.num_shards,
        shard_size=cfg.shard_size,
        chunk_size=cfg.chunk_size,
        centers=centers,
        scale=cfg.get("scale", 0.02),
        cmaes=dict(cfg.get("cmaes") or {}),
    )


def make_dataset(cfg: DictConfig, out_dir: Path) -> dict:
    """Generate (or finish) the configured dataset; print and save its summary; return the manifest
    (a bank, ``dataset=bank``: its summary)."""
    if cfg.dataset.strategy == "bank":
        return make_bank(cfg, out_dir)
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    spec = dataset_spec(cfg.dataset, space)
    store = ShardStore(dataset_folder(cfg, simulator))
    log.info("dataset %s (%s) in %s, %s", spec.name, spec.strategy, store.folder, simulator.describe())
    with progress_bar(None, spec.name, enabled=cfg.get("progress", True)) as bar:
        generator = Generator(spec, space, data, simulator, variant, store, bar=bar)
        bar.total = expected_simulations(spec, cfg.dataset.shard_index)
        manifest = generator.run(cfg.dataset.shard_index)
    print(summarise(store, manifest, generator.progress, out_dir))
    return manifest


def expected_simulations(spec: DatasetSpec, shard_index) -> int | None:
    """Simulations the run makes at most (CMA-ES runs may stop early)."""
    shards = spec.num_shards if shard_index is None else 1
    if spec.strategy != "cmaes":
        return shards * spec.shard_size * spec.repeats
    c, default = spec.cmaes, CMAESSettings()
    starts = c["n_starts"] if shard_index is None else len(range(shard_index, c["n_starts"], spec.num_shards))
    return (
        starts
        * c.get("popsize", default.popsize)
        * c.get("max_generations", default.max_generations)
        * spec.repeats
    )
