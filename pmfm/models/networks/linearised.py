"""``model=mlp``: an MLP on what the linearised model says of a parameter set (``pmfm.physics.linearized``).

The coefficients themselves generalise poorly from one CMA-ES run to another (each run explores its own
corner of the box), but the model's steady state and the correlations of its fluctuations around it
(the linear noise approximation) summarise what the simulated FC and FCD will look like. Most of the
best-fitting sets are bistable, and noise carries their simulations onto the high-activity branch or
back and forth, so the summaries are taken at both branches, beside how far apart they are and how
hard noise finds it to switch (``bistability``). On the shipped dataset, held out by CMA-ES run, an MLP
on these summaries ranks the simulated totals with Spearman about 0.96, one on the coefficients about
0.3 (``python -m pmfm.experiment study=surrogate_cv``; docs/surrogates.md#measured-ranking-quality).

The summaries cost a few milliseconds per parameter set (two 68-region fixed points, two ``eigh``), so
they are memoised per input row while the network is not asked for gradients (training epochs repeat
the same rows); a gradient search recomputes them differentiably.
"""

from __future__ import annotations

import torch

from pmfm.models.networks.mlp import MLP
from pmfm.models.networks.regional import expand
from pmfm.physics.dynamics import SC_SCALE
from pmfm.physics.linearized import (
    BRANCH_NAMES,
    BRANCH_TARGET_NAMES,
    SUMMARY_NAMES,
    TARGET_NAMES,
    bistability,
    linearize,
    summary,
)

MEMO_ROWS = 500_000  # rows whose summaries are kept (each a few dozen bytes)
CHUNK_ROWS = 1024  # parameter sets linearised at once: a few (B, N, N) float64 temporaries (~40 MB each)


class LinearisedMLP(MLP):
    """MLP on the linearised model's summaries (B, K), optionally beside the coordinates u (B, P).

    Args (beside MLP's): target_fc, the (N, N) empirical FC the costs were computed against (adds two
    pattern-match summaries); with_coefficients, also feed u.
    """

    target_fc: torch.Tensor | None

    def __init__(
        self, n_outputs: int, box, basis, sc, target_fc=None, with_coefficients: bool = False, **mlp
    ):
        if isinstance(target_fc, str):
            raise ValueError(
                f"target_fc={target_fc!r}: pass the (N, N) empirical FC as nested lists, or None "
                "(pmfm.train resolves target_fc: auto from the data)"
            )
        self.with_coefficients = with_coefficients
        self.has_target = target_fc is not None
        super().__init__(n_outputs, box, basis, sc, **mlp)
        fc = None if target_fc is None else torch.as_tensor(target_fc, dtype=torch.float64)
        self.register_buffer("target_fc", fc)
        self.memoise = True  # False: always recompute (benchmarks)
        self._memo: dict[bytes, torch.Tensor] = {}

    @property
    def n_features(self) -> int:
        k = 2 * len(SUMMARY_NAMES) + len(BRANCH_NAMES)  # both branches' summaries, then how they relate
        k += (2 * len(TARGET_NAMES) + len(BRANCH_TARGET_NAMES)) if self.has_target else 0
        return k + (self.n_params if self.with_coefficients else 0)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        lna = self.summaries(u).to(u.dtype)  # (B, K)
        return torch.cat([u, lna], dim=1) if self.with_coefficients else lna

    def summaries(self, u: torch.Tensor) -> torch.Tensor:
        """(B, K) summaries of the linearised model at normalised parameters u (B, P), float64."""
        if not self.memoise or (torch.is_grad_enabled() and u.requires_grad):
            return self._compute(u)
        keys = [row.tobytes() for row in u.detach().to("cpu", torch.float64).numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        if missing:
            fresh = self._compute(u.detach()[missing]).cpu()
            if len(self._memo) + len(missing) > MEMO_ROWS:
                self._memo.clear()
            self._memo.update({keys[i]: row for i, row in zip(missing, fresh, strict=True)})
        return torch.stack([self._memo[key] for key in keys]).to(u.device)

    def _compute(self, u: torch.Tensor) -> torch.Tensor:
        if len(u) > CHUNK_ROWS:
            return torch.cat([self._compute(part) for part in u.split(CHUNK_ROWS)])
        u = u.to(torch.float64)
        if u.requires_grad:  # degenerate eigenvalues (far outside the bounds) can make eigh's backward
            u.register_hook(torch.nan_to_num)  # non-finite: such a row gets no push rather than NaN
        box, basis = self.box.to(torch.float64), self.basis.to(torch.float64)
        w, I, G, sigma = expand(u, box, basis)
        sc = self.sc.to(torch.float64)
        # float32 halves the eigendecomposition's cost; gradients keep float64, where eigh's backward
        # (1 / (l_i - l_j)) meets fewer exact ties between the eigenvalues of silent regions
        spectral = torch.float64 if u.requires_grad and torch.is_grad_enabled() else torch.float32
        c = sc / sc.max() * SC_SCALE
        lower = linearize(w, I, G, sigma, c, spectral_dtype=spectral)
        upper = linearize(w, I, G, sigma, c, spectral_dtype=spectral, upper=True)
        both = bistability(lower.s, upper.s, w, I, G, sigma, c, self.target_fc)
        features = [summary(lower, self.target_fc), summary(upper, self.target_fc), both]
        return torch.cat([f.to(torch.float64) for f in features], dim=1)


FEATURES = ("linearised", "coefficients")  # what model=mlp reads (model.network_hparams.features)


def feature_mlp(n_outputs: int, box, basis, sc, features: str = "coefficients", **hparams) -> MLP:
    """``network=mlp``: an MLP on the linearised model's summaries (``features="linearised"``, the
    recommended surrogate) or on the normalised coefficients (``"coefficients"``, the default of
    checkpoints that predate the choice; it ignores ``target_fc`` and ``with_coefficients``)."""
    if features == "linearised":
        return LinearisedMLP(n_outputs, box, basis, sc, **hparams)
    if features != "coefficients":
        raise ValueError(f"model.network_hparams.features={features!r}; expected one of {FEATURES}")
    hparams.pop("target_fc", None)
    hparams.pop("with_coefficients", None)
    return MLP(n_outputs, box, basis, sc, **hparams)
