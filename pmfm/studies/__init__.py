"""The seed study's experiments, one module each, run by ``python -m pmfm.experiment study=<name>``.

They live in the package, not in a scripts folder, so that the command works from an installed wheel
and every study runs through the same pipeline functions as the other commands.

    sc_insensitivity    assumption 1: costs barely change with the group SC
    smoothness          assumption 2: costs vary smoothly with the parameters
    model_comparison    surrogate networks side by side (trained per model and seed, pmfm.compare)
    search_comparison   CMA-ES, Adam and CMA-ES + uncertainty penalty against one surrogate
    parameter_recovery  fit synthetic targets made from known parameters with both strategies
    speedup             time per candidate evaluation and whole-fit wall time, side by side
    surrogate_cv        leave-one-CMA-ES-run-out ranking of a model config
    emulator_cv         leave-one-CMA-ES-run-out costing by the emulator of a bank
    surrogate_ceiling   the noise ceiling of ranking held-out samples, and a checkpoint against it
    fit_acceptance      fits' chosen sets (per target of many-target fits) re-simulated with fresh noise
    linearised_bold_fc  the linearised model's BOLD covariance as a ranker of the FC cost

Each module has ``run(cfg, out_dir) -> dict``, writing its tables, figures and summary into
``out_dir``; a module is imported only when its study runs (cma, Lightning stay lazy).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from pmfm.pipelines.config import ConfigError

log = logging.getLogger(__name__)

STUDIES = (
    "sc_insensitivity",
    "smoothness",
    "model_comparison",
    "search_comparison",
    "parameter_recovery",
    "speedup",
    "surrogate_cv",
    "emulator_cv",
    "surrogate_ceiling",
    "fit_acceptance",
    "linearised_bold_fc",
)


def run_study(cfg: DictConfig, out_dir: Path) -> dict:
    """Run the study ``cfg.study.name`` into ``out_dir``; returns its summary."""
    name = cfg.study.get("name")
    if name not in STUDIES:
        raise ConfigError(f"study.name={name!r}; expected one of {', '.join(STUDIES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("study %s in %s", name, out_dir)
    return importlib.import_module(f"pmfm.studies.{name}").run(cfg, out_dir)
