"""The fused simulator (``simulator=mfm_fused``): the whole time loop in one Triton kernel.

Each program integrates a block of simulations over all N regions from the first warm-up step to the
last BOLD sample, with the state in registers. Triton tensors have power-of-two shapes, so there are
two layouts of the region axis:

- ``split`` (large batches, 64 simulations a program): two tiles (``region_tiles``: 68 = 64 + 16,
  12 padded lanes), the coupling as four tensor-core products of the 2 x 2 blocks of C;
- ``wide`` (small batches, 16 a program, so that more multiprocessors get work): one 128-wide tile
  (60 padded lanes), one product.

In both:

- the coupling product's ``precision``: ``"tf32"`` (one TF32 tensor-core product, the default:
  cost distributions match the float32 reference path, see tests/test_fused.py), ``"tf32x3"``
  (three TF32 products, float32 accuracy: the published step vectors to the float32 path's own
  error) or ``"ieee"`` (float32 FMAs);
- the neural update, noise and Balloon in float32 registers, with H(x) evaluated stably at its
  removable singularity (a short series of y / expm1(y) for |y| < 0.5, the direct quotient beyond);
- the noise from the same counter-based SplitMix64 streams as ``pmfm.sim.noise`` (integer hashes
  bit for bit; Box-Muller through the GPU's approximate sin, cos and log2 units, about 1e-6 from
  the torch path), or read from an explicit (B or 1, N, steps) array for tests;
- BOLD written straight into the output at the kept samples; the neural trace is never stored.

Same model, protocol, order of updates and validity rule (every BOLD value finite) as the reference
Euler path (pmfm.sim.euler). Every simulation's arithmetic is independent of the others in its block,
so results do not depend on batch size within a layout. On a machine without CUDA the kernel runs
under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before triton is first imported (tests,
tiny sizes).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from pmfm.params import RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.sim.noise import Noise, stream_bases
from pmfm.sim.protocol import SimProtocol

PRECISIONS = ("tf32x3", "tf32", "ieee")
# (simulations per program, warps per program) of each layout, measured fastest on an H100 at
# batch 15,000 (split) and 1,500 (wide) by benchmarks/tune_fused.py (benchmarks/README.md)
LAUNCH = {"split": (64, 8), "wide": (16, 8)}
LAYOUTS = ("auto", "split", "wide")


def interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# the interpreter takes plain floats; compiled kernels read globals only as constexpr
_const = (lambda value: value) if interpreted() else tl.constexpr

# model constants as kernel compile-time constants (docs/model.md#constants,
# docs/haemodynamics.md#constants; units beside the torch originals)
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
def _normals(counter, BLOCK: tl.constexpr, NT: tl.constexpr, FAST: tl.constexpr):
    """(BLOCK, NT) standard normals from (BLOCK, NT/2) stream positions: pair p -> regions 2p, 2p+1.

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
    return tl.reshape(tl.join(radius * cos, radius * sin), (BLOCK, NT))


@triton.jit
def _rate_times_d(y):
    """d H(x) = y / expm1(y) with y = -d (a x - b): a series near 0, the quotient elsewhere."""
    y2 = y * y
    series = 1.0 - 0.5 * y + y2 * (1.0 / 12.0 - y2 * (1.0 / 720.0 - y2 * (1.0 / 30240.0 - y2 / 1209600.0)))
    return tl.where(tl.abs(y) < 0.5, series, y / (tl.exp(y) - 1.0))


@triton.jit
def _neural_update(s, coupling, jw, jg, iext, scale, xi, dt):
    """S after one Euler-Maruyama step from the old S and its coupling input sum_j C_ij S_j."""
    x = jw * s + jg * coupling + iext
    h = _rate_times_d(_DB - _DA * x) * _INV_D  # Hz
    return s + dt * (s * _NEG_INV_TAU_S + _GAMMA_S * (1.0 - s) * h) + scale * xi


@triton.jit
def _draw(counter, step, xi_ptr, xi_off, xi_st, gamma_step,
          BLOCK: tl.constexpr, NT: tl.constexpr, EXPLICIT: tl.constexpr, FAST: tl.constexpr):  # fmt: skip
    """A tile's standard normals for ``step`` and the next stream positions."""
    if EXPLICIT:
        xi = tl.load(xi_ptr + xi_off + step * xi_st)
    else:
        xi = _normals(counter, BLOCK, NT, FAST)
        counter += gamma_step
    return xi, counter


@triton.jit
def _neural_step(sa, sb, ca, cb, step, jwa, jwb, jg, ia, ib, scale_a, scale_b, ct_aa, ct_ab, ct_ba, ct_bb,
                 xi_ptr, xoff_a, xoff_b, xi_st, dt, gamma_step, BLOCK: tl.constexpr, NA: tl.constexpr,
                 NB: tl.constexpr, EXPLICIT: tl.constexpr, PRECISION: tl.constexpr,
                 FAST: tl.constexpr):  # fmt: skip
    """One step of both region tiles: coupling from the old S of all regions, then the updates."""
    coup_a = tl.dot(sb, ct_ba, acc=tl.dot(sa, ct_aa, input_precision=PRECISION), input_precision=PRECISION)
    coup_b = tl.dot(sb, ct_bb, acc=tl.dot(sa, ct_ab, input_precision=PRECISION), input_precision=PRECISION)
    xa, ca = _draw(ca, step, xi_ptr, xoff_a, xi_st, gamma_step, BLOCK, NA, EXPLICIT, FAST)
    xb, cb = _draw(cb, step, xi_ptr, xoff_b, xi_st, gamma_step, BLOCK, NB, EXPLICIT, FAST)
    sa = _neural_update(sa, coup_a, jwa, jg, ia, scale_a, xa, dt)
    sb = _neural_update(sb, coup_b, jwb, jg, ib, scale_b, xb, dt)
    return sa, sb, ca, cb


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


@triton.jit
def _tile(w_ptr, i_ptr, sigma_ptr, base, rb, bmask, n_regions, n_tr, noise_coef, xi_sb, xi_sn,
          R0: tl.constexpr, NT: tl.constexpr):  # fmt: skip
    """Constants of the region tile [R0, R0 + NT) of a block: mask, output offsets, J w, I, noise
    amplitude (0 on padding), first stream positions and explicit-noise offsets."""
    rn = R0 + tl.arange(0, NT)
    mask = bmask[:, None] & (rn < n_regions)[None, :]  # (BLOCK, NT)
    off = rb[:, None] * n_regions + rn[None, :]
    jw = _J * tl.load(w_ptr + off, mask=mask, other=0.0)
    iext = tl.load(i_ptr + off, mask=mask, other=0.0)
    scale = noise_coef * tl.load(sigma_ptr + off, mask=mask, other=0.0)
    # stream position of pair p at step t: base + (t * pairs + p + 1) * gamma (pmfm.sim.noise)
    pair = (R0 // 2 + tl.arange(0, NT // 2)).to(tl.uint64)
    counter = base[:, None] + (pair[None, :] + 1) * 0x9E3779B97F4A7C15  # (BLOCK, NT/2)
    xi_off = tl.where(mask, rb[:, None].to(tl.int64) * xi_sb + rn[None, :] * xi_sn, 0)
    return mask, off.to(tl.int64) * n_tr, jw, iext, scale, counter, xi_off


@triton.jit
def _ct_block(ct_ptr, n_regions, R0: tl.constexpr, NR: tl.constexpr, C0: tl.constexpr, NC: tl.constexpr):
    """C^T[R0:R0+NR, C0:C0+NC], zero outside the N x N matrix."""
    rows = R0 + tl.arange(0, NR)
    cols = C0 + tl.arange(0, NC)
    mask = (rows < n_regions)[:, None] & (cols < n_regions)[None, :]
    return tl.load(ct_ptr + rows[:, None] * n_regions + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store(bold_ptr, s_ptr, out_off, column, mask, s, v, q, RECORD_S: tl.constexpr):
    tl.store(bold_ptr + out_off + column, _bold(v, q), mask=mask)
    if RECORD_S:
        tl.store(s_ptr + out_off + column, s, mask=mask)


@triton.jit(do_not_specialize=_SCALARS)  # one compiled kernel for every batch size and protocol
def _mfm_kernel_split(
    w_ptr, i_ptr, sigma_ptr, g_ptr,  # (B, N), (B, N), (B, N), (B,) float32
    ct_ptr,  # (N, N) float32, C transposed
    base_ptr,  # (B,) int64 stream bases
    xi_ptr, xi_sb, xi_sn, xi_st,  # explicit noise and its strides (batch stride 0 when shared)
    bold_ptr, s_ptr,  # (B, N, n_tr) float32 outputs
    n_sims, n_regions, warmup_steps, n_full, rest, tr_steps, burn_in, n_tr, pairs,
    dt, noise_coef, s0,
    BLOCK: tl.constexpr, NA: tl.constexpr, NB: tl.constexpr, EXPLICIT: tl.constexpr,
    RECORD_S: tl.constexpr, PRECISION: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    # regions in two tiles, [0, NA) and [NA, NA + NB)
    rb = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) simulation index
    bmask = rb < n_sims
    base = tl.load(base_ptr + rb, mask=bmask, other=0).to(tl.uint64, bitcast=True)
    mask_a, out_a, jwa, ia, scale_a, ca, xoff_a = _tile(
        w_ptr, i_ptr, sigma_ptr, base, rb, bmask, n_regions, n_tr, noise_coef, xi_sb, xi_sn, 0, NA
    )
    mask_b, out_b, jwb, ib, scale_b, cb, xoff_b = _tile(
        w_ptr, i_ptr, sigma_ptr, base, rb, bmask, n_regions, n_tr, noise_coef, xi_sb, xi_sn, NA, NB
    )
    jg = _J * tl.load(g_ptr + rb, mask=bmask, other=0.0)[:, None]  # (BLOCK, 1)
    ct_aa = _ct_block(ct_ptr, n_regions, 0, NA, 0, NA)
    ct_ab = _ct_block(ct_ptr, n_regions, 0, NA, NA, NB)
    ct_ba = _ct_block(ct_ptr, n_regions, NA, NB, 0, NA)
    ct_bb = _ct_block(ct_ptr, n_regions, NA, NB, NA, NB)
    gamma_step = pairs.to(tl.uint64) * 0x9E3779B97F4A7C15

    sa = tl.zeros((BLOCK, NA), dtype=tl.float32) + s0
    sb = tl.zeros((BLOCK, NB), dtype=tl.float32) + s0
    for t in range(0, warmup_steps):
        sa, sb, ca, cb = _neural_step(
            sa, sb, ca, cb, t, jwa, jwb, jg, ia, ib, scale_a, scale_b, ct_aa, ct_ab, ct_ba, ct_bb,
            xi_ptr, xoff_a, xoff_b, xi_st, dt, gamma_step, BLOCK, NA, NB, EXPLICIT, PRECISION, FAST
        )  # fmt: skip
    za = tl.zeros((BLOCK, NA), dtype=tl.float32)
    fa, va, qa = za + 1.0, za + 1.0, za + 1.0
    zb = tl.zeros((BLOCK, NB), dtype=tl.float32)
    fb, vb, qb = zb + 1.0, zb + 1.0, zb + 1.0
    # BOLD sample k is taken after main step (k + 1) * tr_steps; one more after a final partial TR
    for k in range(0, n_full + (rest > 0)):
        first = warmup_steps + k * tr_steps
        length = rest + (k < n_full) * (tr_steps - rest)  # tr_steps, or rest for the last sample
        for t in range(first, first + length):
            sa, sb, ca, cb = _neural_step(
                sa, sb, ca, cb, t, jwa, jwb, jg, ia, ib, scale_a, scale_b, ct_aa, ct_ab, ct_ba, ct_bb,
                xi_ptr, xoff_a, xoff_b, xi_st, dt, gamma_step, BLOCK, NA, NB, EXPLICIT, PRECISION, FAST
            )  # fmt: skip
            za, fa, va, qa = _balloon_step(sa, za, fa, va, qa, dt)
            zb, fb, vb, qb = _balloon_step(sb, zb, fb, vb, qb, dt)
        if k >= burn_in:
            _store(bold_ptr, s_ptr, out_a, k - burn_in, mask_a, sa, va, qa, RECORD_S)
            _store(bold_ptr, s_ptr, out_b, k - burn_in, mask_b, sb, vb, qb, RECORD_S)


@triton.jit(do_not_specialize=_SCALARS)
def _mfm_kernel_wide(
    w_ptr, i_ptr, sigma_ptr, g_ptr, ct_ptr, base_ptr, xi_ptr, xi_sb, xi_sn, xi_st, bold_ptr, s_ptr,
    n_sims, n_regions, warmup_steps, n_full, rest, tr_steps, burn_in, n_tr, pairs,
    dt, noise_coef, s0,
    BLOCK: tl.constexpr, NP: tl.constexpr, EXPLICIT: tl.constexpr, RECORD_S: tl.constexpr,
    PRECISION: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    """The same loop with all regions in one NP-wide tile: faster when there are few blocks."""
    rb = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) simulation index
    bmask = rb < n_sims
    base = tl.load(base_ptr + rb, mask=bmask, other=0).to(tl.uint64, bitcast=True)
    mask, out_off, jw, iext, scale, counter, xi_off = _tile(
        w_ptr, i_ptr, sigma_ptr, base, rb, bmask, n_regions, n_tr, noise_coef, xi_sb, xi_sn, 0, NP
    )
    jg = _J * tl.load(g_ptr + rb, mask=bmask, other=0.0)[:, None]  # (BLOCK, 1)
    ct = _ct_block(ct_ptr, n_regions, 0, NP, 0, NP)  # (NP, NP)
    gamma_step = pairs.to(tl.uint64) * 0x9E3779B97F4A7C15

    s = tl.zeros((BLOCK, NP), dtype=tl.float32) + s0
    for t in range(0, warmup_steps):
        xi, counter = _draw(counter, t, xi_ptr, xi_off, xi_st, gamma_step, BLOCK, NP, EXPLICIT, FAST)
        s = _neural_update(s, tl.dot(s, ct, input_precision=PRECISION), jw, jg, iext, scale, xi, dt)
    z = tl.zeros((BLOCK, NP), dtype=tl.float32)
    f, v, q = z + 1.0, z + 1.0, z + 1.0
    for k in range(0, n_full + (rest > 0)):
        first = warmup_steps + k * tr_steps
        length = rest + (k < n_full) * (tr_steps - rest)
        for t in range(first, first + length):
            xi, counter = _draw(counter, t, xi_ptr, xi_off, xi_st, gamma_step, BLOCK, NP, EXPLICIT, FAST)
            s = _neural_update(s, tl.dot(s, ct, input_precision=PRECISION), jw, jg, iext, scale, xi, dt)
            z, f, v, q = _balloon_step(s, z, f, v, q, dt)
        if k >= burn_in:
            _store(bold_ptr, s_ptr, out_off, k - burn_in, mask, s, v, q, RECORD_S)


def region_tiles(n: int) -> tuple[int, int]:
    """Widths (NA, NB) of the two power-of-two region tiles covering n regions with least padding.

    NA is the largest power of two below n (at least 16, the smallest tensor-core tile), NB the
    smallest power of two (at least 16) covering the rest: 68 -> (64, 16), 100 -> (64, 64),
    200 -> (128, 128), 16 -> (16, 16).
    """
    na = max(16, triton.next_power_of_2(n) // 2)
    return na, max(16, triton.next_power_of_2(max(1, n - na)))


def choose_layout(layout: str, batch: int, device: torch.device) -> str:
    """``auto``: ``split`` when the batch gives every multiprocessor a 64-simulation program."""
    if layout not in LAYOUTS:
        raise ValueError(f"fused kernel layout {layout!r}; expected one of {LAYOUTS}")
    if layout != "auto":
        return layout
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return "split" if triton.cdiv(batch, LAUNCH["split"][0]) >= sms else "wide"


def integrate_fused(
    params: RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: Noise,
    *,
    record_s: bool = False,
    precision: str = "tf32",
    layout: str = "auto",
    block: int | None = None,
    num_warps: int | None = None,
) -> dict[str, torch.Tensor]:
    """Integrate a batch in one kernel launch; returns ``bold`` (B, N, n_tr) and, if asked, ``s``.

    ``params`` (float32, on the kernel's device), ``c`` the normalised coupling matrix (N, N),
    ``noise`` keyed (independent or common streams, as the reference path draws them) or explicit.
    ``layout``: ``"split"`` (two region tiles, 64 simulations a program: the fastest when every
    multiprocessor gets a program), ``"wide"`` (one padded tile, 16 a program: more programs for
    small batches) or ``"auto"`` (split when the batch fills the multiprocessors). ``block`` and
    ``num_warps`` override the layout's launch settings (``LAUNCH``).
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
    layout = choose_layout(layout, bsz, device)
    block = block or LAUNCH[layout][0]
    num_warps = num_warps or LAUNCH[layout][1]
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
    args = (
        params.w.contiguous(), params.I.contiguous(), params.sigma.contiguous(), params.G.contiguous(),
        c.T.contiguous().to(torch.float32), bases, xi, *xi_strides, bold, s_out,
        bsz, n, protocol.warmup_steps, n_full, rest, protocol.tr_steps, protocol.burn_in_samples,
        protocol.n_tr, (n + 1) // 2, protocol.dt, math.sqrt(protocol.dt / dynamics.SIGMA_UNIT), dynamics.S0,
    )  # fmt: skip
    flags = dict(EXPLICIT=noise.mode == "explicit", RECORD_S=record_s, PRECISION=precision)
    flags |= dict(FAST=not interpreted(), BLOCK=block, num_warps=num_warps)
    if layout == "split":
        na, nb = region_tiles(n)
        _mfm_kernel_split[grid](*args, NA=na, NB=nb, **flags)
    else:
        _mfm_kernel_wide[grid](*args, NP=max(16, triton.next_power_of_2(n)), **flags)
    out = {"bold": bold}
    if record_s:
        out["s"] = s_out
    return out
