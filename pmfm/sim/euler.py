"""The reference integrator: batched Euler-Maruyama following docs/protocol.md to the letter.

Order within a main step: neural drift from the current S; update S; Balloon derivatives from the
updated S; update z, f, v, q together from their old values; BOLD from the new v, q, recorded only
at the sampled steps (the neural trace is never stored).
"""

from __future__ import annotations

import torch

from pmfm.params import RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.sim.noise import NoiseStream
from pmfm.sim.protocol import SimProtocol


def integrate_euler(
    params: RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: NoiseStream,
    coupling=dynamics.matmul_coupling,
    record_s: bool = False,
    progress=None,
) -> dict[str, torch.Tensor]:
    """Integrate a batch; returns ``bold`` (B, N, n_tr), ``s`` (B, N, n_tr) if asked, and the final
    state ``S, z, f, v, q`` (B, N) each. ``c`` is the normalised coupling matrix (N, N)."""
    dt = protocol.dt
    bsz, n = params.w.shape
    dtype, device = params.w.dtype, params.w.device
    ct = c.T.contiguous()  # (N, N)
    jw = dynamics.J * params.w  # (B, N)
    jg = (dynamics.J * params.G)[:, None]  # (B, 1)
    i_ext = params.I  # (B, N)
    scale = dynamics.noise_scale(params.sigma, dt)  # (B, N)

    def neural_step(s, step):
        x = dynamics.synaptic_input(s, jw, jg, i_ext, ct, coupling)
        return torch.addcmul(torch.add(s, dynamics.neural_drift(s, x), alpha=dt), scale, noise.at(step))

    s = torch.full((bsz, n), dynamics.S0, dtype=dtype, device=device)  # (B, N)
    for step in range(protocol.warmup_steps):
        s = neural_step(s, step)

    z, f, v, q = balloon.rest_state((bsz, n), dtype, device)
    sample_steps = protocol.sample_steps().tolist()
    first_kept = protocol.burn_in_samples
    out = torch.empty((bsz, n, protocol.n_tr), dtype=dtype, device=device)  # (B, N, T)
    out_s = torch.empty_like(out) if record_s else None
    next_sample, k = sample_steps[0], 0
    for m in range(1, protocol.main_steps + 1):
        s = neural_step(s, protocol.warmup_steps + m - 1)
        z, f, v, q = balloon.euler_step(s, z, f, v, q, dt)
        if m == next_sample:
            if progress is not None:  # the share of the main loop since the last sample
                progress((m - (sample_steps[k - 1] if k else 0)) / protocol.main_steps)
            if k >= first_kept:
                out[:, :, k - first_kept] = balloon.bold(v, q)
                if out_s is not None:
                    out_s[:, :, k - first_kept] = s
            k += 1
            next_sample = sample_steps[k] if k < len(sample_steps) else -1
    result = {"bold": out, "S": s, "z": z, "f": f, "v": v, "q": q}
    if out_s is not None:
        result["s"] = out_s
    return result
