"""``python -m pmfm.generate dataset=<strategy>``: simulate parameter sets into a sharded dataset.

    python -m pmfm.generate dataset=sobol                       # CPU demo size
    python -m pmfm.generate dataset=cmaes                       # simulator-in-the-loop CMA-ES runs
    python -m pmfm.generate dataset=around dataset.centers_csv=best.csv
    python -m pmfm.generate -m hydra/launcher=joblib_local dataset.shard_index=0,1   # shards in parallel

The dataset lands in ``outputs/datasets/<dataset.name>/`` (``root=``); rerunning the same command
skips complete shards and finishes incomplete ones.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from pmfm.cost import cost_variant
from pmfm.data import DataError
from pmfm.datasets.generation import BUNDLED_DATASETS, DatasetSpec, Generator
from pmfm.datasets.report import summarise
from pmfm.datasets.store import DatasetError, ShardStore
from pmfm.params import ParamError, ParamSpace, read_params_csv
from pmfm.search.cmaes import CMAESSettings
from pmfm.sim.simulator import Simulator
from pmfm.simulate import load_data

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


def dataset_folder(cfg: DictConfig) -> Path:
    """Where ``dataset.name`` lives: ``dataset_dir`` if set, the shipped copy for the shipped
    dataset, else ``<root>/<dataset.name>``."""
    if cfg.get("dataset_dir"):
        return Path(cfg.dataset_dir)
    shipped = BUNDLED_DATASETS / cfg.dataset.name
    if cfg.root == "outputs/datasets" and _complete(shipped / "manifest.json"):
        return shipped
    return Path(cfg.root) / cfg.dataset.name


def _complete(manifest: Path) -> bool:
    return manifest.is_file() and bool(json.loads(manifest.read_text()).get("complete"))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Generate (or finish) the dataset; print and save its summary; return the manifest."""
    simulator = Simulator.from_config(cfg.simulator, cfg.device)
    variant = cost_variant(cfg.cost.name, simulator.circuit)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    spec = dataset_spec(cfg.dataset, space)
    store = ShardStore(dataset_folder(cfg))
    log.info(
        "dataset %s (%s) in %s, %s on %s",
        spec.name,
        spec.strategy,
        store.folder,
        simulator.resolved_method,
        simulator.device,
    )
    with tqdm(desc=f"{spec.name}", unit="sim", disable=not cfg.get("progress", True), smoothing=0.05) as bar:
        generator = Generator(spec, space, data, simulator, variant, store, bar=bar)
        bar.total = expected_simulations(spec, cfg.dataset.shard_index)
        manifest = generator.run(cfg.dataset.shard_index)
    print(summarise(store, manifest, generator.progress, out_dir))
    return manifest


def expected_simulations(spec: DatasetSpec, shard_index) -> int | None:
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except (DataError, ParamError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
