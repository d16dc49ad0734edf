"""``simulate(theta, ...)``: parameters in, BOLD and validity out, batched and chunked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pmfm.params import ParamSpace
from pmfm.sim import batching, dynamics, fic
from pmfm.sim.euler import integrate_euler
from pmfm.sim.noise import Noise
from pmfm.sim.odeint import integrate_odeint
from pmfm.sim.protocol import SimProtocol

INTEGRATORS = {"euler": integrate_euler, "torchdiffeq": integrate_odeint}
# fused: one Triton kernel (pmfm.sim.fused); compiled: torch.compile + CUDA graphs (pmfm.sim.compiled)
METHODS = (*INTEGRATORS, "fused", "compiled", "auto")
COUPLINGS = {"matmul": dynamics.matmul_coupling, "fixed_order": dynamics.fixed_order_coupling}
FIC_METHODS = ("euler",)  # the FIC model runs on the plain Euler path only (pmfm.sim.fic)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimResult:
    """BOLD of a batch and which runs are usable."""

    bold: torch.Tensor  # (B, N, n_tr), kept TRs only
    valid: torch.Tensor  # (B,) bool: every BOLD value finite (FIC: and every mean rate in the band)
    s: torch.Tensor | None = None  # (B, N, n_tr) S (FIC: S_E) at the kept samples, when asked for
    rate: torch.Tensor | None = None  # (B, N) FIC: mean excitatory rate over the main loop, Hz

    @property
    def n_invalid(self) -> int:
        return int((~self.valid).sum())


FUSED_CHUNK = 65_536  # simulations per fused launch (BOLD alone: 21 GB in float32 at N = 68)


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def resolve_method(method: str, device: torch.device, circuit: str = "pmfm") -> str:
    """``auto``: the fused kernel on CUDA when Triton is installed, else the plain Euler path.

    The FIC model has only the plain Euler path: ``auto`` resolves to it, and an explicit
    ``fused``, ``compiled`` or ``torchdiffeq`` falls back to it (``fic_method`` logs why).
    """
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; expected one of {list(METHODS)}")
    if circuit == "fic":
        return "euler"
    if method == "auto":
        return "fused" if device.type == "cuda" and triton_available() else "euler"
    return method


def fic_method(method: str) -> str:
    """The FIC model's integrator for a requested method: always the plain Euler path, with a
    logged message when another was asked for (never silently the pMFM's kernel)."""
    if method not in ("euler", "auto"):
        log.warning(
            "simulator method %r does not implement the FIC model; running the plain Euler path "
            "(pmfm.sim.fic) instead",
            method,
        )
    return "euler"


def simulate(
    theta,
    space: ParamSpace,
    sc,
    *,
    protocol: SimProtocol = SimProtocol(),
    noise: Noise = Noise(),
    method: str = "euler",
    device=None,
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None = None,
    coupling: str = "auto",
    precision: str = "tf32",
    layout: str = "auto",
    record_s: bool = False,
    progress=None,
    sc_transform: str = "none",
    target_rate: float = fic.TARGET_RATE,
    rate_band: tuple[float, float] = fic.RATE_BAND,
) -> SimResult:
    """Simulate a batch of parameter sets with the pMFM (SPEC sections 2-4) or the FIC model
    (section 9), whichever ``space.circuit`` names.

    Args:
        theta: (B, P) parameters of ``space`` (10 coefficients or 3N + 1 regional values), raw units.
        space: the parameter space (its basis carries the parcellation's covariates).
        sc: (N, N) structural connectivity, raw; normalised here to C = SC / max(SC) * 0.2.
        protocol: step size, warm-up, sampling, burn-in.
        noise: keyed noise (independent per simulation, common random numbers, or explicit).
        method: ``"euler"`` (the reference), ``"torchdiffeq"``, ``"fused"`` (one Triton kernel for
            the whole loop, CUDA, float32), ``"compiled"`` (the Euler step under torch.compile,
            replayed as CUDA graphs; eager on the CPU; keyed noise only, explicit noise runs euler)
            or ``"auto"`` (fused on CUDA when Triton is installed, else euler).
        device, dtype: where and in which precision to integrate (float32 reference, float64 available).
        chunk_size: simulations integrated together (bounds memory). On the CPU chunks are padded
            and capped (pmfm.sim.batching) so that, with ``coupling="fixed_order"``, every result
            is bitwise the same whatever the batch or chunk size.
        coupling: ``"fixed_order"`` (the CPU default) sums the coupling in a fixed order per
            simulation; ``"matmul"`` (the CUDA default) is faster but its rounding depends on the
            batch size. (Plain paths only.)
        precision: the fused kernel's coupling product, ``"tf32"`` (the default), ``"tf32x3"``
            (about float32) or ``"ieee"`` (see pmfm.sim.fused).
        layout: the fused kernel's region layout, ``"auto"`` (by batch size), ``"split"`` or
            ``"wide"``; pin it for results that do not depend on the batch size on CUDA.
        record_s: also return S at the kept samples.
        progress: optional callable(n_done) called after each chunk.
        sc_transform, target_rate, rate_band: FIC only: the SC transform before scaling to a
            maximum of 0.02 ("none" or "log"), the excitatory rate w_IE is solved for (Hz) and
            the band every region's mean rate must lie in for a valid run (Hz).

    Returns:
        SimResult with ``bold`` (B, N, n_tr) and ``valid`` (B,); NaN/Inf runs are flagged, never
        raised. FIC: also ``rate`` (B, N), and runs whose rates leave the band are invalid.

    Raises:
        ParamError: a parameter set is out of bounds or NaN (the message lists which).
    """
    space.check(theta)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    theta = theta[None] if theta.ndim == 1 else theta
    device = torch.device(device) if device is not None else torch.device("cpu")
    is_fic = space.circuit == "fic"
    method = fic_method(method) if is_fic else resolve_method(method, device)
    if method == "compiled" and noise.mode == "explicit":
        method = "euler"  # the compiled path draws its noise on the device
    if coupling == "auto":
        coupling = "matmul" if device.type == "cuda" else "fixed_order"
    sc = torch.as_tensor(
        np.array(sc, dtype=np.float64) if isinstance(sc, np.ndarray) else sc, dtype=torch.float64
    )
    if sc.shape != (space.n_regions, space.n_regions):
        raise ValueError(f"SC is {tuple(sc.shape)}, the parameter space has {space.n_regions} regions")
    c = fic.coupling_matrix(sc, sc_transform) if is_fic else dynamics.coupling_matrix(sc)
    c = c.to(device=device, dtype=dtype)  # (N, N)

    bsz, n = theta.shape[0], space.n_regions
    on_cpu = device.type == "cpu"
    fused = method == "fused"
    limit = FUSED_CHUNK if fused else batching.cpu_chunk_limit(n) if on_cpu else 4096
    chunk = min(chunk_size or limit, limit)
    parts = []
    for start in range(0, bsz, chunk):
        index = slice(start, min(start + chunk, bsz))
        rows = index.stop - index.start
        chunk_theta, chunk_noise = theta[index], noise.subset(index, bsz)
        if on_cpu and not fused:  # pad with copies of the last one: whole SIMD vectors (batching.py)
            pad = batching.padded_size(rows, n) - rows
            chunk_theta = torch.cat([chunk_theta, chunk_theta[-1:].expand(pad, -1)])
            chunk_noise = chunk_noise.padded(pad)
        params = space.regional(chunk_theta).to(device=device, dtype=dtype)
        if fused:
            from pmfm.sim.fused import integrate_fused  # Triton: imported only when asked for

            out = integrate_fused(
                params, c, protocol, chunk_noise, record_s=record_s, precision=precision, layout=layout
            )
        elif method == "compiled":
            from pmfm.sim.compiled import integrate_compiled

            compile_step = device.type == "cuda"
            out = integrate_compiled(
                params, c, protocol, chunk_noise, record_s=record_s, compile=compile_step
            )
        elif is_fic:
            stream = chunk_noise.stream(params.batch_size, n, protocol.total_steps, dtype, device)
            out = fic.integrate_fic(
                fic.FICParams.from_regional(params), c, protocol, stream,
                coupling=COUPLINGS[coupling], record_s=record_s, target_rate=target_rate,
            )  # fmt: skip
        else:
            stream = chunk_noise.stream(params.batch_size, n, protocol.total_steps, dtype, device)
            integrate = INTEGRATORS[method]
            out = integrate(params, c, protocol, stream, coupling=COUPLINGS[coupling], record_s=record_s)
        parts.append({k: out[k][:rows] for k in ("bold", "s", "rate") if k in out})
        if progress is not None:
            progress(rows)
    bold = torch.cat([p["bold"] for p in parts])
    s = torch.cat([p["s"] for p in parts]) if record_s else None
    valid = torch.isfinite(bold).flatten(1).all(dim=1)
    rate = None
    if is_fic:
        rate = torch.cat([p["rate"] for p in parts])  # (B, N) float64
        valid &= fic.rate_valid(rate, rate_band).to(valid.device)
    return SimResult(bold=bold, valid=valid, s=s, rate=rate)
