"""The linearised pMFM: exact derivative, fixed point, Lyapunov solution, and simulation agreement."""

import numpy as np
import pytest
import torch

from pmfm.data import load_bundled
from pmfm.params import ParamSpace, RegionalParams
from pmfm.physics.dynamics import SC_SCALE, A, B, J, firing_rate, neural_drift, noise_scale
from pmfm.physics.linearized import (
    BARRIER_CAP,
    BRANCH_NAMES,
    BRANCH_TARGET_NAMES,
    BRANCHES_APART,
    SUMMARY_NAMES,
    TARGET_NAMES,
    bistability,
    correlation,
    jacobian,
    linearize,
    slope,
    summary,
)


def test_slope_is_the_derivative_of_h_including_at_its_singularity():
    x = torch.cat([torch.linspace(0.2, 0.6, 201), B / A + torch.tensor([-1e-3, -1e-5, 0.0, 1e-5, 1e-3]) / A])
    x = x.double()
    h = 1e-6
    numeric = (firing_rate(x + h) - firing_rate(x - h)) / (2 * h)
    torch.testing.assert_close(slope(x, firing_rate(x)), numeric, rtol=1e-6, atol=1e-4)
    assert slope(torch.tensor([B / A], dtype=torch.float64), torch.tensor([1 / 0.154]))[0] == pytest.approx(
        A / 2
    )


@pytest.fixture(scope="module")
def bundled():
    data = load_bundled()
    space = ParamSpace(data.basis())
    theta = space.random_start(16, np.random.default_rng(3))
    reg = space.regional(theta.double())
    sc = torch.tensor(data.sc, dtype=torch.float64)
    return data, reg, sc / sc.max() * SC_SCALE


def _drift_and_jacobian(reg, c, s):
    jw, jg = J * reg.w, (J * reg.G)[:, None]
    x = jw * s + jg * (s @ c.T) + reg.I
    eye = torch.eye(c.shape[0], dtype=c.dtype)
    return neural_drift(s, x), jacobian(s, x, firing_rate(x), jw, jg, c, eye)


def test_fixed_point_and_lyapunov_equations_hold(bundled):
    _, reg, c = bundled
    lin = linearize(reg.w, reg.I, reg.G, reg.sigma, c)
    drift, a = _drift_and_jacobian(reg, c, lin.s)
    assert drift.abs().max() < 1e-10  # S* is a fixed point
    stable = lin.eigenvalues[:, -1] < 0
    assert stable.sum() >= 12  # feasible random starts are mostly stable
    torch.testing.assert_close(
        lin.eigenvalues, torch.linalg.eigvals(a).real.sort(dim=1).values, rtol=1e-8, atol=1e-8
    )
    q = torch.diag_embed(reg.sigma**2 / 1e-3)
    p, p0 = lin.covariance[stable], lin.slow_covariance[stable]
    a, q = a[stable], q[stable]
    residual = a @ p + p @ a.transpose(1, 2) + q  # A P + P A^T + Q = 0
    assert (residual.abs().amax((1, 2)) / q.abs().amax((1, 2))).max() < 1e-8
    torch.testing.assert_close(a @ p0 @ a.transpose(1, 2), q, rtol=1e-7, atol=1e-12)  # A P0 A^T = Q


def test_covariance_matches_a_simulation_with_weak_noise():
    """Euler-Maruyama of a small network fluctuates around S* with the linearisation's covariance.

    At step dt Euler's stationary covariance solves A P + P A^T + dt A P A^T + Q = 0 (a few % above
    the continuous P when |eigenvalue| dt ~ 0.2): the simulation is compared with that, and the
    dt -> 0 limit of that equation with ``linearize``'s P.
    """
    torch.manual_seed(0)
    n, copies, dt = 6, 256, 0.002
    sc = torch.rand(n, n, dtype=torch.float64)
    c = (sc + sc.T) / 2 * (1 - torch.eye(n, dtype=torch.float64))
    c = c / c.max() * SC_SCALE
    reg = RegionalParams(
        w=torch.full((1, n), 0.6, dtype=torch.float64),
        I=torch.full((1, n), 0.3, dtype=torch.float64),
        G=torch.tensor([4.0], dtype=torch.float64),
        sigma=torch.full((1, n), 0.0005, dtype=torch.float64),
    )
    lin = linearize(reg.w, reg.I, reg.G, reg.sigma, c)
    _, a = _drift_and_jacobian(reg, c, lin.s)
    q = torch.diag(reg.sigma[0] ** 2 / 1e-3)
    eye = torch.eye(n, dtype=torch.float64)

    def stationary(step):  # vec(P) from (A (x) I + I (x) A + step A (x) A) vec(P) = -vec(Q)
        op = torch.kron(a[0], eye) + torch.kron(eye, a[0]) + step * torch.kron(a[0], a[0])
        return torch.linalg.solve(op, -q.reshape(-1)).reshape(n, n)

    torch.testing.assert_close(stationary(0.0), lin.covariance[0], rtol=1e-8, atol=1e-14)
    s = lin.s.repeat(copies, 1)  # (copies, n): start at the fixed point
    samples = []
    for step in range(6000):
        x = J * reg.w * s + J * reg.G * (s @ c.T) + reg.I
        s = s + neural_drift(s, x) * dt + noise_scale(reg.sigma, dt) * torch.randn_like(s)
        if step >= 1000 and step % 10 == 0:
            samples.append(s)
    cov = torch.cov(torch.stack(samples).reshape(-1, n).T)  # (n, n) over samples x copies
    euler = stationary(dt)
    assert ((torch.diagonal(cov) / torch.diagonal(euler)) - 1).abs().max() < 0.03
    assert (correlation(cov[None]) - correlation(euler[None])).abs().max() < 0.03


def test_summary_columns_are_finite_even_far_outside_the_bounds(bundled):
    data, reg, c = bundled
    lin = linearize(reg.w, reg.I, reg.G, reg.sigma, c)
    table = summary(lin, torch.tensor(data.fc))
    assert table.shape == (16, len(SUMMARY_NAMES) + len(TARGET_NAMES))
    assert torch.isfinite(table).all()
    assert (table[:, -2:].abs() <= 1).all()  # Pearson correlations
    wild = linearize(reg.w * 8 - 3, reg.I * 5, reg.G, reg.sigma * 3, c)
    assert torch.isfinite(summary(wild)).all()


def test_mlp_lna_memoises_its_features_and_differentiates_through_them():
    from pmfm.models.networks import build_network

    data = load_bundled()
    space = ParamSpace(data.basis())
    geometry = {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}
    net = build_network("mlp_lna", n_outputs=2, target_fc=data.fc.tolist(), hidden=8, depth=1, **geometry)
    u = space.normalise(space.random_start(5, np.random.default_rng(0))).float()
    with torch.no_grad():
        first = net.summaries(u)
    assert len(net._memo) == 5
    fresh = net.summaries(u.clone().requires_grad_(True))  # computed again, differentiably
    torch.testing.assert_close(fresh.detach(), first, rtol=1e-3, atol=1e-4)  # float64 vs float32 eigh
    u = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(u).sum(), u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="target_fc"):
        build_network("mlp_lna", n_outputs=2, target_fc="auto", **geometry)


def test_bistability_finds_both_branches_and_the_exact_one_dimensional_barrier():
    """One region (C = 0) with w = 1, I = 0.325 nA has two stable fixed points. On a line the straight
    path is the only path, so the barrier is exact: dU = -integral f dS from a branch to the saddle."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    one = {"w": torch.tensor([[1.0]]), "I": torch.tensor([[0.325]]), "G": torch.tensor([1.0])}
    one = {k: v.double() for k, v in one.items()}
    sigma, c = torch.tensor([[0.0002]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    lower = linearize(one["w"], one["I"], one["G"], sigma, c)
    upper = linearize(one["w"], one["I"], one["G"], sigma, c, upper=True)
    assert upper.s.item() - lower.s.item() > 0.3  # two branches
    assert lower.eigenvalues.item() < 0 and upper.eigenvalues.item() < 0  # both stable

    def drift(s: float) -> float:
        x = torch.tensor([[J * s + 0.325]], dtype=torch.float64)
        return neural_drift(torch.tensor([[s]], dtype=torch.float64), x).item()

    lo, hi = lower.s.item(), upper.s.item()
    saddle = brentq(drift, lo + 1e-3, hi - 1e-3)
    noise = sigma.item() ** 2 / 1e-3 / 2  # D along the line
    exact = [np.log1p(-quad(drift, lo, saddle)[0] / noise), np.log1p(quad(drift, saddle, hi)[0] / noise)]
    got = bistability(lower.s, upper.s, one["w"], one["I"], one["G"], sigma, c)[0]
    assert got[0].item() == pytest.approx(hi - lo)  # branch_gap
    np.testing.assert_allclose(got[1:].numpy(), exact, rtol=0.02)  # a 64-point sum of the integral


def test_a_monostable_set_has_one_branch_and_capped_barriers(bundled):
    data, reg, c = bundled
    lower = linearize(reg.w, reg.I, reg.G, reg.sigma, c)
    upper = linearize(reg.w, reg.I, reg.G, reg.sigma, c, upper=True)
    drift, _ = _drift_and_jacobian(reg, c, upper.s)
    assert drift.abs().max() < 1e-10  # the upper relaxation ends on a fixed point too
    table = bistability(lower.s, upper.s, reg.w, reg.I, reg.G, reg.sigma, c, torch.tensor(data.fc))
    assert table.shape == (16, len(BRANCH_NAMES) + len(BRANCH_TARGET_NAMES))
    one = (upper.s - lower.s).norm(dim=1) <= BRANCHES_APART  # random starts: some sets have one branch
    assert 0 < one.sum() < 16
    assert (table[one, 1:3] == BARRIER_CAP).all() and (table[one, 3] == 0).all()
    assert (table[~one, 1:3] < BARRIER_CAP).any() and (table[~one, 3].abs() <= 1).all()
