"""Message passing over the SC graph in plain torch (no graph library).

Node i holds (w_i, I_i, sigma_i, G), normalised by the pMFM bounds, embedded to ``width``. Each layer
is a pre-norm residual update ``h <- h + MLP([x, g * A @ x])`` with ``x = LayerNorm(h)``, ``g = G / 10``
and ``A = C / mean_i(sum_j C_ij)``, ``C = coupling(sc, sc_transform)``: the coupling itself (as in the
simulator's input ``G * sum_j C_ij S_j``, keeping each region's strength), scaled so that an average
row sums to 1. Mean and max pooling over regions feed an MLP head.
"""

from __future__ import annotations

import torch
from torch import nn

from pmfm.models.networks.mlp import activation as make_activation
from pmfm.models.networks.regional import Surrogate, coupling, expand, g_scale, in_chunks, normalise


class MessagePassing(nn.Module):
    """One residual layer ``h <- h + MLP([x, g * A @ x])``, x = LayerNorm(h).

    The MLP's first Linear on the concatenation is split into its two blocks, ``x W_s + g A (x W_m)``
    (the same map, no (B, N, 2W) concatenation, and A applied after the projection).
    """

    def __init__(self, width: int, act: str = "gelu"):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.self_in = nn.Linear(width, width)  # the block of the first Linear acting on x
        self.message_in = nn.Linear(width, width, bias=False)  # ... and on g * A @ x
        self.out = nn.Sequential(make_activation(act), nn.Linear(width, width))

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)  # (N, B, W), node-major so that A @ x is one (N, N) x (N, B W) product
        n, b, w = x.shape
        message = (adjacency @ self.message_in(x).reshape(n, b * w)).reshape(n, b, w)  # (N, B, W)
        return h + self.out(self.self_in(x) + g[:, None] * message)


class GNN(Surrogate):
    """u (B, P) -> (B, n_outputs) by message passing over the fixed SC graph."""

    adjacency: torch.Tensor  # (N, N) buffer, A = C / mean row sum

    def __init__(
        self,
        n_outputs: int,
        box,
        basis,
        sc,
        layers: int = 3,
        width: int = 64,
        activation: str = "gelu",
        sc_transform: str = "linear",
        chunk: int = 128,
    ):
        super().__init__(box, basis, sc)
        self.chunk = chunk  # CPU batch chunk (see regional.in_chunks); 0 for one call
        c = coupling(self.sc, sc_transform)  # (N, N)
        self.register_buffer("adjacency", c / c.sum(dim=1).mean())  # (N, N), mean row sum 1
        self.embed = nn.Linear(4, width)  # (w_i, I_i, sigma_i, G) -> width
        self.layers = nn.ModuleList(MessagePassing(width, activation) for _ in range(layers))
        self.head = nn.Sequential(
            nn.LayerNorm(2 * width),
            nn.Linear(2 * width, width),
            make_activation(activation),
            nn.Linear(width, n_outputs),
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return in_chunks(self._forward, self.chunk, u)

    def _forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.to(self.box.dtype)  # float64 callers (search) welcome
        w, I, G, sigma = expand(u, self.box, self.basis)
        wn, In, Gn, sn = normalise(w, I, G, sigma)
        nodes = torch.stack([wn.T, In.T, sn.T, Gn.expand_as(wn.T)], dim=-1)  # (N, B, 4)
        h = self.embed(nodes)  # (N, B, W)
        g = g_scale(G)  # (B,)
        for layer in self.layers:
            h = layer(h, self.adjacency, g)
        pooled = torch.cat([h.mean(dim=0), h.amax(dim=0)], dim=-1)  # (B, 2W)
        return self.head(pooled)  # (B, n_outputs)
