"""``python -m pmfm.experiment experiment=<study>``: rerun one experiment of the seed study.

    python -m pmfm.experiment experiment=sc_insensitivity     # assumption 1 (CPU reduced size)
    python -m pmfm.experiment experiment=smoothness           # assumption 2
    python -m pmfm.experiment experiment=model_comparison     # surrogates side by side
    python -m pmfm.experiment experiment=search_comparison    # CMA-ES vs Adam vs CMA-ES + penalty
    python -m pmfm.experiment experiment=parameter_recovery   # fit targets made from known parameters
    python -m pmfm.experiment experiment=speedup              # time per evaluation, whole-fit wall time
    python -m pmfm.experiment experiment=smoothness_gpu       # any study at GPU scale: <name>_gpu

Defaults are the CPU reduced sizes (minutes on 2 cores); ``experiment=<name>_gpu`` sets the GPU
scale. Each run folder (``outputs/experiment/<study>/<date>/``) gets results.csv, PNG figures and
summary.json / summary.md; experiments/README.md collects the runs that were made.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pmfm.data import DataError
from pmfm.datasets import DatasetError
from pmfm.params import ParamError
from pmfm.studies import STUDIES

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Run the study ``cfg.study.name`` into ``out_dir``; returns its summary."""
    if cfg.get("study") is None or cfg.study.get("name") not in STUDIES:
        got = None if cfg.get("study") is None else cfg.study.get("name")
        raise ValueError(f"experiment= must name a study ({', '.join(STUDIES)}; or <name>_gpu), got {got!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"pmfm.studies.{cfg.study.name}")
    log.info("study %s in %s", cfg.study.name, out_dir)
    return module.run(cfg, out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="experiment")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except (DataError, ParamError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"run folder: {out_dir}")


if __name__ == "__main__":
    main()
