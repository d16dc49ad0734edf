"""Score parameter sets with a trained surrogate (``python -m pmfm.predict``).

Writes predictions.csv to the run folder: one row per set in input order, with the surrogate's
fc_cost, ks, total and p_valid (fc_l1 and *_std where the checkpoint has them). A conditioned
surrogate (``model=transformer_cond``) scores against another group's FC and FCD with
``condition.path=<folder> condition.split=<split>``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.data import load
from pmfm.models import SurrogateModule
from pmfm.models.conditioning import empirical_condition
from pmfm.params import ParamError, read_params_csv
from pmfm.pipelines.config import ConfigError
from pmfm.sim.simulator import resolve_device

log = logging.getLogger(__name__)


def predict_csv(
    ckpt: str | Path, params_csv: str | Path, out_dir: Path, device="auto", condition=None
) -> dict[str, np.ndarray]:
    """Predictions for every set of ``params_csv``; also written to ``out_dir/predictions.csv``.

    ``condition``: a conditioning vector (:func:`pmfm.models.conditioning.empirical_condition`) for a
    conditioned surrogate; None scores against its training data.
    """
    if not Path(ckpt).is_file():
        raise FileNotFoundError(
            f"{ckpt}: checkpoint not found (ckpt=<a pmfm.train run>/checkpoints/last.ckpt)"
        )
    model = SurrogateModule.load_from_checkpoint(ckpt, map_location=resolve_device(device))
    space = model.param_space()  # the circuit, basis and bounds it was trained with
    theta = read_params_csv(params_csv, space)
    if condition is not None:
        log.warning(
            "%s: scoring against another group's FC/FCD; a conditioned surrogate trained on one group's "
            "dataset (all pmfm datasets so far) has not learned how the condition moves the costs",
            ckpt,
        )
    pred = {k: v.cpu().numpy() for k, v in model.predict(theta.to(model.device), condition).items()}
    names: list[str] = [k for k in ("fc_cost", "fc_l1", "ks", "total", "p_valid") if k in pred]
    names += sorted(k for k in pred if k.endswith("_std"))
    table = np.column_stack([pred[k] for k in names])
    np.savetxt(
        out_dir / "predictions.csv", table, delimiter=",", header=",".join(names), comments="", fmt="%.6g"
    )
    return {k: pred[k] for k in names}


def group_condition(cfg) -> torch.Tensor | None:
    """The conditioning vector of ``condition.path`` / ``condition.split``, or None when neither is set."""
    if cfg is None or (cfg.get("path") is None and cfg.get("split") is None):
        return None
    data = load(cfg.get("path"), cfg.get("split") or "train")
    return empirical_condition(data.fc, data.fcd_cdf)


def predict_table(cfg: DictConfig, out_dir: Path) -> dict[str, np.ndarray]:
    """``predict_csv`` of the configured checkpoint and sets; prints the table."""
    try:
        with torch.no_grad():
            pred = predict_csv(cfg.ckpt, cfg.params_csv, out_dir, cfg.device, group_condition(cfg.condition))
    except ParamError:
        raise
    except ValueError as err:  # a condition for an unconditioned network, parameters of another shape
        raise ConfigError(f"{cfg.ckpt}: {err}") from None
    names = list(pred)
    print(f"{'set':>4} " + " ".join(f"{n:>10}" for n in names))
    for i in range(len(pred["total"])):
        print(f"{i + 1:>4} " + " ".join(f"{pred[n][i]:10.4f}" for n in names))
    print(f"predictions: {out_dir / 'predictions.csv'}")
    return pred
