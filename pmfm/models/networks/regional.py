"""Coefficients -> regional maps, differentiably, shared by the surrogate networks.

See docs/parameters.md#coefficients-and-maps and docs/surrogates.md.

Every network takes ``u`` (B, P), the normalised [0, 1] coordinates of the parameter box that sampling,
search and the surrogate share (``pmfm.params.ParamSpace.box``): ``raw = box[:, 0] + u * (box[:, 1] -
box[:, 0])``. With P = 10 the raw values are the coefficients, expanded through the basis
``[1, myelin, gradient]`` exactly as ``ParamSpace.regional`` does; with P = 3N + 1 they are the regional
values themselves (order w, I, G, sigma). ``normalise`` rescales regional values by the pMFM bounds, so
feasible values land in [0, 1]; infeasible ones fall outside and the networks see them as they are.

SC enters as a fixed (N, N) matrix (``coupling``): ``"linear"`` is SC / max(SC), the simulator's
C = 0.2 SC / max(SC) divided by 0.2; ``"log1p"`` is log1p(SC) / log1p(max SC), which spreads the
heavy-tailed streamline counts over [0, 1]. Networks scale it by G / 10 (G over its upper bound).
"""

from __future__ import annotations

import torch
from torch import nn

from pmfm.params import Bounds

BOUNDS = Bounds()  # the pMFM regional bounds (w, I, G, sigma)
SC_TRANSFORMS = ("linear", "log1p")


def expand(
    u: torch.Tensor, box: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised (B, P) -> raw regional values (w (B, N), I (B, N), G (B,), sigma (B, N))."""
    raw = box[:, 0] + u * (box[:, 1] - box[:, 0])  # (B, P)
    n = basis.shape[0]
    if raw.shape[1] == 10:  # coefficients [w0, w1, w2, I0, I1, I2, G, s0, s1, s2]
        return raw[:, 0:3] @ basis.T, raw[:, 3:6] @ basis.T, raw[:, 6], raw[:, 7:10] @ basis.T
    if raw.shape[1] == 3 * n + 1:  # regional values w, I, G, sigma
        return raw[:, :n], raw[:, n : 2 * n], raw[:, 2 * n], raw[:, 2 * n + 1 :]
    raise ValueError(f"expected u of shape (B, 10) or (B, {3 * n + 1}) for {n} regions, got {tuple(u.shape)}")


def normalise(
    w: torch.Tensor, I: torch.Tensor, G: torch.Tensor, sigma: torch.Tensor, bounds: Bounds = BOUNDS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw regional values -> (value - low) / (high - low) per map; feasible values land in [0, 1]."""

    def unit(x: torch.Tensor, lo_hi: tuple[float, float]) -> torch.Tensor:
        return (x - lo_hi[0]) / (lo_hi[1] - lo_hi[0])

    return unit(w, bounds.w), unit(I, bounds.I), unit(G, bounds.G), unit(sigma, bounds.sigma)


def normalised_regional(
    u: torch.Tensor, box: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised coordinates (B, P) -> regional values rescaled to ~[0, 1] by the pMFM bounds."""
    return normalise(*expand(u, box, basis))


def coupling(sc: torch.Tensor, transform: str) -> torch.Tensor:
    """Fixed (N, N) coupling in [0, 1] from raw SC: ``"linear"`` SC / max, ``"log1p"`` log-scaled."""
    if transform == "linear":
        return sc / sc.max()
    if transform == "log1p":
        return torch.log1p(sc) / torch.log1p(sc.max())
    raise ValueError(f"unknown sc_transform {transform!r}; expected one of {', '.join(SC_TRANSFORMS)}")


def g_scale(G: torch.Tensor) -> torch.Tensor:
    """Global coupling over its upper bound, (B,) in [0.1, 1]: the factor on the coupling matrix."""
    return G / BOUNDS.G[1]


def in_chunks(fn, chunk: int, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` over the batch in chunks of ``chunk`` rows on CPU, concatenated.

    The same numbers as one call; on CPU the per-region networks run 2-4x faster at batch 10,000 in
    cache-sized chunks. Off CPU, or with ``chunk <= 0``, one call.
    """
    first = tensors[0]
    if first.device.type != "cpu" or chunk <= 0 or first.shape[0] <= chunk:
        return fn(*tensors)
    return torch.cat([fn(*parts) for parts in zip(*(t.split(chunk) for t in tensors), strict=True)])


class Surrogate(nn.Module):
    """Base of the surrogate networks: holds box (P, 2), basis (N, 3) and raw SC (N, N) as buffers."""

    is_ensemble = False
    box: torch.Tensor  # (P, 2) buffer
    basis: torch.Tensor  # (N, 3) buffer
    sc: torch.Tensor  # (N, N) buffer, raw

    def __init__(self, box, basis, sc):
        super().__init__()
        self.register_buffer("box", torch.as_tensor(box, dtype=torch.float32))  # (P, 2)
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32))  # (N, 3)
        self.register_buffer("sc", torch.as_tensor(sc, dtype=torch.float32))  # (N, N)
        n = self.basis.shape[0]
        if self.box.ndim != 2 or self.box.shape[1] != 2 or self.box.shape[0] not in (10, 3 * n + 1):
            raise ValueError(
                f"box must be (10, 2) or ({3 * n + 1}, 2) for {n} regions, got {tuple(self.box.shape)}"
            )
        if self.basis.ndim != 2 or self.basis.shape[1] != 3:
            raise ValueError(f"basis must be (N, 3) = [1, myelin, gradient], got {tuple(self.basis.shape)}")
        if self.sc.shape != (n, n):
            raise ValueError(f"sc must be ({n}, {n}) to match the basis, got {tuple(self.sc.shape)}")

    @property
    def n_regions(self) -> int:
        return int(self.basis.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.box.shape[0])
