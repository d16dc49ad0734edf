"""Balloon-Windkessel haemodynamics driven by the synaptic gating S (docs/haemodynamics.md).

Friston et al. 2000 / Stephan et al. 2007 as used by Kong et al. 2021, time in seconds::

    dz = S - kappa*z - gamma_h*(f - 1)
    df = z
    dv = (f - v**(1/alpha)) / tau
    dq = (f * (1 - (1 - rho)**(1/f)) / rho - q * v**(1/alpha) / v) / tau
    BOLD = 100/rho * V0 * (k1*(1 - q) + k2*(1 - q/v) + k3*(1 - v))
"""

from __future__ import annotations

import math

import torch

KAPPA = 0.65  # 1/s, signal decay
GAMMA_H = 0.41  # 1/s, flow-dependent elimination
TAU = 0.98  # s, haemodynamic transit time
ALPHA = 0.33  # Grubb's exponent
RHO = 0.34  # resting oxygen extraction fraction
V0 = 0.02  # resting blood volume fraction
K1 = 4.3 * 28.265 * 3 * 0.0331 * RHO  # 4.1034
K2 = 0.47 * 110 * 0.0331 * RHO  # 0.5818
K3 = 0.53
BOLD_SCALE = 100.0 / RHO * V0  # percent signal change
_LOG_1_MINUS_RHO = math.log(1.0 - RHO)


def rest_state(shape, dtype, device) -> tuple[torch.Tensor, ...]:
    """z = 0, f = v = q = 1: the haemodynamic state at rest, each of the given shape."""
    z = torch.zeros(shape, dtype=dtype, device=device)
    ones = torch.ones(shape, dtype=dtype, device=device)
    return z, ones, ones.clone(), ones.clone()


def derivatives(s, z, f, v, q) -> tuple[torch.Tensor, ...]:
    """(dz, df, dv, dq) per second, all from the given (old) values."""
    v_pow = v.pow(1.0 / ALPHA)  # v^(1/alpha)
    extraction = torch.expm1(_LOG_1_MINUS_RHO / f).neg_()  # 1 - (1 - rho)^(1/f)
    dz = torch.add(s, z, alpha=-KAPPA).add_(f, alpha=-GAMMA_H).add_(GAMMA_H)  # s - kappa z - gamma_h (f - 1)
    dv = torch.sub(f, v_pow).mul_(1.0 / TAU)  # (f - v^(1/alpha)) / tau
    outflow = (q * v_pow).div_(v)  # q v^(1/alpha) / v
    dq = torch.sub(f * extraction, outflow, alpha=RHO).mul_(1.0 / (RHO * TAU))  # (f E / rho - outflow) / tau
    return dz, z, dv, dq


def euler_step(s, z, f, v, q, dt: float) -> tuple[torch.Tensor, ...]:
    """(z, f, v, q) after one Euler step of ``dt`` seconds driven by S (the integrators' shared update)."""
    dz, df, dv, dq = derivatives(s, z, f, v, q)
    return z.add(dz, alpha=dt), f.add(df, alpha=dt), v.add(dv, alpha=dt), q.add(dq, alpha=dt)


def bold(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """BOLD signal (percent) from volume v and deoxyhaemoglobin q; 0 at rest."""
    return BOLD_SCALE * (K1 * (1.0 - q) + K2 * (1.0 - q / v) + K3 * (1.0 - v))
