"""Surrogate networks: plain ``nn.Module``s built from primitive hyperparameters (docs/surrogates.md).

Every network is built by ``build_network(name, n_outputs=..., box=..., basis=..., sc=..., **hparams)``
from ints, floats, strings, bools and nested lists of floats only, so a Lightning checkpoint rebuilds it
without Hydra. ``box`` (P, 2) is the parameter box of ``pmfm.params.ParamSpace`` (P = 10 coefficients, or
3N + 1 regional values), ``basis`` (N, 3) = [1, myelin, gradient], ``sc`` (N, N) the raw SC; all three
are stored as buffers and each network ignores what it does not use.

``forward(u)`` maps u (B, P), normalised [0, 1] coordinates of the box, to unbounded outputs
(B, n_outputs); the LightningModule bounds them. The ensemble returns its members' outputs stacked,
(K, B, n_outputs), and has ``is_ensemble = True`` (False for the others). The transformer built with
``cond_dim > 0`` also takes ``cond`` (B, cond_dim).

=================  ==============================================================================
``mlp``            MLP on ``features``: ``linearised`` (summaries of the model linearised at its
                   steady states; target_fc, with_coefficients) or ``coefficients`` (the
                   normalised coefficients); hidden, depth, dropout, activation, norm
``mlp_regional``   the same MLP on the 3N + 1 normalised regional values
``transformer``    region tokens + class token: layers, heads, width, dropout, ff_mult, cond_dim,
                   sc_transform
``mlp_lna``        ``mlp`` with ``features=linearised`` (the name of earlier checkpoints)
``gnn``            message passing over the SC graph: layers, width, activation, sc_transform
``ensemble``       K members: member, k, plus the member's hyperparameters
=================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pmfm.models.networks.ensemble import Ensemble
from pmfm.models.networks.gnn import GNN
from pmfm.models.networks.linearised import FEATURES, LinearisedMLP, feature_mlp
from pmfm.models.networks.mlp import MLP, RegionalMLP
from pmfm.models.networks.regional import Surrogate, expand, normalised_regional
from pmfm.models.networks.transformer import Transformer

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "mlp": feature_mlp,
    "mlp_regional": RegionalMLP,
    "mlp_lna": LinearisedMLP,
    "transformer": Transformer,
    "gnn": GNN,
    "ensemble": Ensemble,
}


def build_network(
    name: str,
    *,
    n_outputs: int,
    box: list[list[float]],
    basis: list[list[float]],
    sc: list[list[float]],
    **hparams,
) -> nn.Module:
    """The registered network ``name`` with its hyperparameters (see the table above)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
    return NETWORKS[name](n_outputs, box, basis, sc, **hparams)


__all__ = [
    "FEATURES",
    "GNN",
    "LinearisedMLP",
    "MLP",
    "NETWORKS",
    "Ensemble",
    "RegionalMLP",
    "Surrogate",
    "Transformer",
    "build_network",
    "expand",
    "normalised_regional",
]
