"""The feedback inhibition control (FIC) model: E-I Wong-Wang with w_IE solved (docs/fic.md).

Deco et al. 2014 (J Neurosci), parametric form of Zhang et al. 2024 (PNAS; CBIG Zhang2024_pFIC, MIT),
as DELSSOME fits it; time in seconds::

    I_E = W_E*I0 + J_N*w_EE*S_E + J_N*G*sum_j C_ij*S_Ej - w_IE*S_I
    I_I = W_I*I0 + J_N*w_EI*S_E - S_I
    r_E = H(I_E; a_E, b_E, d_E),  r_I = H(I_I; a_I, b_I, d_I),  H = (a*x - b) / (1 - exp(-d*(a*x - b)))
    dS_E = (-S_E/tau_E + (1 - S_E)*gamma*r_E) dt + sigma*sqrt(dt)*xi
    dS_I = (-S_I/tau_I + r_I) dt + sigma*sqrt(dt)*xi            (the same xi in both, as the release)

No 1/sqrt(0.001) factor in the noise (unlike the pMFM). BOLD: the Balloon-Windkessel of docs/haemodynamics.md
driven by S_E. C is the SC scaled to a maximum of 0.02 (optionally log-transformed first).

Feedback inhibition: before each simulation, w_IE is solved per region so that the excitatory
steady state sits at ``target_rate`` (3 Hz by default; the release hard-codes 3.06 Hz):
(S_E*, I_E*) follow from the target exactly, I_I* is the root of
``I_I = W_I*I0 + J_N*w_EI*S_E* - tau_I*H_I(I_I)``, S_I* = tau_I*H_I(I_I*) and
``w_IE = (W_E*I0 + J_N*w_EE*S_E* + J_N*G*rowsum(C)*S_E* - I_E*) / S_I*``. Every root is found by
bisection in float64 on a bracket where the function is monotone (to float64 resolution).

Validity (``rate_valid``): every region's excitatory rate, averaged over the main loop (burn-in
included, warm-up not), in [2.7, 3.3] Hz.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pmfm.physics import dynamics

I0 = 0.382  # nA, overall effective external input
J_N = 0.15  # nA, NMDA synaptic coupling
W_E = 1.0  # scale of the external input to excitatory populations
W_I = 0.7  # scale of the external input to inhibitory populations
A_E, B_E, D_E = 310.0, 125.0, 0.16  # n/C, Hz, s: excitatory input-output function
A_I, B_I, D_I = 615.0, 177.0, 0.087  # n/C, Hz, s: inhibitory input-output function
TAU_E = 0.1  # s, NMDA decay time (excitatory gating)
TAU_I = 0.01  # s, GABA decay time (inhibitory gating)
GAMMA = 0.641  # kinetic parameter of the excitatory gating
TARGET_RATE = 3.0  # Hz, excitatory steady-state rate w_IE is solved for (the release: ~3.06 Hz)
RATE_BAND = (2.7, 3.3)  # Hz, a run is valid when every region's mean excitatory rate lies inside
SC_SCALE = 0.02  # C = SC / max(SC) * 0.02
SC_TRANSFORMS = ("none", "log")
BISECTION_STEPS = 200  # halvings: far beyond float64 resolution of any bracket used here


@dataclass(frozen=True)
class FICParams:
    """A batch of FIC regional parameter sets, the FIC integrator's input."""

    w_ee: torch.Tensor  # (B, N) excitatory recurrent strength
    w_ei: torch.Tensor  # (B, N) excitatory-to-inhibitory strength
    G: torch.Tensor  # (B,) global coupling
    sigma: torch.Tensor  # (B, N) noise amplitude

    @classmethod
    def from_regional(cls, regional) -> FICParams:
        """From :class:`pmfm.params.RegionalParams` of the FIC space (maps w = w_EE, I = w_EI)."""
        return cls(w_ee=regional.w, w_ei=regional.I, G=regional.G, sigma=regional.sigma)


@dataclass(frozen=True)
class SteadyState:
    """The solved fixed point of every region, float64."""

    s_e: torch.Tensor  # (B, N) S_E*
    i_e: torch.Tensor  # (B, N) I_E*, nA
    s_i: torch.Tensor  # (B, N) S_I*
    i_i: torch.Tensor  # (B, N) I_I*, nA
    w_ie: torch.Tensor  # (B, N) feedback inhibition weight


def transfer_e(current: torch.Tensor) -> torch.Tensor:
    """Excitatory rate H_E(I_E) in Hz, stable at a_E*I = b_E."""
    return dynamics.transfer(current, A_E, B_E, D_E)


def transfer_i(current: torch.Tensor) -> torch.Tensor:
    """Inhibitory rate H_I(I_I) in Hz, stable at a_I*I = b_I."""
    return dynamics.transfer(current, A_I, B_I, D_I)


def coupling_matrix(sc: torch.Tensor, transform: str = "none", scale: float = SC_SCALE) -> torch.Tensor:
    """C = T(SC) / max(T(SC)) * 0.02, (N, N); T = identity or log(1 + SC) (``transform="log"``).

    The release built its SC as the mean over subjects of log streamline weights; from a group-
    averaged count matrix ``log`` is the nearest choice (zero entries stay zero).
    """
    if transform not in SC_TRANSFORMS:
        raise ValueError(f"SC transform {transform!r}; expected one of {SC_TRANSFORMS}")
    weights = torch.log1p(sc) if transform == "log" else sc
    return weights / weights.max() * scale


def bisect(fn, low: torch.Tensor, high: torch.Tensor, steps: int = BISECTION_STEPS) -> torch.Tensor:
    """Root of an increasing ``fn`` inside [low, high] (fn(low) <= 0 <= fn(high)), elementwise."""
    for _ in range(steps):
        mid = 0.5 * (low + high)
        up = fn(mid) > 0
        high = torch.where(up, mid, high)
        low = torch.where(up, low, mid)
    return 0.5 * (low + high)


def excitatory_steady_state(target_rate: float = TARGET_RATE) -> tuple[float, float]:
    """(S_E*, I_E*) at which the excitatory rate is ``target_rate`` Hz with dS_E/dt = 0.

    S_E* = gamma r tau_E / (1 + gamma r tau_E) exactly; I_E* inverts H_E on the bracket
    u = a_E I - b_E in [-1000, r] (H(u) > u everywhere and H(-1000) ~ 0 < r).
    """
    if not target_rate > 0:
        raise ValueError(f"target rate must be positive, got {target_rate} Hz")
    g = GAMMA * target_rate * TAU_E
    s_e = g / (1.0 + g)
    low = torch.tensor((-1000.0 + B_E) / A_E, dtype=torch.float64)
    high = torch.tensor((target_rate + B_E) / A_E, dtype=torch.float64)
    i_e = bisect(lambda i: transfer_e(i) - target_rate, low, high)
    return s_e, float(i_e)


def steady_state(params: FICParams, c: torch.Tensor, target_rate: float = TARGET_RATE) -> SteadyState:
    """w_IE and the fixed point of every region (docs/fic.md), batched, float64.

    I_I* solves f(I) = I - W_I I0 - J_N w_EI S_E* + tau_I H_I(I) = 0; f increases in I, and with
    c0 = W_I I0 + J_N w_EI S_E* the root lies in [c0 - tau_I H_I(c0), c0].
    """
    s_e, i_e = excitatory_steady_state(target_rate)
    w_ee, w_ei = params.w_ee.double(), params.w_ei.double()  # (B, N)
    g = params.G.double()[:, None]  # (B, 1)
    rowsum = c.double().sum(-1).to(w_ee.device)  # (N,)
    c0 = W_I * I0 + J_N * w_ei * s_e  # (B, N)
    i_i = bisect(lambda i: i - c0 + TAU_I * transfer_i(i), c0 - TAU_I * transfer_i(c0), c0)
    s_i = TAU_I * transfer_i(i_i)  # (B, N)
    w_ie = (W_E * I0 + J_N * w_ee * s_e + J_N * g * rowsum * s_e - i_e) / s_i
    full = torch.full_like(w_ee, s_e)
    return SteadyState(s_e=full, i_e=torch.full_like(w_ee, i_e), s_i=s_i, i_i=i_i, w_ie=w_ie)


def currents(s_e, s_i, jw_ee, jg, jw_ei, w_ie, ct, coupling) -> tuple[torch.Tensor, torch.Tensor]:
    """(I_E, I_I), (B, N) each; ``jw_ee = J_N w_EE``, ``jg = J_N G`` (B, 1), ``jw_ei = J_N w_EI``."""
    i_e = torch.addcmul(torch.addcmul(W_E * I0 - w_ie * s_i, jw_ee, s_e), jg, coupling(s_e, ct))
    i_i = torch.addcmul(W_I * I0 - s_i, jw_ei, s_e)
    return i_e, i_i


def drifts(s_e, s_i, r_e, r_i) -> tuple[torch.Tensor, torch.Tensor]:
    """(dS_E/dt, dS_I/dt) without noise, (B, N) each."""
    ds_e = torch.addcmul(s_e * (-1.0 / TAU_E), 1.0 - s_e, r_e, value=GAMMA)
    ds_i = torch.add(r_i, s_i, alpha=-1.0 / TAU_I)
    return ds_e, ds_i


def rate_valid(mean_rate: torch.Tensor, band: tuple[float, float] = RATE_BAND) -> torch.Tensor:
    """(B,) bool: every region's mean excitatory rate (B, N) inside ``band`` (NaN is outside)."""
    return ((mean_rate >= band[0]) & (mean_rate <= band[1])).all(dim=-1)
