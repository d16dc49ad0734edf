"""Where a dataset lives: a folder named after what distinguishes it,
``<name>_<circuit>_<TRs>tr[_dt<dt>]_r<R>`` under ``paths.datasets`` (``dataset.folder`` overrides it),
so that datasets of other circuits, protocols or repeats never share a folder; the package's shipped
datasets are found first."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from pmfm.datasets.store import BUNDLED_DATASETS
from pmfm.pipelines.config import simulator_of
from pmfm.sim.simulator import Simulator

DEFAULT_DATASETS = "outputs/datasets"  # paths.datasets by default: the shipped datasets are found first


def folder_name(name: str, simulator: Simulator, repeats: int) -> str:
    """``<name>_<circuit>_<TRs>tr[_dt<dt>]_r<R>``, e.g. ``cmaes_pmfm_1200tr_r3``."""
    protocol = simulator.protocol
    step = "" if protocol.dt == 0.01 else f"_dt{protocol.dt:g}"
    return f"{name}_{simulator.circuit}_{protocol.n_tr}tr{step}_r{repeats}"


def dataset_folder(cfg: DictConfig, simulator: Simulator | None = None) -> Path:
    """Where the configured dataset lives: ``dataset.folder`` if set; else its derived folder name
    under ``paths.datasets``, or the shipped copy of that name when ``paths.datasets`` is the
    default and the package ships it complete."""
    if cfg.dataset.get("folder"):
        return Path(cfg.dataset.folder)
    name = folder_name(cfg.dataset.name, simulator or simulator_of(cfg), cfg.dataset.repeats)
    shipped = BUNDLED_DATASETS / name / "manifest.json"
    if (
        cfg.paths.datasets == DEFAULT_DATASETS
        and shipped.is_file()
        and json.loads(shipped.read_text()).get("complete")
    ):
        return shipped.parent
    return Path(cfg.paths.datasets) / name
