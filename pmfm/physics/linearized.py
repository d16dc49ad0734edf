"""The pMFM linearised at its steady state: fixed point, Jacobian, stationary covariance (docs/model.md).

Without noise the neural model of ``pmfm.physics.dynamics`` settles at a fixed point S*; with weak noise
its fluctuations around S* are, to first order, an Ornstein-Uhlenbeck process (the linear noise
approximation)::

    d(dS) = A dS dt + sqrt(Q) dW,   A = df/dS at S*,   Q = diag(sigma^2 / 0.001)   (per second)

whose stationary covariance P solves the Lyapunov equation A P + P A^T + Q = 0. Everything here is
batched, differentiable torch; it costs milliseconds per parameter set instead of a simulation, and
its summaries (how correlated the regions are, how slow the slowest mode is) predict the simulated
costs well, so the surrogates take them as input features (``pmfm.models.networks.linearised``).
Where the model is bistable, ``linearize(..., upper=True)`` linearises the high-activity branch and
``bistability`` summarises how the two branches relate.

The Jacobian has the form A = -diag(a) + diag(b) K with K = J G C symmetric and b > 0 (H is
increasing and S < 1), so T^-1 A T with T = diag(sqrt(b)) is symmetric: one ``eigh`` gives real
eigenvalues and solves the Lyapunov equation in the eigenbasis, no general eigensolver needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pmfm.physics.dynamics import GAMMA, SIGMA_UNIT, TAU_S, A, B, D, J, firing_rate, neural_drift

RELAX_DT = 0.02  # s, step of the noise-free relaxation from S0: Euler with the decay -S (1/tau_s + gamma H)
# taken implicitly, so a state near S = 1 (H of hundreds of Hz) relaxes instead of oscillating;
# S stays in [0, 1]
RELAX_STEPS = 150  # 3 s of model time: fast modes (tau_s = 0.1 s) settle, Newton does the rest
NEWTON_STEPS = 6
SETTLED = 1e-10  # 1/s: |dS/dt| below which a set needs no Newton step
S_START = 0.001  # the simulator's initial state (pmfm.physics.dynamics.S0)
S_UPPER = 1.0  # start of the relaxation that finds the high-activity branch where one coexists
UPPER_RELAX_STEPS = 750  # 15 s: from the top, sets near a fold creep past its ghost for seconds
SERIES_BELOW = 1e-2  # Hz: |a x - b| below which dH/dx comes from the series of H
B_FLOOR = 1e-6  # 1/nA: floor of gamma (1 - S) H'(x), > 0 for the symmetrisation (silent regions have ~0)
MAX_EIGENVALUE = -1e-3  # 1/s: eigenvalues clamped below it, so an unstable point gives finite features


@dataclass(frozen=True)
class Linearization:
    """The steady state of B parameter sets and the linear model of the fluctuations around it."""

    s: torch.Tensor  # (B, N) S* (noise-free fixed point)
    rate: torch.Tensor  # (B, N) H(x*), Hz
    eigenvalues: torch.Tensor  # (B, N) of the Jacobian, ascending, 1/s (unclamped: > 0 is unstable)
    covariance: torch.Tensor  # (B, N, N) stationary covariance of S (Lyapunov)
    slow_covariance: torch.Tensor  # (B, N, N) zero-frequency spectral density A^-1 Q A^-T
    modes: torch.Tensor  # (B, N, N) T U: eigenvectors of A as columns (A = T U diag(l) U^T T^-1)
    mode_noise: torch.Tensor  # (B, N, N) the noise Q in that eigenbasis, U^T T^-1 Q T^-1 U


def slope(x: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """dH/dx (Hz/nA) from x and H(x): a (H / u)(1 + d u - d H) with u = a x - b.

    From H = u / (1 - e^{-d u}). Near u = 0 the closed form cancels, so the series of H
    (1/d + u/2 + d u^2/12 + ...) gives a (1/2 + d u / 6) there instead (error below 1e-10 a).
    """
    u = A * x - B
    small = u.abs() < SERIES_BELOW
    u_safe = torch.where(small, torch.ones_like(u), u)
    exact = A * (rate / u_safe) * (1 + D * u_safe - D * rate)
    series = A * (0.5 + D * u / 6)
    return torch.where(small, series, exact)


def steady_state(w, I, G, coupling_matrix, start: float = S_START, steps: int = RELAX_STEPS) -> torch.Tensor:
    """Noise-free fixed point S* (B, N) reached from S0 = ``start`` (0.001: the simulator's start).

    ``steps`` relaxation steps of the deterministic model (``RELAX_DT``) follow the branch the
    simulation takes, then damped Newton steps polish the point (a slow mode near a bifurcation
    settles only then).
    w, I (B, N); G (B,); coupling_matrix C (N, N).
    """
    jw, jg = J * w, (J * G)[:, None]  # (B, N), (B, 1)
    s = torch.full_like(w, start)
    for _ in range(steps):
        x = jw * s + jg * (s @ coupling_matrix.T) + I
        rate = GAMMA * firing_rate(x)
        s = ((s + RELAX_DT * rate) / (1 + RELAX_DT * (1 / TAU_S + rate))).clamp(0.0, 1.0)
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    for _ in range(NEWTON_STEPS):
        x = jw * s + jg * (s @ coupling_matrix.T) + I
        h = firing_rate(x)
        f = -s / TAU_S + GAMMA * (1 - s) * h  # (B, N)
        todo = (f.abs().amax(1) > SETTLED).nonzero().squeeze(1)  # most sets settle while relaxing
        if len(todo) == 0:
            break
        jac = jacobian(s[todo], x[todo], h[todo], jw[todo], jg[todo], coupling_matrix, eye)
        step, info = torch.linalg.solve_ex(jac, -f[todo])  # info != 0: singular, keep the state
        step = torch.where((info == 0)[:, None] & torch.isfinite(step), step, torch.zeros_like(step))
        s = s.index_put((todo,), (s[todo] + step.clamp(-0.05, 0.05)).clamp(0.0, 1.0))
    return s


def jacobian(s, x, h, jw, jg, coupling_matrix, eye) -> torch.Tensor:
    """df/dS (B, N, N) of the drift f = -S/tau_s + gamma (1 - S) H(x) at state s."""
    b = GAMMA * (1 - s) * slope(x, h)  # (B, N)
    diagonal = -1.0 / TAU_S - GAMMA * h  # (B, N)
    k = jw[:, :, None] * eye + jg[:, :, None] * coupling_matrix  # (B, N, N) dx/dS
    return diagonal[:, :, None] * eye + b[:, :, None] * k


def linearize(
    w, I, G, sigma, coupling_matrix, spectral_dtype: torch.dtype | None = None, upper: bool = False
) -> Linearization:
    """Steady state and stationary fluctuations of B parameter sets (float64 recommended).

    w, I, sigma (B, N); G (B,); coupling_matrix C = 0.2 SC / max(SC) (N, N). ``spectral_dtype``: the
    eigendecomposition and covariances in this dtype (float32 halves their cost, the bulk of the
    time; the fixed point is always found in the inputs' dtype). ``upper``: at the fixed point relaxed
    to from S = ``S_UPPER``, the high-activity branch of a bistable set, instead of from the simulator's
    start.
    """
    start, steps = (S_UPPER, UPPER_RELAX_STEPS) if upper else (S_START, RELAX_STEPS)
    s = steady_state(w, I, G, coupling_matrix, start, steps)
    jw, jg = J * w, (J * G)[:, None]
    x = jw * s + jg * (s @ coupling_matrix.T) + I
    h = firing_rate(x)
    b = (GAMMA * (1 - s) * slope(x, h)).clamp_min(B_FLOOR)  # (B, N) > 0
    a = 1.0 / TAU_S + GAMMA * h - b * jw  # A = -diag(a) + diag(b) J G C
    root_b = b.sqrt()
    sym = jg[:, :, None] * coupling_matrix * root_b[:, :, None] * root_b[:, None, :]  # (B, N, N)
    sym = sym - torch.diag_embed(a)
    if spectral_dtype is not None:
        sym, b, root_b, sigma = (t.to(spectral_dtype) for t in (sym, b, root_b, sigma))
    eigenvalues, vectors = torch.linalg.eigh(sym)  # (B, N), (B, N, N): A = T U diag(l) U^T T^-1
    lam = eigenvalues.clamp(max=MAX_EIGENVALUE)
    q = sigma**2 / SIGMA_UNIT  # (B, N) noise intensity per second
    q_eigen = vectors.transpose(1, 2) @ ((q / b)[:, :, None] * vectors)  # U^T T^-1 Q T^-1 U
    x_lyap = -q_eigen / (lam[:, :, None] + lam[:, None, :])
    x_slow = q_eigen / (lam[:, :, None] * lam[:, None, :])
    to_state = root_b[:, :, None] * vectors  # T U
    covariance = to_state @ x_lyap @ to_state.transpose(1, 2)
    slow = to_state @ x_slow @ to_state.transpose(1, 2)
    return Linearization(s, h, eigenvalues, covariance, slow, to_state, q_eigen)


def correlation(cov: torch.Tensor) -> torch.Tensor:
    """Covariance (B, N, N) -> correlation (B, N, N)."""
    sd = torch.diagonal(cov, dim1=1, dim2=2).clamp_min(1e-30).sqrt()  # (B, N)
    return cov / (sd[:, :, None] * sd[:, None, :])


SUMMARY_NAMES = (
    "fc_mean",  # mean Fisher-z correlation of the stationary fluctuations over the N (N - 1) / 2 edges
    "fc_sd",  # their spread over edges
    "slow_fc_mean",  # the same of the zero-frequency spectrum (what BOLD, a low-pass filter, keeps)
    "slow_fc_sd",
    "slowest_mode",  # sign(l) log(1 + |l|) of the largest eigenvalue l (1/s): near 0 = near a bifurcation
    "s_mean",  # mean and spread of S* over regions
    "s_sd",
    "log_rate",  # log mean H(x*) (Hz)
)
TARGET_NAMES = ("fc_match", "slow_fc_match")  # Pearson of Fisher-z edges with the target FC's


def summary(lin: Linearization, target_fc: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar summaries (B, K) of B linearisations, in the order of ``SUMMARY_NAMES`` (+ ``TARGET_NAMES``).

    With ``target_fc`` (N, N), also how well each linearised FC pattern matches it (Pearson of the
    Fisher-z upper triangles), the quantity the FC cost measures on simulated BOLD.
    """
    fisher = [fisher_edges(c) for c in (lin.covariance, lin.slow_covariance)]
    slowest = lin.eigenvalues[:, -1]
    columns = [
        fisher[0].mean(1),
        fisher[0].std(1),
        fisher[1].mean(1),
        fisher[1].std(1),
        slowest.sign() * slowest.abs().log1p(),
        lin.s.mean(1),
        lin.s.std(1),
        lin.rate.mean(1).clamp_min(1e-6).log(),
    ]
    if target_fc is not None:
        columns += [pattern_match(z, target_fc) for z in fisher]
    return torch.stack([c.to(lin.s.dtype) for c in columns], dim=1)


def fisher_edges(cov: torch.Tensor) -> torch.Tensor:
    """Covariance (B, N, N) -> Fisher-z correlations of its N (N - 1) / 2 upper-triangle edges (B, E)."""
    n = cov.shape[1]
    rows, cols = torch.triu_indices(n, n, 1, device=cov.device)
    return torch.atanh(correlation(cov)[:, rows, cols].clamp(-0.9999, 0.9999))


def pattern_match(z: torch.Tensor, target_fc: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson of Fisher-z edges z (B, E) with those of the target FC (N, N)."""
    n = target_fc.shape[0]
    rows, cols = torch.triu_indices(n, n, 1, device=target_fc.device)
    target = torch.atanh(target_fc[rows, cols].clamp(-0.9999, 0.9999)).to(z.dtype)
    target, z = target - target.mean(), z - z.mean(1, keepdim=True)
    return (z @ target) / (z.norm(dim=1) * target.norm()).clamp_min(1e-30)


BRANCH_NAMES = (
    "branch_gap",  # mean |S_upper - S_lower| over regions: > 0 where a high-activity branch coexists
    "barrier_lower",  # log(1 + dU / D) noise must climb to leave the lower branch (BARRIER_CAP: never)
    "barrier_upper",  # the same from the upper branch
)
# Pearson of the edges d_i d_j (d = S_upper - S_lower) with the target's:
BRANCH_TARGET_NAMES = ("switch_match",)
BARRIER_POINTS = 64  # points along the line from one branch to the other
BARRIER_CAP = 10.0  # log(1 + dU / D) of a monostable set, and the most any set gets
BRANCHES_APART = 1e-6  # |S_upper - S_lower| above which a set counts as bistable


def bistability(
    lower: torch.Tensor, upper: torch.Tensor, w, I, G, sigma, coupling_matrix, target_fc=None
) -> torch.Tensor:
    """Summaries (B, K) of the two branches S_lower, S_upper (B, N), in the order of ``BRANCH_NAMES``
    (+ ``BRANCH_TARGET_NAMES`` with ``target_fc``).

    Most of the best-fitting sets are bistable: noise carries the simulation from the branch it starts
    on to the upper one (and sometimes back), and its FC is the upper branch's or the switch's, which
    the lower branch's linearisation cannot see. How easily noise switches: along the straight line
    S(a) = S_lower + a d, the drift projected on d, g(a) = f(S(a)) . d / |d|, is 0 at both ends; the
    "potential" climbed from a branch to where g first changes sign is dU = -integral g |d| da, and
    D = sum d_i^2 q_i / (2 |d|^2) is the noise intensity along d.
    """
    d = upper - lower  # (B, N)
    norm = d.norm(dim=1)  # (B,)
    bistable = norm > BRANCHES_APART
    a = torch.linspace(0, 1, BARRIER_POINTS, dtype=d.dtype, device=d.device)  # (M,)
    s = lower[:, None, :] + a[None, :, None] * d[:, None, :]  # (B, M, N)
    x = J * w[:, None, :] * s + (J * G)[:, None, None] * (s @ coupling_matrix.T) + I[:, None, :]
    g = (neural_drift(s, x) * d[:, None, :]).sum(2) / norm.clamp_min(1e-12)[:, None]  # (B, M), 1/s
    step = norm[:, None] / (BARRIER_POINTS - 1)
    noise = (d**2 * sigma**2 / SIGMA_UNIT).sum(1) / (2 * norm.clamp_min(1e-12) ** 2)  # (B,)
    columns = [d.abs().mean(1)]
    for side in (g, -g.flip(1)):  # from the lower branch (uphill while g < 0), then from the upper
        restoring = torch.cat([torch.ones_like(side[:, :1]), side[:, 1:] <= 0], dim=1)  # g(0) ~ 0: counted
        climbing = torch.cumprod(restoring.to(side.dtype), dim=1)  # 1 until the drift first turns
        du = (-side * climbing * step).sum(1).clamp_min(0)
        barrier = torch.log1p(du / noise.clamp_min(1e-30)).clamp(max=BARRIER_CAP)
        columns.append(torch.where(bistable, barrier, torch.full_like(barrier, BARRIER_CAP)))
    if target_fc is not None:
        rows, cols = torch.triu_indices(d.shape[1], d.shape[1], 1, device=d.device)
        match = pattern_match(d[:, rows] * d[:, cols], target_fc)
        columns.append(torch.where(bistable, match, torch.zeros_like(match)))
    return torch.stack(columns, dim=1)
