"""Kong2021's validation and test stages (docs/fitting.md#validation and #test), shared by every strategy.

- :func:`validate`: every candidate simulated R = 20 times on the validation SC and costed against
  the validation FC / FCD; all candidates share the same R noise streams (Kong's batches of 50 each
  reuse the same 20 streams, so the batch size does not matter).
- :func:`choose_diverse`: rank by validation total, keep the top k, skipping a candidate whose w, I
  and sigma maps all three correlate above 0.98 with a set already chosen (G is not compared).
- :func:`grouped_costs`: each set simulated ``n_groups x group_size`` times with independent noise
  and costed per group; the test stage (10,000 repeats in groups of 10, an all-invalid group NaN and
  left out of the mean) and the acceptance re-simulations (R = 20, 5 groups) both use it.
"""

from __future__ import annotations

import numpy as np
import torch

from pmfm.cost import KONG2021, CostVariant
from pmfm.evaluate.costs import Evaluation, evaluate_params
from pmfm.params import MAPS, ParamSpace

DIVERSITY_THRESHOLD = 0.98  # Kong2021: maps correlating above this are "the same solution"


def map_correlations(space: ParamSpace, a, b) -> np.ndarray:
    """(3,) Pearson correlation of the w, I and sigma maps of two parameter sets (P,) each.

    A constant map has no correlation: two constant maps count as 1 when equal (to 1e-12 relative),
    else 0, so identical sets are always "the same" and a constant map is never like a varying one.
    """
    ra = space.regional(torch.as_tensor(a, dtype=torch.float64)[None])
    rb = space.regional(torch.as_tensor(b, dtype=torch.float64)[None])
    out = np.zeros(len(MAPS))
    for i, name in enumerate(MAPS):
        x = getattr(ra, name)[0].numpy()
        y = getattr(rb, name)[0].numpy()
        sx, sy = x.std(), y.std()
        scale = max(np.abs(x).max(), np.abs(y).max(), 1e-300)
        if sx <= 1e-12 * scale or sy <= 1e-12 * scale:
            out[i] = 1.0 if np.allclose(x, y, rtol=1e-12, atol=0) else 0.0
        else:
            out[i] = float(np.corrcoef(x, y)[0, 1])
    return out


def choose_diverse(
    theta, total, space: ParamSpace, k: int = 10, threshold: float = DIVERSITY_THRESHOLD
) -> list[int]:
    """Indices of the chosen sets, best first (docs/fitting.md#validation).

    Candidates ``theta`` (K, P) are ranked by ``total`` (K,) (lower is better; non-finite totals are
    never chosen); walking down the ranking, a candidate is skipped when all three of its maps
    correlate above ``threshold`` with one already chosen; stops at ``k`` chosen.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    total = np.asarray(total, dtype=np.float64).reshape(-1)
    if len(total) != len(theta):
        raise ValueError(f"{len(total)} totals for {len(theta)} candidates")
    chosen: list[int] = []
    for i in np.argsort(total, kind="stable"):
        if len(chosen) == k:
            break
        if not np.isfinite(total[i]):
            continue
        if any((map_correlations(space, theta[i], theta[j]) > threshold).all() for j in chosen):
            continue
        chosen.append(int(i))
    return chosen


def validate(
    theta,
    space: ParamSpace,
    data,
    simulator,
    *,
    repeats: int = 20,
    seed: int = 0,
    variant: CostVariant = KONG2021,
    keep_stats: bool = False,
    progress=None,
) -> Evaluation:
    """Cost (K, P) candidates at R = ``repeats`` on ``data`` (the validation split), common noise."""
    return evaluate_params(
        theta, space, data, simulator, repeats=repeats, seed=seed, variant=variant, common=True,
        keep_stats=keep_stats, progress=progress,
    )  # fmt: skip


def grouped_costs(
    theta,
    space: ParamSpace,
    data,
    simulator,
    *,
    group_size: int = 10,
    n_groups: int = 1000,
    seed: int = 0,
    variant: CostVariant = KONG2021,
    stage: str = "test",
    progress=None,
) -> dict[str, np.ndarray]:
    """Each of (S, P) sets simulated ``n_groups * group_size`` times (independent noise), costed per group.

    Returns "fc_cost", "ks", "total": (S, n_groups) each. With ``stage="test"`` a group without a
    valid repeat for a term is NaN (docs/cost.md); take ``np.nanmean`` over groups.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    theta = theta[None] if theta.ndim == 1 else theta
    costs = evaluate_params(
        theta.repeat_interleave(n_groups, dim=0),  # (S * G, P), set-major
        space,
        data,
        simulator,
        repeats=group_size,
        common=False,
        progress=progress,
        seed=seed,
        variant=variant,
        stage=stage,
    ).costs
    return {
        name: getattr(costs, name).numpy().reshape(len(theta), n_groups)
        for name in ("fc_cost", "ks", "total")
    }


def mean_and_se(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, standard error and count of the finite values of a 1-d array."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan"), 0
    se = float(finite.std(ddof=1) / np.sqrt(len(finite))) if len(finite) > 1 else float("nan")
    return float(finite.mean()), se, len(finite)
