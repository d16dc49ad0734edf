"""Search against a surrogate from several starts: CMA-ES or projected Adam, one settings object.

:func:`surrogate_search` is what the training callback and ``pmfm.fit strategy=surrogate`` call: it
runs the configured searcher (``search=cmaes`` or ``search=adam``) against a trained surrogate and
returns a few diverse candidates, best predicted first, plus the convergence history. The
candidates are predictions only: every caller re-simulates them before reporting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from pmfm.evaluate.selection import DIVERSITY_THRESHOLD, choose_diverse
from pmfm.params import ParamSpace
from pmfm.search.cmaes import CMAESSettings, MultiStartCMAES
from pmfm.search.gradient import AdamSettings, projected_adam
from pmfm.search.surrogate import SurrogateObjective, SurrogateScore


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` config group: which searcher and its budget (per start)."""

    name: str = "cmaes"  # "cmaes" (pycma with Kong2021's update) or "adam" (projected gradient)
    n_starts: int = 16  # search starts
    # cmaes
    popsize: int = 100
    mu: int = 10
    sigma0: float = 0.15
    sigma_cap: float = 0.15
    max_generations: int = 50
    # adam
    steps: int = 200
    lr: float = 0.01
    # the score: total + uncertainty_penalty * ensemble std + validity_penalty * (1 - p_valid)
    uncertainty_penalty: float = 0.0
    validity_penalty: float = 1.0
    # candidates the surrogate predicts invalid (p_valid < 0.5) are not returned while others exist
    reject_invalid: bool = True

    def __post_init__(self):
        if self.name not in ("cmaes", "adam"):
            raise ValueError(f"search.name={self.name!r}; expected 'cmaes' or 'adam'")

    @classmethod
    def from_config(cls, cfg) -> SearchSettings:
        """From a dict or DictConfig; unknown keys are refused (a typo would silently do nothing)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg.keys()) - known)
        if unknown:
            raise ValueError(f"search: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: cfg[k] for k in cfg.keys()})


@dataclass(frozen=True)
class SearchOutcome:
    """Candidates of a surrogate search, best predicted first."""

    theta: torch.Tensor  # (K, P) float64 raw, feasible
    start: np.ndarray  # (K,) int, 0-based start each came from
    step: np.ndarray  # (K,) int, generation (cmaes) or Adam step count at which it was found
    predicted: dict[str, np.ndarray]  # "score", "total", "fc_cost", "ks", "p_valid" (+"total_std"): (K,)
    history: np.ndarray  # (steps, S) best score so far per start (the convergence curve)
    evaluations: int  # surrogate evaluations (parameter sets scored)


def start_points(space: ParamSpace, seed: int, starts) -> torch.Tensor:
    """(S, P) least-squares random starts (docs/parameters.md#random-starts); start s from generator
    ``(seed, s)``."""
    return torch.cat([space.random_start(1, np.random.default_rng([seed, int(s)])) for s in starts])


def dataset_starts(
    rows: dict, space: ParamSpace, n: int, diversity: float = DIVERSITY_THRESHOLD
) -> torch.Tensor:
    """(S <= n, P) the best simulated, valid samples of a dataset (``load_dataset`` rows), diverse."""
    valid = (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0) & np.isfinite(rows["total"])
    theta = torch.as_tensor(rows["theta"][valid], dtype=torch.float64)
    total = rows["total"][valid]
    if not len(theta):
        raise ValueError("the dataset has no valid sample to start a search from")
    return theta[choose_diverse(theta, total, space, k=n, threshold=diversity)]


def surrogate_search(
    model,
    space: ParamSpace,
    settings: SearchSettings,
    *,
    n_starts: int,
    top_k: int,
    seed: int = 0,
    diversity: float = DIVERSITY_THRESHOLD,
    starts: torch.Tensor | None = None,
    progress=None,
) -> SearchOutcome:
    """Run ``settings`` against ``model`` from ``n_starts`` random starts; keep ``top_k`` diverse candidates.

    ``starts`` (S, P), feasible raw parameters, replaces the random starts (``n_starts`` is then S),
    e.g. the best simulated samples of the surrogate's dataset (:func:`dataset_starts`).

    The pool is every start's best point of every generation (CMA-ES) or its best visited point
    (Adam); candidates are chosen from it by predicted score with the diversity rule of
    :func:`pmfm.evaluate.selection.choose_diverse` (no two near-identical sets re-simulated). With
    ``settings.reject_invalid`` the pool keeps only sets predicted valid (p_valid >= 0.5) when
    there is any: the FIC model's rate rule makes many sets invalid (docs/fic.md#validity).
    ``progress(1)`` is called after each generation (CMA-ES) or step (Adam).
    """
    score = SurrogateScore(model, settings.uncertainty_penalty, settings.validity_penalty)
    if starts is None:
        starts = start_points(space, seed, range(n_starts))  # (S, P)
    else:
        starts = torch.as_tensor(starts, dtype=torch.float64)
        space.check(starts)
        n_starts = len(starts)
    if settings.name == "adam":
        result = projected_adam(score, space, starts, AdamSettings(settings.steps, settings.lr), progress)
        pool = result.theta  # (S, P)
        pool_start = np.arange(n_starts)
        pool_step = np.full(n_starts, settings.steps)
        history = result.history.numpy()
    else:
        cma_settings = CMAESSettings(
            popsize=settings.popsize,
            mu=settings.mu,
            sigma0=settings.sigma0,
            sigma_cap=settings.sigma_cap,
            max_generations=settings.max_generations,
            stop_cost=-np.inf,  # Kong's "converged" rule is about simulated costs: not used here
        )
        objective = SurrogateObjective(space, score)
        searcher = MultiStartCMAES(objective, starts, cma_settings, seed=seed)
        bests = searcher.run(None if progress is None else lambda _: progress(1))
        pool = torch.stack([b.theta for per_start in bests for b in per_start])
        pool_start = np.array([b.start for per_start in bests for b in per_start])
        pool_step = np.array([b.generation for per_start in bests for b in per_start])
        per_gen = np.full((searcher.generation, n_starts), np.nan)
        for s, per_start in enumerate(bests):
            for b in per_start:
                per_gen[b.generation - 1, s] = b.total
        history = np.fmin.accumulate(per_gen, axis=0)
    with torch.no_grad():
        pool_score, pred = score(space.normalise(pool))
    if settings.reject_invalid:
        keep = pred["p_valid"].detach().cpu() >= 0.5  # (pool,)
        if bool(keep.any()) and not bool(keep.all()):
            pool, pool_start, pool_step = pool[keep], pool_start[keep.numpy()], pool_step[keep.numpy()]
            pool_score, pred = (
                pool_score[keep.to(pool_score.device)],
                {k: v[keep.to(v.device)] for k, v in pred.items()},
            )
    scores = pool_score.cpu().numpy()  # (pool,)
    chosen = choose_diverse(pool, scores, space, k=top_k, threshold=diversity)
    predicted = {k: v.detach().cpu().numpy()[chosen] for k, v in pred.items()}
    predicted["score"] = scores[chosen]
    return SearchOutcome(
        theta=pool[chosen].clone(),
        start=pool_start[chosen],
        step=pool_step[chosen],
        predicted=predicted,
        history=history,
        evaluations=score.n_evaluations,
    )
