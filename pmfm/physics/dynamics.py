"""Neural dynamics of the pMFM: the excitatory-only reduced Wong-Wang model (docs/model.md).

Kong et al. 2021 (after Deco et al. 2013, Wong & Wang 2006), time in seconds::

    x_i  = J * w_i * S_i + J * G * sum_j C_ij * S_j + I_i
    H(x) = (a*x - b) / (1 - exp(-d * (a*x - b)))
    dS_i = (-S_i / tau_s + gamma * (1 - S_i) * H(x_i)) * dt + sigma_i / sqrt(0.001) * sqrt(dt) * xi

Pure functions of state and parameters; the integrators own the time loop.
"""

from __future__ import annotations

import math

import torch

J = 0.2609  # nA, synaptic coupling
A = 270.0  # n/C, gain of the input-output function
B = 108.0  # Hz, threshold
D = 0.154  # s, curvature of the input-output function
TAU_S = 0.1  # s, NMDA decay time
GAMMA = 0.641  # kinetic parameter of the synaptic gating
SIGMA_UNIT = 0.001  # s: sigma is given in millisecond units, hence the 1/sqrt(0.001) in the noise
S0 = 0.001  # initial synaptic gating everywhere; S is never clipped
SC_SCALE = 0.2  # C = SC / max(SC) * 0.2


def coupling_matrix(sc: torch.Tensor, scale: float = SC_SCALE) -> torch.Tensor:
    """C = SC / max(SC) * scale, (N, N)."""
    return sc / sc.max() * scale


def transfer(x: torch.Tensor, a: float, b: float, d: float) -> torch.Tensor:
    """H(x; a, b, d) = (a x - b) / (1 - exp(-d (a x - b))) in Hz, stable at a*x = b.

    ``u / (1 - exp(-d u))`` is rewritten ``u / -expm1(-d u)``: expm1 has no cancellation for small
    ``d u``, so the quotient is accurate down to u = 0, where the only 0/0 is replaced by its limit
    1/d (the direct formula loses float32 runs to NaN there: docs/model.md#evaluating-h-stably,
    docs/protocol.md#precision-and-invalid-runs). Shared by the pMFM and the FIC model's two
    populations (pmfm.physics.fic).
    """
    y = (x * (-d * a)).add_(d * b)  # y = -d u, u = a x - b
    ratio = y / torch.expm1(y)  # d u / (1 - exp(-d u)) = d H
    return ratio.masked_fill_(y == 0, 1.0).mul_(1.0 / d)


def firing_rate(x: torch.Tensor) -> torch.Tensor:
    """The pMFM's H(x) in Hz (a = 270, b = 108, d = 0.154), evaluated stably at a*x = b."""
    return transfer(x, A, B, D)


def synaptic_input(
    s: torch.Tensor,
    jw: torch.Tensor,
    jg: torch.Tensor,
    i_ext: torch.Tensor,
    ct: torch.Tensor,
    coupling,
):
    """x = J w S + J G (C S) + I, (B, N); ``jw = J*w`` (B, N), ``jg = J*G`` (B, 1), ``ct = C^T``."""
    return torch.addcmul(torch.addcmul(i_ext, jw, s), jg, coupling(s, ct))


def neural_drift(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dS/dt without noise: -S / tau_s + gamma (1 - S) H(x), (B, N)."""
    return torch.addcmul(s * (-1.0 / TAU_S), 1.0 - s, firing_rate(x), value=GAMMA)


def noise_scale(sigma: torch.Tensor, dt: float) -> torch.Tensor:
    """Euler-Maruyama noise amplitude per step: sigma / sqrt(0.001) * sqrt(dt), (B, N)."""
    return sigma * math.sqrt(dt / SIGMA_UNIT)


def matmul_coupling(s: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """sum_j C_ij S_j by one matrix product: fast, but its rounding can depend on the batch size."""
    return s @ ct


def fixed_order_coupling(s: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """sum_j C_ij S_j summed row by row in a fixed order: a simulation's result is bitwise the same
    whatever batch it shares (a BLAS product regroups its sums by batch size)."""
    return (s[:, None, :] * ct.T).sum(-1)
