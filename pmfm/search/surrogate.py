"""A trained surrogate as a search objective (docs/surrogates.md): predicted cost instead of simulations.

:class:`SurrogateScore` turns a surrogate's predictions into the one number a searcher minimises,
differentiably (gradient search uses it directly):

    score = total + uncertainty_penalty * total_std + validity_penalty * (1 - p_valid)

``total_std`` is the ensemble members' spread (0 for a single network): with ``uncertainty_penalty``
k > 0 the search prefers places where the members agree, i.e. where the surrogate has seen data
(docs/surrogates.md: surrogates are exploited outside their data). The validity term keeps it away from
parameter sets the surrogate expects to blow up; the predicted total of such sets is not trained.

:class:`SurrogateObjective` wraps the score in the :class:`~pmfm.evaluate.objective.Objective` protocol,
so :class:`~pmfm.search.cmaes.MultiStartCMAES` runs against a surrogate unchanged (``search=cmaes``).
"""

from __future__ import annotations

import numpy as np
import torch

from pmfm.evaluate.objective import Evaluated
from pmfm.params import ParamSpace

INFEASIBLE_SCORE = 1e3  # score of parameter sets outside the bounds (never predicted)


class SurrogateScore:
    """Differentiable search score of a surrogate on normalised parameters.

    Args:
        model: anything with ``predict_normalised(u, grad=False) -> dict`` of (B,) tensors holding
            "total" and "p_valid" (and "total_std" for ensembles), e.g.
            :class:`pmfm.models.SurrogateModule`.
        uncertainty_penalty: k of ``total + k * total_std``; needs an ensemble when k > 0.
        validity_penalty: weight of ``1 - p_valid``.
    """

    def __init__(self, model, uncertainty_penalty: float = 0.0, validity_penalty: float = 1.0):
        if uncertainty_penalty < 0 or validity_penalty < 0:
            raise ValueError(
                f"penalties must be >= 0, got uncertainty {uncertainty_penalty}, validity {validity_penalty}"
            )
        if uncertainty_penalty > 0 and not getattr(model, "is_ensemble", False):
            raise ValueError(
                f"uncertainty_penalty={uncertainty_penalty} needs an ensemble surrogate (model=ensemble): "
                "a single network predicts no spread"
            )
        self.model = model
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.validity_penalty = float(validity_penalty)
        self.n_evaluations = 0  # parameter sets scored so far

    def __call__(self, u: torch.Tensor, grad: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Normalised (B, P) -> (score (B,), predictions dict of (B,)); differentiable with grad=True."""
        pred = self.model.predict_normalised(u, grad=grad)
        score = pred["total"].to(torch.float64)
        if self.uncertainty_penalty:
            score = score + self.uncertainty_penalty * pred["total_std"].to(torch.float64)
        if self.validity_penalty:
            score = score + self.validity_penalty * (1 - pred["p_valid"].to(torch.float64))
        self.n_evaluations += int(u.shape[0])
        return score, pred


class SurrogateObjective:
    """A surrogate as an :class:`~pmfm.evaluate.objective.Objective` over raw parameters of ``space``.

    Infeasible sets score ``INFEASIBLE_SCORE`` and are invalid. ``valid`` is ``p_valid >= 0.5``;
    ``terms`` hold the predicted fc_cost, ks, total, p_valid and, for ensembles, total_std.
    """

    def __init__(self, space: ParamSpace, score: SurrogateScore):
        check_circuit(score.model, space)
        box = getattr(score.model, "box", None)
        if box is not None and not np.allclose(np.asarray(box), space.box, rtol=1e-9, atol=1e-12):
            raise ValueError(
                "the surrogate was trained on another parameter box than this space's: was it trained on "
                "data with other covariates (myelin, gradient)? The basis must be the training data's."
            )
        self.space = space
        self.score = score

    @property
    def n_evaluations(self) -> int:
        return self.score.n_evaluations

    @torch.no_grad()
    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Score (B, P) raw parameters with the surrogate (``keys`` and ``generation`` are ignored)."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta[None] if theta.ndim == 1 else theta
        feasible = self.space.is_feasible(theta).cpu()  # (B,)
        score, pred = self.score(self.space.normalise(theta))
        score = score.cpu().to(torch.float64)
        total = torch.where(feasible, score, torch.full_like(score, INFEASIBLE_SCORE))
        total = torch.nan_to_num(total, nan=INFEASIBLE_SCORE, posinf=INFEASIBLE_SCORE)
        terms = {k: v.detach().cpu().to(torch.float64) for k, v in pred.items() if k in TERMS}
        valid = feasible & (terms["p_valid"] >= 0.5)
        return Evaluated(total=total, valid=valid, terms=terms)


TERMS = ("fc_cost", "ks", "fc_l1", "total", "p_valid", "total_std")


def check_circuit(model, space: ParamSpace) -> None:
    """Refuse a surrogate trained on another circuit model's parameters than ``space``'s."""
    hparams = getattr(model, "hparams", None)
    trained = hparams.get("circuit", "pmfm") if hparams is not None else space.circuit
    if trained != space.circuit:
        raise ValueError(
            f"the surrogate was trained on the {trained} model's parameters; this search is over the "
            f"{space.circuit} model's (simulator={'fic' if space.circuit == 'fic' else 'auto'}?)"
        )
