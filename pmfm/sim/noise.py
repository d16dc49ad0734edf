"""Keyed, counter-based Gaussian noise for the simulators.

A simulation's noise depends only on (seed, key, step, region): its key is the sample's id
(independent mode), the repeat's index shared by all candidates (common random numbers,
docs/protocol.md#noise), or the noise is given outright (explicit mode, for tests). Results therefore never
depend on how a run is split over batches, chunks, processes or restarts.

The generator is SplitMix64 (Steele, Lea & Flood 2014) used as a counter-based hash: the 64-bit
state of counter c in stream k is ``base_k + (c + 1) * gamma`` and its output the SplitMix64
finaliser; ``base_k`` is itself the finaliser of the seed mixed with the key. Each output gives
two 32-bit uniforms and, by Box-Muller, the normals of two neighbouring regions of one step. The
Box-Muller runs in the simulation's precision. The
whole computation is vectorised int64 torch (wrapping multiplication, logical shifts by masking),
so it runs the same on any device and a fused kernel can reproduce it bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pmfm.sim.batching import GRAIN, LANES

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64 increment (golden ratio)
_M1 = 0xBF58476D1CE4E5B9  # finaliser multipliers (Stafford's mix 13)
_M2 = 0x94D049BB133111EB
_TWO_PI = 2.0 * math.pi


def _signed(x: int) -> int:
    """uint64 -> the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def _mix64_int(z: int) -> int:
    """SplitMix64 finaliser on Python ints (reference, and per-stream bases)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def stream_base(seed: int, key: int) -> int:
    """The 64-bit start of stream ``key`` under ``seed`` (as an int64 value)."""
    return _signed(_mix64_int(_mix64_int(seed) ^ ((key * _GAMMA) & _MASK64)))


def stream_bases(seed: int, keys: torch.Tensor) -> torch.Tensor:
    """``stream_base`` of every key at once, (K,) int64 -> (K,) int64 (same bits)."""
    keys = torch.as_tensor(keys, dtype=torch.int64)
    return _mix64(_signed(_mix64_int(seed)) ^ (keys * _signed(_GAMMA)))


def keyed_normals(
    seed: int,
    keys: torch.Tensor,
    step0: int,
    n_steps: int,
    n_regions: int,
    dtype=torch.float32,
    device=None,
) -> torch.Tensor:
    """Standard normals (n_steps, K, n_regions) for steps step0 .. step0+n_steps-1 of each key's stream."""
    device = torch.device(device) if device is not None else keys.device
    pairs = (n_regions + 1) // 2
    bases = stream_bases(seed, keys.cpu()).to(device)
    if device.type != "cpu":
        return _normals(bases, step0, n_steps, pairs, dtype)[..., :n_regions]
    # CPU: tiles of LANES whole steps at aligned positions and under GRAIN elements, so that each
    # value is computed by the same SIMD code whatever the batch (see pmfm.sim.batching)
    first = step0 // LANES * LANES
    last = -(-(step0 + n_steps) // LANES) * LANES
    key_tile = max(1, (GRAIN - 1) // (LANES * pairs))
    out = torch.empty((last - first, len(keys), 2 * pairs), dtype=dtype)
    for k0 in range(0, len(keys), key_tile):
        for t0 in range(first, last, LANES):
            out[t0 - first : t0 - first + LANES, k0 : k0 + key_tile] = _normals(
                bases[k0 : k0 + key_tile], t0, LANES, pairs, dtype
            )
    return out[step0 - first : step0 - first + n_steps, :, :n_regions]


def _normals(bases: torch.Tensor, step0: int, n_steps: int, pairs: int, dtype) -> torch.Tensor:
    """(n_steps, K, 2 * pairs) normals of the streams starting at ``bases`` (K,) int64."""
    device = bases.device
    steps = torch.arange(step0, step0 + n_steps, dtype=torch.int64, device=device)
    counter = steps[:, None, None] * pairs + torch.arange(pairs, device=device)  # (T, 1, P)
    normals = box_muller(bases[:, None] + (counter + 1) * _signed(_GAMMA), dtype)  # (T, K, P, 2)
    return normals.reshape(n_steps, len(bases), 2 * pairs)


def box_muller(position: torch.Tensor, dtype) -> torch.Tensor:
    """Two standard normals per stream position, (...) int64 -> (..., 2) of ``dtype``.

    The SplitMix64 output's high and low 32 bits are the uniforms u1 = (hi + 1) 2^-32 in (0, 1]
    and u2 = lo 2^-32 in [0, 1); the normals are sqrt(-2 ln u1) (cos, sin)(2 pi u2).
    """
    z = _mix64(position)  # wrapping int64
    hi = _shr(z, 32).to(dtype)
    lo = (z & 0xFFFFFFFF).to(dtype)
    radius = torch.log((hi + 1.0).mul_(2.0**-32)).mul_(-2.0).sqrt_()  # u1 in (0, 1]
    angle = lo.mul_(_TWO_PI * 2.0**-32)  # 2 pi u2, u2 in [0, 1)
    return torch.stack([radius * torch.cos(angle), radius.mul_(torch.sin(angle))], dim=-1)


def first_positions(bases: torch.Tensor, pairs: int) -> torch.Tensor:
    """(K, pairs) int64 stream positions of step 0: ``base + (p + 1) * gamma`` (wrapping)."""
    p = torch.arange(1, pairs + 1, dtype=torch.int64, device=bases.device)
    return bases[:, None] + p * _signed(_GAMMA)


def position_increment(pairs: int) -> int:
    """What one step adds to every stream position, as an int64 value (wrapping)."""
    return _signed(pairs * _GAMMA)


@dataclass(frozen=True)
class Noise:
    """Which noise drives a batch of simulations.

    - ``Noise.independent(seed, keys)``: simulation b gets its own stream ``keys[b]``
      (default keys: 0..B-1; pass sample ids to make results independent of batching).
    - ``Noise.common(seed, repeats)``: all candidates of repeat r share stream r (common random
      numbers); ``repeats[b]`` is simulation b's repeat index.
    - ``Noise.explicit(xi)``: a given (B or 1, N, steps) array of standard normals, warm-up first.
    """

    seed: int = 0
    keys: torch.Tensor | None = None  # (B,) int64 stream keys
    values: torch.Tensor | None = None  # (B or 1, N, total_steps) explicit normals
    mode: str = "independent"

    @classmethod
    def independent(cls, seed: int = 0, keys=None) -> Noise:
        return cls(seed=int(seed), keys=None if keys is None else torch.as_tensor(keys, dtype=torch.int64))

    @classmethod
    def common(cls, seed: int, repeats) -> Noise:
        return cls(seed=int(seed), keys=torch.as_tensor(repeats, dtype=torch.int64), mode="common")

    @classmethod
    def explicit(cls, values) -> Noise:
        return cls(values=torch.as_tensor(values), mode="explicit")

    def subset(self, index: slice, batch_size: int) -> Noise:
        """The noise of simulations ``index`` of a batch (keys stay attached to their simulation)."""
        if self.mode == "explicit":
            vals = self.explicit_values()
            return Noise(values=vals if vals.shape[0] == 1 else vals[index], mode="explicit")
        return Noise(seed=self.seed, keys=self.resolved_keys(batch_size)[index], mode=self.mode)

    def padded(self, extra: int) -> Noise:
        """This noise with ``extra`` more simulations that copy the last one's stream."""
        if extra == 0:
            return self
        if self.mode == "explicit":
            vals = self.explicit_values()
            if vals.shape[0] == 1:
                return self
            return Noise(values=torch.cat([vals, vals[-1:].expand(extra, -1, -1)]), mode="explicit")
        if self.keys is None:
            raise ValueError("resolve the keys (Noise.subset) before padding")
        keys = self.keys
        return Noise(seed=self.seed, keys=torch.cat([keys, keys[-1:].expand(extra)]), mode=self.mode)

    def explicit_values(self) -> torch.Tensor:
        if self.values is None:
            raise ValueError("this noise has no explicit values")
        return self.values

    def resolved_keys(self, batch_size: int) -> torch.Tensor:
        if self.keys is None:
            return torch.arange(batch_size, dtype=torch.int64)
        if len(self.keys) != batch_size:
            raise ValueError(f"noise has {len(self.keys)} keys for a batch of {batch_size} simulations")
        return self.keys

    def stream(self, batch_size: int, n_regions: int, total_steps: int, dtype, device) -> NoiseStream:
        return NoiseStream(self, batch_size, n_regions, total_steps, dtype, torch.device(device))


class NoiseStream:
    """Serves the (B, N) noise of each step in order, generating blocks of steps at a time."""

    BLOCK_ELEMENTS = 1 << 19  # normals per generated block (bounds memory, keeps it cache-friendly)

    def __init__(self, noise: Noise, batch_size: int, n_regions: int, total_steps: int, dtype, device):
        self.noise, self.n, self.total = noise, n_regions, total_steps
        self.dtype, self.device = dtype, device
        if noise.mode == "explicit":
            values = noise.explicit_values()
            if values.ndim != 3 or values.shape[0] not in (1, batch_size) or values.shape[1] != n_regions:
                raise ValueError(
                    f"explicit noise must be (B or 1, {n_regions}, steps), got {tuple(values.shape)}"
                )
            if values.shape[2] < total_steps:
                raise ValueError(
                    f"explicit noise covers {values.shape[2]} steps, the protocol needs {total_steps}"
                )
            self.values = values.to(device=device, dtype=dtype).expand(batch_size, -1, -1)
            return
        keys = noise.resolved_keys(batch_size)
        self.unique, self.inverse = torch.unique(keys, return_inverse=True)
        self.inverse = self.inverse.to(device)
        self.gather = not torch.equal(self.unique, keys)  # repeated or unsorted keys: index per block
        steps = self.BLOCK_ELEMENTS // (len(self.unique) * n_regions) // LANES * LANES
        self.block_steps = max(LANES, steps)  # a multiple of LANES: blocks start on aligned steps
        self.block_start = -1
        self.block: torch.Tensor | None = None

    def at(self, step: int) -> torch.Tensor:
        """Standard normals (B, N) for global step ``step`` (0 = first warm-up step)."""
        if self.noise.mode == "explicit":
            return self.values[:, :, step]
        if not (self.block_start <= step < self.block_start + self.block_steps) or self.block is None:
            self.block_start = step // self.block_steps * self.block_steps
            n_steps = min(self.block_steps, self.total - self.block_start)
            block = keyed_normals(
                self.noise.seed,
                self.unique,
                self.block_start,
                n_steps,
                self.n,
                self.dtype,
                self.device,
            )
            self.block = block  # (T, unique keys, N): repeated keys are gathered per step, not per block
        xi = self.block[step - self.block_start]
        return xi[self.inverse] if self.gather else xi
