"""Multilayer perceptrons on the normalised coefficients (``mlp``) or the regional values (``mlp_regional``).

``mlp`` is the surrogate that worked over the 10 coefficients in the seed's repository; ``mlp_regional``
reads the 3N + 1 regional values (normalised by the pMFM bounds), the variant that was exploited
outside its data when searched over the regional values (docs/surrogates.md).
"""

from __future__ import annotations

import torch
from torch import nn

from pmfm.models.networks.regional import Surrogate, normalised_regional

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp_stack(
    n_in: int, hidden: int, n_out: int, depth: int, act: str = "gelu", dropout: float = 0.0, norm: bool = True
) -> nn.Sequential:
    """``depth`` blocks of Linear [-> LayerNorm] -> activation [-> Dropout], then a Linear to ``n_out``."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 hidden layer, got {depth}")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(n_in if i == 0 else hidden, hidden))
        if norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, n_out))
    return nn.Sequential(*layers)


class MLP(Surrogate):
    """MLP on the P normalised coordinates u (B, P) -> (B, n_outputs)."""

    input_mean: torch.Tensor  # (F,) buffers: feature standardisation (identity by default)
    input_std: torch.Tensor

    def __init__(
        self,
        n_outputs: int,
        box,
        basis,
        sc,
        hidden: int = 128,
        depth: int = 3,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm: bool = True,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
    ):
        super().__init__(box, basis, sc)
        self.net = mlp_stack(self.n_features, hidden, n_outputs, depth, activation, dropout, norm)
        # feasible points fill a sliver of the normalised box: z-score the features with the
        # training set's statistics when given (pmfm.train passes them)
        n = self.n_features
        mean = torch.zeros(n) if input_mean is None else torch.as_tensor(input_mean, dtype=torch.float32)
        std = torch.ones(n) if input_std is None else torch.as_tensor(input_std, dtype=torch.float32)
        self.register_buffer("input_mean", mean)
        self.register_buffer("input_std", std.clamp_min(1e-8))

    @property
    def n_features(self) -> int:
        return self.n_params

    def features(self, u: torch.Tensor) -> torch.Tensor:
        return u  # (B, P)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.to(self.box.dtype)  # float64 callers (search) welcome
        return self.net((self.features(u) - self.input_mean) / self.input_std)  # (B, n_outputs)


class RegionalMLP(MLP):
    """The same MLP on the 3N + 1 regional values, normalised, in the order w, I, G, sigma."""

    @property
    def n_features(self) -> int:
        return 3 * self.n_regions + 1

    def features(self, u: torch.Tensor) -> torch.Tensor:
        w, I, G, sigma = normalised_regional(u, self.box, self.basis)  # (B, N), (B, N), (B,), (B, N)
        return torch.cat([w, I, G[:, None], sigma], dim=1)  # (B, 3N + 1)
