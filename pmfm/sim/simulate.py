"""``simulate(theta, space, sc, simulator, noise)``: parameters in, BOLD and validity out, in chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pmfm.params import ParamSpace
from pmfm.physics import dynamics, fic
from pmfm.sim import batching
from pmfm.sim.noise import Noise, NoiseStream
from pmfm.sim.registry import COUPLINGS, INTEGRATORS, resolve_coupling, resolve_method
from pmfm.sim.simulator import Simulator

CUDA_CHUNK = 4096  # simulations per call of a plain path on CUDA
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


def simulate(
    theta,
    space: ParamSpace,
    sc,
    simulator: Simulator = Simulator(),
    noise: Noise = Noise(),
    *,
    record_s: bool = False,
    progress=None,
) -> SimResult:
    """Simulate a batch of parameter sets with the circuit ``space.circuit`` names (docs/model.md,
    docs/fic.md) under ``simulator``'s protocol, integrator, precision and device.

    Args:
        theta: (B, P) parameters of ``space`` (10 coefficients or 3N + 1 regional values), raw units.
        space: the parameter space (its basis carries the parcellation's covariates).
        sc: (N, N) structural connectivity, raw; normalised here by the circuit's rule.
        simulator: the settings (:class:`~pmfm.sim.simulator.Simulator`).
        noise: keyed noise (independent per simulation, common random numbers, or explicit).
        record_s: also return S at the kept samples.
        progress: optional callable(n) called as simulations complete (n may be a fraction).

    On the CPU chunks are padded and capped (pmfm.sim.batching) so that, with the fixed-order
    coupling, every result is bitwise the same whatever the batch or chunk size.

    Returns:
        SimResult with ``bold`` (B, N, n_tr) and ``valid`` (B,); NaN/Inf runs are flagged, never
        raised. FIC: also ``rate`` (B, N), and runs whose rates leave the band are invalid.

    Raises:
        ParamError: a parameter set is out of bounds or NaN (the message lists which).
    """
    if space.circuit != simulator.circuit:
        raise ValueError(
            f"parameters of the {space.circuit} space given to a simulator of the {simulator.circuit} circuit"
        )
    space.check(theta)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    theta = theta[None] if theta.ndim == 1 else theta
    device, dtype = simulator.torch_device, simulator.torch_dtype
    method = resolve_method(simulator.method, device, space.circuit)
    if space.circuit != "pmfm" and simulator.method not in (method, "auto"):
        log.warning("simulator method %r does not implement the %s model; running %r", simulator.method,
                    space.circuit.upper(), method)  # fmt: skip
    integrator = INTEGRATORS[space.circuit, method]
    if noise.mode == "explicit" and not integrator.explicit_noise:
        integrator = INTEGRATORS[space.circuit, "euler"]  # a path that draws its own noise on the device
    options = {name: getattr(simulator, name) for name in integrator.options}
    if "coupling" in options:
        options["coupling"] = COUPLINGS[resolve_coupling(simulator.coupling, device)]
    integrate = integrator.load()
    sc = torch.as_tensor(
        np.array(sc, dtype=np.float64) if isinstance(sc, np.ndarray) else sc, dtype=torch.float64
    )
    if sc.shape != (space.n_regions, space.n_regions):
        raise ValueError(f"SC is {tuple(sc.shape)}, the parameter space has {space.n_regions} regions")
    if space.circuit == "fic":
        c = fic.coupling_matrix(sc, simulator.sc_transform)
    else:
        c = dynamics.coupling_matrix(sc)
    c = c.to(device=device, dtype=dtype)  # (N, N)

    bsz, n = theta.shape[0], space.n_regions
    pad_cpu = device.type == "cpu" and integrator.padded
    limit = integrator.max_chunk or (batching.cpu_chunk_limit(n) if device.type == "cpu" else CUDA_CHUNK)
    chunk = min(simulator.chunk_size or limit, limit)
    parts = []
    for start in range(0, bsz, chunk):
        index = slice(start, min(start + chunk, bsz))
        rows = index.stop - index.start
        chunk_theta, chunk_noise = theta[index], noise.subset(index, bsz)
        if pad_cpu:  # pad with copies of the last one: whole SIMD vectors (batching.py)
            pad = batching.padded_size(rows, n) - rows
            chunk_theta = torch.cat([chunk_theta, chunk_theta[-1:].expand(pad, -1)])
            chunk_noise = chunk_noise.padded(pad)
        params = space.regional(chunk_theta).to(device=device, dtype=dtype)
        draws: Noise | NoiseStream = chunk_noise  # the keyed noise, or (plain paths) the step normals
        if integrator.draws == "stream":
            draws = chunk_noise.stream(params.batch_size, n, simulator.protocol.total_steps, dtype, device)
        if progress is not None and integrator.reports:
            options["progress"] = lambda share, rows=rows: progress(share * rows)
        out = integrate(params, c, simulator.protocol, draws, record_s=record_s, **options)
        parts.append({k: out[k][:rows] for k in ("bold", "s", "rate") if k in out})
        if progress is not None and not integrator.reports:
            progress(rows)
    bold = torch.cat([p["bold"] for p in parts])
    s = torch.cat([p["s"] for p in parts]) if record_s else None
    valid = torch.isfinite(bold).flatten(1).all(dim=1)
    rate = None
    if space.circuit == "fic":
        rate = torch.cat([p["rate"] for p in parts])  # (B, N) float64
        valid &= fic.rate_valid(rate, simulator.rate_band).to(valid.device)
    return SimResult(bold=bold, valid=valid, s=s, rate=rate)
