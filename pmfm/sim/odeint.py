"""The same system integrated by torchdiffeq's fixed-grid solvers (``simulator=mfm_torchdiffeq``).

The state (S, z, f, v, q) is one ODE system whose right-hand side includes the noise as a forcing
that is constant over each step (the step's normal draw divided by sqrt(dt), so that one Euler
step adds exactly sigma/sqrt(0.001)*sqrt(dt)*xi). Time runs in units of steps so the grid is exact.

Differences from the reference Euler path (pmfm.sim.euler), by construction:
- all five variables advance together from their old values, so the Balloon is driven by the S of
  the previous step, not the updated one: a one-step lag (about 0.2% of BOLD in relative norm);
- higher-order methods (``method="midpoint"``, ``"rk4"``) see piecewise-constant noise, which is not
  a consistent SDE scheme; ``"euler"`` is the default and the one that is tested.
"""

from __future__ import annotations

import torch

from pmfm.params import RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.sim.noise import NoiseStream
from pmfm.sim.protocol import SimProtocol


def integrate_odeint(
    params: RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: NoiseStream,
    coupling=dynamics.matmul_coupling,
    record_s: bool = False,
    progress=None,
    method: str = "euler",
) -> dict[str, torch.Tensor]:
    """Same interface and outputs as :func:`pmfm.sim.euler.integrate_euler`."""
    from torchdiffeq import odeint  # only this path needs it (GPU machines may lack it)

    dt = protocol.dt
    bsz, n = params.w.shape
    dtype, device = params.w.dtype, params.w.device
    ct = c.T.contiguous()
    jw = dynamics.J * params.w
    jg = (dynamics.J * params.G)[:, None]
    scale = dynamics.noise_scale(params.sigma, dt)  # (B, N), per step

    def neural(t, s):  # dS per step of length 1
        x = dynamics.synaptic_input(s, jw, jg, params.I, ct, coupling)
        return dt * dynamics.neural_drift(s, x) + scale * noise.at(int(t.round()))

    def full(t, state):
        s, z, f, v, q = state
        dz, df, dv, dq = balloon.derivatives(s, z, f, v, q)
        return (neural(t, s), dt * dz, dt * df, dt * dv, dt * dq)

    def run(func, y0, start: int, stop: int):
        grid = torch.tensor([float(start), float(stop)], dtype=torch.float64, device=device)
        ys = odeint(func, y0, grid, method=method, options={"step_size": 1.0})
        return ys[-1] if isinstance(ys, torch.Tensor) else tuple(y[-1] for y in ys)

    s = torch.full((bsz, n), dynamics.S0, dtype=dtype, device=device)
    if protocol.warmup_steps:
        s = run(neural, s, 0, protocol.warmup_steps)

    state = (s, *balloon.rest_state((bsz, n), dtype, device))
    out = torch.empty((bsz, n, protocol.n_tr), dtype=dtype, device=device)
    out_s = torch.empty_like(out) if record_s else None
    previous = 0
    for k, m in enumerate(protocol.sample_steps().tolist()):
        w0 = protocol.warmup_steps
        state = run(full, state, w0 + previous, w0 + m)
        if progress is not None:  # the share of the main loop just integrated
            progress((m - previous) / protocol.main_steps)
        previous = m
        if k >= protocol.burn_in_samples:
            out[:, :, k - protocol.burn_in_samples] = balloon.bold(state[3], state[4])
            if out_s is not None:
                out_s[:, :, k - protocol.burn_in_samples] = state[0]
    result = dict(zip(("S", "z", "f", "v", "q"), state, strict=True))
    result["bold"] = out
    if out_s is not None:
        result["s"] = out_s
    return result
