"""Where a dataset lives: a folder named after what distinguishes it,
``<name>_<circuit>_<TRs>tr[_dt<dt>]_r<R>`` under ``paths.datasets`` (``dataset.folder`` overrides it),
so that datasets of other circuits, protocols or repeats never share a folder; the package's shipped
datasets are found first. A bank grows (later parts, fits' polishes), so a shipped bank is never used
in place: a missing bank folder of its name is first filled with a copy of it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from pmfm.datasets.bank import BANK_FILE
from pmfm.datasets.store import BUNDLED_DATASETS
from pmfm.pipelines.config import simulator_of
from pmfm.sim.simulator import Simulator

log = logging.getLogger(__name__)
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
    if cfg.dataset.get("strategy") == "bank":
        return seeded_bank(Path(cfg.paths.datasets) / name)
    shipped = BUNDLED_DATASETS / name / "manifest.json"
    if (
        cfg.paths.datasets == DEFAULT_DATASETS
        and shipped.is_file()
        and json.loads(shipped.read_text()).get("complete")
    ):
        return shipped.parent
    return Path(cfg.paths.datasets) / name


def seeded_bank(folder: Path) -> Path:
    """``folder``; where it does not exist and the package ships a bank of its name, a copy of that
    bank is put there first (copied aside, then renamed: a run beside this one may win the race)."""
    shipped = BUNDLED_DATASETS / folder.name
    if folder.exists() or not (shipped / BANK_FILE).is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.copytree(shipped, tmp)
    try:
        tmp.rename(folder)
        log.info("bank %s: started from the package's shipped bank", folder)
    except OSError:  # made meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
