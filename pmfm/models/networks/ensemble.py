"""Deep ensembles: K independently initialised members of one network (spread = epistemic uncertainty).

Members draw their initial weights from torch's global RNG one after another, so a seeded caller gets
a reproducible ensemble whose members differ. ``forward`` stacks the members' raw outputs (K, B, n_out);
the LightningModule bounds them and reduces over K (mean and spread) as it needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pmfm.models.networks.gnn import GNN
from pmfm.models.networks.linearised import LinearisedMLP, feature_mlp
from pmfm.models.networks.mlp import RegionalMLP
from pmfm.models.networks.regional import Surrogate
from pmfm.models.networks.transformer import Transformer

MEMBERS: dict[str, Callable[..., Surrogate]] = {
    "mlp": feature_mlp,
    "mlp_regional": RegionalMLP,
    "mlp_lna": LinearisedMLP,
    "transformer": Transformer,
    "gnn": GNN,
}


class Ensemble(Surrogate):
    """K members of network ``member``; ``member_hparams`` pass through to each. u (B, P) -> (K, B, n_out)."""

    is_ensemble = True

    def __init__(self, n_outputs: int, box, basis, sc, member: str = "mlp", k: int = 5, **member_hparams):
        super().__init__(box, basis, sc)
        if member not in MEMBERS:
            raise ValueError(f"unknown ensemble member {member!r}; expected one of {', '.join(MEMBERS)}")
        if k < 1:
            raise ValueError(f"an ensemble needs k >= 1 members, got {k}")
        self.members = nn.ModuleList(
            MEMBERS[member](n_outputs, box, basis, sc, **member_hparams) for _ in range(k)
        )

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        outs = [m(u) if cond is None else m(u, cond) for m in self.members]  # K x (B, n_outputs)
        return torch.stack(outs)  # (K, B, n_outputs)
