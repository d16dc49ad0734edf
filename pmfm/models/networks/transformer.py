"""DELSSOME-style transformer surrogate (Zeng et al., Nature Methods 2026; docs/surrogates.md).

One token per region holds (w_i, I_i, sigma_i), normalised by the pMFM bounds, and row i of G * C
(``C = coupling(sc, sc_transform)``, G scaled by 1/10), so G enters through the coupling row. The
3 + N features are embedded linearly to ``width``; a learned region embedding marks position and a
learned class token is prepended. A pre-norm ``nn.TransformerEncoder`` mixes the N + 1 tokens and the
head reads the class token. With ``condition`` (a vector, e.g. :func:`pmfm.models.conditioning.
empirical_condition` of the training data: FC upper triangle and FCD CDF), or ``cond_dim > 0``, a
conditioning vector is embedded by a small MLP and concatenated with the class token before the
head, so one network can serve several subjects or groups: ``forward(u, cond)`` scores against
``cond`` (B, cond_dim), and without it against the stored ``condition``.
"""

from __future__ import annotations

import torch
from torch import nn

from pmfm.models.networks.mlp import activation, mlp_stack
from pmfm.models.networks.regional import Surrogate, coupling, expand, g_scale, in_chunks, normalise


class Transformer(Surrogate):
    """u (B, P) [, cond (B, cond_dim)] -> (B, n_outputs)."""

    coupling_matrix: torch.Tensor  # (N, N) buffer, C in [0, 1]

    def __init__(
        self,
        n_outputs: int,
        box,
        basis,
        sc,
        layers: int = 4,
        heads: int = 8,
        width: int = 64,
        dropout: float = 0.0,
        ff_mult: int = 4,
        cond_dim: int = 0,
        condition=None,
        sc_transform: str = "log1p",
        chunk: int = 128,
    ):
        super().__init__(box, basis, sc)
        n = self.n_regions
        if condition is not None:
            condition = torch.as_tensor(condition, dtype=torch.float32).flatten()  # (cond_dim,)
            if cond_dim not in (0, len(condition)):
                raise ValueError(f"cond_dim={cond_dim} but the condition holds {len(condition)} values")
            cond_dim = len(condition)
        self.cond_dim = cond_dim
        self.condition: torch.Tensor | None
        self.register_buffer("condition", condition)  # (cond_dim,) the default condition, or None
        self.chunk = chunk  # CPU batch chunk (see regional.in_chunks); 0 for one call
        self.register_buffer("coupling_matrix", coupling(self.sc, sc_transform))  # (N, N)
        self.embed_local = nn.Linear(3, width)  # (w_i, I_i, sigma_i) -> width
        self.embed_coupling = nn.Linear(n, width, bias=False)  # row i of G * C -> width
        self.region = nn.Parameter(0.02 * torch.randn(1, n, width))  # learned positional embedding
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, width))  # learned class token
        layer = nn.TransformerEncoderLayer(
            width, heads, ff_mult * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.cond = mlp_stack(cond_dim, width, width, depth=1) if cond_dim > 0 else None
        head_in = 2 * width if cond_dim > 0 else width
        self.head = nn.Sequential(nn.Linear(head_in, width), activation("gelu"), nn.Linear(width, n_outputs))

    def tokens(self, u: torch.Tensor) -> torch.Tensor:
        """(B, N + 1, width): the class token, then one token per region."""
        u = u.to(self.box.dtype)  # float64 callers (search) welcome
        w, I, G, sigma = expand(u, self.box, self.basis)
        wn, In, _, sn = normalise(w, I, G, sigma)
        local = torch.stack([wn, In, sn], dim=-1)  # (B, N, 3)
        # the linear embedding of row i of g * C is g * (C W^T)_i: one (N, width) product per batch
        rows = self.embed_coupling(self.coupling_matrix)  # (N, width)
        x = self.embed_local(local) + g_scale(G)[:, None, None] * rows + self.region  # (B, N, width)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N + 1, width)

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None and self.condition is not None:
            cond = self.condition
        if cond is not None and cond.ndim == 1:
            cond = cond.expand(u.shape[0], -1)  # one condition for every row
        if self.cond is not None and cond is None:
            raise ValueError(f"this transformer is conditioned: pass cond (B, {self.cond_dim})")
        if self.cond is None and cond is not None:
            raise ValueError("cond given but this transformer was built with cond_dim=0")
        if cond is not None and cond.shape != (u.shape[0], self.cond_dim):
            raise ValueError(
                f"cond must be ({self.cond_dim},) or (B, {self.cond_dim}) with B = {u.shape[0]}, "
                f"got {tuple(cond.shape)}"
            )
        if cond is None:
            return in_chunks(self._forward, self.chunk, u)
        return in_chunks(self._forward, self.chunk, u, cond.to(device=u.device, dtype=self.box.dtype))

    def _forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(self.tokens(u))[:, 0]  # (B, width), the class token
        if self.cond is not None:
            h = torch.cat([h, self.cond(cond)], dim=-1)  # (B, 2 width): fused with the condition
        return self.head(h)  # (B, n_outputs)
