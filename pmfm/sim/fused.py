"""The fused simulator (``simulator=mfm_fused``): the whole time loop in one Triton kernel.

Each program integrates a block of ``BLOCK_B`` simulations over all N regions (padded to a power of
two, ``NP``) from the first warm-up step to the last BOLD sample, with the state in registers:

- coupling ``C S`` as one (BLOCK_B, NP) x (NP, NP) tensor-core product per step (``precision``:
  ``"tf32x3"``, three TF32 products, about float32 accuracy, the default; ``"tf32"``, one TF32
  product; ``"ieee"``, plain float32 FMAs);
- the neural update, noise and Balloon in float32 registers, with H(x) evaluated stably at its
  removable singularity (a short series of y / expm1(y) for |y| < 0.5, the direct quotient beyond);
- the noise from the same counter-based SplitMix64 streams as ``pmfm.sim.noise`` (integer hashes
  bit for bit; Box-Muller through the GPU's fast transcendental functions, within a few float32
  ulps of the torch path), or read from an explicit (B or 1, N, steps) array for tests;
- BOLD written straight into the output at the kept samples; the neural trace is never stored.

Same model, protocol, order of updates and validity rule (every BOLD value finite) as the reference
Euler path (pmfm.sim.euler). Every simulation's arithmetic is independent of the others in its block,
so results do not depend on batch size. On a machine without CUDA the kernel runs under Triton's
interpreter when ``TRITON_INTERPRET=1`` is set before this module is imported (tests, tiny sizes).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from pmfm.params import RegionalParams
from pmfm.sim import balloon, dynamics
from pmfm.sim.noise import Noise, stream_bases
from pmfm.sim.protocol import SimProtocol

PRECISIONS = ("tf32x3", "tf32", "ieee")
BLOCK_B = 16  # simulations per program (a tensor-core tile needs at least 16 rows)
NUM_WARPS = 8  # measured fastest with BLOCK_B = 16 on an H100 (benchmarks/README.md)


def interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# the interpreter takes plain floats; compiled kernels read globals only as constexpr
_const = (lambda value: value) if interpreted() else tl.constexpr

# model constants as kernel compile-time constants (SPEC sections 2-3; units beside the torch originals)
_J = _const(dynamics.J)
_DA = _const(dynamics.D * dynamics.A)  # y = -d u = D*B - D*A*x
_DB = _const(dynamics.D * dynamics.B)
_INV_D = _const(1.0 / dynamics.D)
_NEG_INV_TAU_S = _const(-1.0 / dynamics.TAU_S)
_GAMMA_S = _const(dynamics.GAMMA)
_KAPPA = _const(balloon.KAPPA)
_GAMMA_H = _const(balloon.GAMMA_H)
_INV_TAU = _const(1.0 / balloon.TAU)
_INV_ALPHA = _const(1.0 / balloon.ALPHA)
_INV_RHO = _const(1.0 / balloon.RHO)
_LOG_1_MINUS_RHO = _const(math.log(1.0 - balloon.RHO))
_BOLD_SCALE = _const(balloon.BOLD_SCALE)
_K1 = _const(balloon.K1)
_K2 = _const(balloon.K2)
_K3 = _const(balloon.K3)
_TWO_PI_2M32 = _const(2.0 * math.pi * 2.0**-32)
_PI = _const(math.pi)
_MINUS_2_LN2 = _const(-2.0 * math.log(2.0))


@triton.jit
def _mix64(z):
    """SplitMix64 finaliser on uint64 (wrapping multiplication, logical shifts)."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit
def _approx(x, INSTRUCTION: tl.constexpr):
    """A PTX fast-math unit instruction (``sin``, ``cos``, ``lg2``) on float32."""
    return tl.inline_asm_elementwise(
        f"{INSTRUCTION}.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
    )


@triton.jit
def _normals(counter, BLOCK: tl.constexpr, NP: tl.constexpr, FAST: tl.constexpr):
    """(BLOCK, NP) standard normals from (BLOCK, NP/2) stream positions: pair p -> regions 2p, 2p+1.

    ``FAST``: the GPU's approximate sin, cos and log2 units (absolute errors near 1e-6 in a normal,
    far below anything the noise could show); else the accurate library functions.
    """
    z = _mix64(counter)
    hi = (z >> 32).to(tl.float32)
    lo = (z & 0xFFFFFFFF).to(tl.float32)
    u1 = (hi + 1.0) * 2.3283064365386963e-10  # (0, 1]
    angle = lo * _TWO_PI_2M32  # 2 pi u2 in [0, 2 pi)
    if FAST:
        radius = tl.sqrt(_approx(u1, "lg2") * _MINUS_2_LN2)
        centred = angle - _PI  # the approximate units are accurate on [-pi, pi]
        cos, sin = -_approx(centred, "cos"), -_approx(centred, "sin")
    else:
        radius = tl.sqrt(tl.log(u1) * -2.0)
        cos, sin = tl.cos(angle), tl.sin(angle)
    return tl.reshape(tl.join(radius * cos, radius * sin), (BLOCK, NP))


@triton.jit
def _rate_times_d(y):
    """d H(x) = y / expm1(y) with y = -d (a x - b): a series near 0, the quotient elsewhere."""
    y2 = y * y
    series = 1.0 - 0.5 * y + y2 * (1.0 / 12.0 - y2 * (1.0 / 720.0 - y2 * (1.0 / 30240.0 - y2 / 1209600.0)))
    return tl.where(tl.abs(y) < 0.5, series, y / (tl.exp(y) - 1.0))


@triton.jit
def _neural_step(s, counter, step, jw, jg, iext, scale, ct, xi_ptr, xi_off, xi_st, dt, gamma_step,
                 BLOCK: tl.constexpr, NP: tl.constexpr, EXPLICIT: tl.constexpr,
                 PRECISION: tl.constexpr, FAST: tl.constexpr):  # fmt: skip
    """One Euler-Maruyama step of S (B, NP) from the old S; returns (S, next stream positions)."""
    coupling = tl.dot(s, ct, input_precision=PRECISION)  # (B, NP) sum_j C_ij S_j
    x = jw * s + jg * coupling + iext
    h = _rate_times_d(_DB - _DA * x) * _INV_D  # Hz
    drift = s * _NEG_INV_TAU_S + _GAMMA_S * (1.0 - s) * h
    if EXPLICIT:
        xi = tl.load(xi_ptr + xi_off + step * xi_st)
    else:
        xi = _normals(counter, BLOCK, NP, FAST)
        counter += gamma_step
    return s + dt * drift + scale * xi, counter


@triton.jit
def _balloon_step(s, z, f, v, q, dt):
    """Balloon-Windkessel Euler step driven by the new S; all derivatives from the old state."""
    v_pow = tl.exp2(tl.log2(v) * _INV_ALPHA)  # v^(1/alpha), accurate log2: f - v_pow cancels
    extraction = 1.0 - tl.exp(_LOG_1_MINUS_RHO / f)  # 1 - (1 - rho)^(1/f)
    dz = s - _KAPPA * z - _GAMMA_H * (f - 1.0)
    dv = (f - v_pow) * _INV_TAU
    dq = (f * extraction * _INV_RHO - q * v_pow / v) * _INV_TAU
    return z + dt * dz, f + dt * z, v + dt * dv, q + dt * dq


@triton.jit
def _bold(v, q):
    return _BOLD_SCALE * (_K1 * (1.0 - q) + _K2 * (1.0 - q / v) + _K3 * (1.0 - v))


_SCALARS = ["n_sims", "n_regions", "warmup_steps", "n_full", "rest", "tr_steps", "burn_in", "n_tr", "pairs"]


@triton.jit(do_not_specialize=_SCALARS)  # one compiled kernel for every batch size and protocol
def _mfm_kernel(
    w_ptr, i_ptr, sigma_ptr, g_ptr,  # (B, N), (B, N), (B, N), (B,) float32
    ct_ptr,  # (N, N) float32, C transposed
    base_ptr,  # (B,) int64 stream bases
    xi_ptr, xi_sb, xi_sn, xi_st,  # explicit noise and its strides (batch stride 0 when shared)
    bold_ptr, s_ptr,  # (B, N, n_tr) float32 outputs
    n_sims, n_regions, warmup_steps, n_full, rest, tr_steps, burn_in, n_tr, pairs,
    dt, noise_coef, s0,
    BLOCK: tl.constexpr, NP: tl.constexpr, EXPLICIT: tl.constexpr, RECORD_S: tl.constexpr,
    PRECISION: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    rb = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) simulation index
    rn = tl.arange(0, NP)  # (NP,) region index
    bmask, nmask = rb < n_sims, rn < n_regions
    mask = bmask[:, None] & nmask[None, :]  # (BLOCK, NP)
    off = rb[:, None] * n_regions + rn[None, :]
    jw = _J * tl.load(w_ptr + off, mask=mask, other=0.0)
    iext = tl.load(i_ptr + off, mask=mask, other=0.0)
    scale = noise_coef * tl.load(sigma_ptr + off, mask=mask, other=0.0)  # padding gets no noise
    jg = _J * tl.load(g_ptr + rb, mask=bmask, other=0.0)[:, None]
    ct = tl.load(ct_ptr + rn[:, None] * n_regions + rn[None, :], mask=nmask[:, None] & nmask[None, :],
                 other=0.0)  # (NP, NP); padded rows and columns 0  # fmt: skip

    # stream position of pair p at step t: base + (t * pairs + p + 1) * gamma (pmfm.sim.noise)
    base = tl.load(base_ptr + rb, mask=bmask, other=0).to(tl.uint64, bitcast=True)
    rp = tl.arange(0, NP // 2).to(tl.uint64)
    counter = base[:, None] + (rp[None, :] + 1) * 0x9E3779B97F4A7C15  # (BLOCK, NP/2)
    gamma_step = pairs.to(tl.uint64) * 0x9E3779B97F4A7C15
    xi_off = tl.where(mask, rb[:, None].to(tl.int64) * xi_sb + rn[None, :] * xi_sn, 0)
    out_off = off.to(tl.int64) * n_tr

    s = tl.zeros((BLOCK, NP), dtype=tl.float32) + s0
    for t in range(0, warmup_steps):
        s, counter = _neural_step(s, counter, t, jw, jg, iext, scale, ct, xi_ptr, xi_off, xi_st, dt,
                                  gamma_step, BLOCK, NP, EXPLICIT, PRECISION, FAST)  # fmt: skip
    z = tl.zeros((BLOCK, NP), dtype=tl.float32)
    f = z + 1.0
    v = z + 1.0
    q = z + 1.0
    # BOLD sample k is taken after main step (k + 1) * tr_steps; one more after a final partial TR
    for k in range(0, n_full + (rest > 0)):
        first = warmup_steps + k * tr_steps
        length = rest + (k < n_full) * (tr_steps - rest)  # tr_steps, or rest for the last sample
        for t in range(first, first + length):
            s, counter = _neural_step(s, counter, t, jw, jg, iext, scale, ct, xi_ptr, xi_off, xi_st, dt,
                                      gamma_step, BLOCK, NP, EXPLICIT, PRECISION, FAST)  # fmt: skip
            z, f, v, q = _balloon_step(s, z, f, v, q, dt)
        if k >= burn_in:
            tl.store(bold_ptr + out_off + (k - burn_in), _bold(v, q), mask=mask)
            if RECORD_S:
                tl.store(s_ptr + out_off + (k - burn_in), s, mask=mask)


def integrate_fused(
    params: RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: Noise,
    *,
    record_s: bool = False,
    precision: str = "tf32x3",
    block: int = BLOCK_B,
    num_warps: int = NUM_WARPS,
) -> dict[str, torch.Tensor]:
    """Integrate a batch in one kernel launch; returns ``bold`` (B, N, n_tr) and, if asked, ``s``.

    ``params`` (float32, on the kernel's device), ``c`` the normalised coupling matrix (N, N),
    ``noise`` keyed (independent or common streams, as the reference path draws them) or explicit.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"simulator.precision={precision!r}; expected one of {PRECISIONS}")
    device = params.w.device
    if device.type != "cuda" and not interpreted():
        raise RuntimeError(
            "simulator=mfm_fused needs a CUDA device (or TRITON_INTERPRET=1 for tiny CPU tests); "
            "use simulator=mfm_euler on the CPU"
        )
    if params.w.dtype != torch.float32:
        raise ValueError(f"simulator=mfm_fused integrates in float32, got {params.w.dtype}")
    bsz, n = params.w.shape
    npad = max(16, triton.next_power_of_2(n))
    total = protocol.total_steps
    if noise.mode == "explicit":
        xi = noise.explicit_values().to(device=device, dtype=torch.float32)
        if xi.ndim != 3 or xi.shape[0] not in (1, bsz) or xi.shape[1] != n or xi.shape[2] < total:
            raise ValueError(f"explicit noise must be (B or 1, {n}, >= {total}), got {tuple(xi.shape)}")
        xi_strides = (0 if xi.shape[0] == 1 else xi.stride(0), xi.stride(1), xi.stride(2))
        bases = torch.zeros(bsz, dtype=torch.int64, device=device)
    else:
        xi, xi_strides = torch.zeros(1, device=device), (0, 0, 0)
        bases = stream_bases(noise.seed, noise.resolved_keys(bsz)).to(device)
    bold = torch.empty((bsz, n, protocol.n_tr), dtype=torch.float32, device=device)  # (B, N, T)
    s_out = torch.empty_like(bold) if record_s else bold
    n_full, rest = divmod(protocol.main_steps, protocol.tr_steps)
    grid = (triton.cdiv(bsz, block),)
    _mfm_kernel[grid](
        params.w.contiguous(), params.I.contiguous(), params.sigma.contiguous(), params.G.contiguous(),
        c.T.contiguous().to(torch.float32), bases, xi, *xi_strides, bold, s_out,
        bsz, n, protocol.warmup_steps, n_full, rest, protocol.tr_steps, protocol.burn_in_samples,
        protocol.n_tr, (n + 1) // 2, protocol.dt, math.sqrt(protocol.dt / dynamics.SIGMA_UNIT),
        dynamics.S0, BLOCK=block, NP=npad, EXPLICIT=noise.mode == "explicit", RECORD_S=record_s,
        PRECISION=precision, FAST=not interpreted(), num_warps=num_warps,
    )  # fmt: skip
    out = {"bold": bold}
    if record_s:
        out["s"] = s_out
    return out
