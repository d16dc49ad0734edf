"""Which parameter sets a study simulates: samples of a dataset (the shipped one by default) or
random feasible starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pmfm.datasets.store import BUNDLED_DATASETS, load_dataset
from pmfm.params import ParamError, ParamSpace
from pmfm.pipelines.config import ConfigError

# dataset=hcp_cmaes: 1,280 full-protocol samples, R = 3
SHIPPED = BUNDLED_DATASETS / "hcp_cmaes_pmfm_1200tr_r3"


def dataset_or_shipped(folder: str | Path | None) -> Path:
    """A study's ``dataset`` setting: the named folder, or the shipped dataset when null."""
    return Path(folder) if folder else SHIPPED


def study_sets(source: str, n: int, space: ParamSpace, seed: int, dataset: str | None = None) -> torch.Tensor:
    """(n, P) feasible parameter sets.

    ``source="dataset"``: valid samples of a dataset (the shipped one unless ``dataset`` names a
    folder) at evenly spaced quantiles of their simulated total, best to worst, so the sets span
    the costs a search visits. ``source="random"``: least-squares random starts
    (docs/parameters.md#random-starts).
    """
    if source == "random":
        return space.random_start(n, np.random.default_rng([seed, 7]))
    if source != "dataset":
        raise ConfigError(f"study.sets={source!r}; expected 'dataset' or 'random'")
    rows = load_dataset(dataset_or_shipped(dataset))
    valid = (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0) & np.isfinite(rows["total"])
    theta = torch.as_tensor(rows["theta"][valid], dtype=torch.float64)  # (M, P)
    order = np.argsort(rows["total"][valid], kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))]
    theta = theta[picks]
    if theta.shape[1] != space.dim or not bool(space.is_feasible(theta).all()):
        raise ParamError(
            "the dataset's parameter sets do not fit this data's parameter space (made on other "
            "covariates?): use study.sets=random or a dataset made on this data"
        )
    return theta
