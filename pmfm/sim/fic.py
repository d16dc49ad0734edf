"""The FIC model's integrator: Euler-Maruyama from the solved fixed point (docs/fic.md)."""

from __future__ import annotations

import math

import torch

from pmfm.params import RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.physics.fic import (
    J_N,
    TARGET_RATE,
    FICParams,
    currents,
    drifts,
    steady_state,
    transfer_e,
    transfer_i,
)
from pmfm.sim.noise import NoiseStream
from pmfm.sim.protocol import SimProtocol


def integrate_fic(
    params: FICParams | RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: NoiseStream,
    coupling=dynamics.matmul_coupling,
    record_s: bool = False,
    progress=None,
    target_rate: float = TARGET_RATE,
    initial: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Integrate a batch; returns ``bold`` (B, N, n_tr), ``rate`` (B, N) mean excitatory rate over the
    main loop (Hz), ``w_ie`` (B, N), the final ``S_E``, ``S_I`` (and ``s`` = S_E at the kept samples).
    ``params``: the FIC maps, or regional values of the FIC space (w = w_EE, I = w_EI).

    Starts at the solved fixed point (the release starts at its hard-coded one) unless ``initial``
    (S_E, S_I) is given. Order within a step as the pMFM's (docs/protocol.md): currents and rates from
    the current state; update S_E and S_I with the same noise; Balloon from the new S_E.
    """
    if isinstance(params, RegionalParams):
        params = FICParams.from_regional(params)
    dt = protocol.dt
    bsz, n = params.w_ee.shape
    dtype, device = params.w_ee.dtype, params.w_ee.device
    fixed = steady_state(params, c, target_rate)
    ct = c.T.contiguous()  # (N, N)
    jw_ee = J_N * params.w_ee  # (B, N)
    jw_ei = J_N * params.w_ei  # (B, N)
    jg = (J_N * params.G)[:, None]  # (B, 1)
    w_ie = fixed.w_ie.to(device=device, dtype=dtype)  # (B, N)
    scale = params.sigma * math.sqrt(dt)  # (B, N), no 1/sqrt(0.001) in this model

    def step(s_e, s_i, k):
        i_e, i_i = currents(s_e, s_i, jw_ee, jg, jw_ei, w_ie, ct, coupling)
        r_e = transfer_e(i_e)
        ds_e, ds_i = drifts(s_e, s_i, r_e, transfer_i(i_i))
        noise_k = scale * noise.at(k)  # (B, N), the same draw for both populations
        return s_e + dt * ds_e + noise_k, s_i + dt * ds_i + noise_k, r_e

    if initial is None:
        s_e = fixed.s_e.to(device=device, dtype=dtype).clone()  # (B, N)
        s_i = fixed.s_i.to(device=device, dtype=dtype).clone()
    else:
        s_e, s_i = (t.to(device=device, dtype=dtype).expand(bsz, n).clone() for t in initial)
    for k in range(protocol.warmup_steps):
        s_e, s_i, _ = step(s_e, s_i, k)

    z, f, v, q = balloon.rest_state((bsz, n), dtype, device)
    rate_sum = torch.zeros((bsz, n), dtype=torch.float64, device=device)  # (B, N)
    sample_steps = protocol.sample_steps().tolist()
    first_kept = protocol.burn_in_samples
    out = torch.empty((bsz, n, protocol.n_tr), dtype=dtype, device=device)  # (B, N, T)
    out_s = torch.empty_like(out) if record_s else None
    next_sample, k = sample_steps[0], 0
    for m in range(1, protocol.main_steps + 1):
        s_e, s_i, r_e = step(s_e, s_i, protocol.warmup_steps + m - 1)
        rate_sum += r_e
        z, f, v, q = balloon.euler_step(s_e, z, f, v, q, dt)
        if m == next_sample:
            if progress is not None:  # the share of the main loop since the last sample
                progress((m - (sample_steps[k - 1] if k else 0)) / protocol.main_steps)
            if k >= first_kept:
                out[:, :, k - first_kept] = balloon.bold(v, q)
                if out_s is not None:
                    out_s[:, :, k - first_kept] = s_e
            k += 1
            next_sample = sample_steps[k] if k < len(sample_steps) else -1
    result = {"bold": out, "rate": rate_sum / protocol.main_steps, "w_ie": w_ie, "S_E": s_e, "S_I": s_i}
    if out_s is not None:
        result["s"] = out_s
    return result
