"""Which parameter sets a study simulates: samples of the shipped dataset or random feasible starts."""

from __future__ import annotations

import numpy as np
import torch

from pmfm.datasets.generation import BUNDLED_DATASETS
from pmfm.params import ParamError, ParamSpace

SHIPPED = BUNDLED_DATASETS / "hcp_cmaes_r3"  # 1,280 full-protocol samples, HCP train split, R = 3


def study_sets(source: str, n: int, space: ParamSpace, seed: int, dataset: str | None = None) -> torch.Tensor:
    """(n, P) feasible parameter sets.

    ``source="dataset"``: valid samples of a dataset (the shipped one unless ``dataset`` names a
    folder) at evenly spaced quantiles of their simulated total, best to worst, so the sets span
    the costs a search visits. ``source="random"``: least-squares random starts (SPEC section 5).
    """
    if source == "random":
        return space.random_start(n, np.random.default_rng([seed, 7]))
    if source != "dataset":
        raise ValueError(f"study.sets={source!r}; expected 'dataset' or 'random'")
    from pmfm.datasets.store import load_dataset

    rows = load_dataset(dataset or SHIPPED)
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
