"""The simulator against exact solutions, the published step vectors and its own invariants."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pmfm.data import load_bundled
from pmfm.params import ParamSpace, RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.sim import Noise, SimProtocol, Simulator, simulate
from pmfm.sim.euler import integrate_euler
from pmfm.sim.noise import _mix64_int, keyed_normals, stream_base
from pmfm.sim.odeint import integrate_odeint

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pmfm_step_vectors.npz"


@pytest.fixture(scope="module")
def hcp():
    data = load_bundled("train")
    return data, ParamSpace(data.basis())


@pytest.fixture(scope="module")
def step_vectors():
    if not REFERENCE.is_file():
        pytest.skip(f"reference step vectors not found at {REFERENCE}")
    return dict(np.load(REFERENCE))


def _run_reference(step_vectors, hcp, integrator):
    data, space = hcp
    params = space.regional(torch.tensor(step_vectors["coef"])[None])
    c = dynamics.coupling_matrix(torch.tensor(np.array(data.sc)))
    n_steps = step_vectors["xi"].shape[1]
    # no warm-up, BOLD (and S) recorded after every one of the 2,000 steps
    protocol = SimProtocol(warmup_steps=0, duration_s=(n_steps - 1) * 0.01, tr_s=0.01, burn_in_samples=0)
    assert protocol.n_tr == n_steps
    noise = Noise.explicit(torch.tensor(step_vectors["xi"])[None]).stream(
        1, 68, n_steps, torch.float64, "cpu"
    )
    return integrator(params, c, protocol, noise, record_s=True)


def test_euler_reproduces_reference_step_vectors(step_vectors, hcp):
    out = _run_reference(step_vectors, hcp, integrate_euler)
    np.testing.assert_allclose(out["s"][0].numpy().T, step_vectors["S"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["bold"][0].numpy().T, step_vectors["bold"], rtol=0, atol=1e-12)
    for name in "zfvq":
        np.testing.assert_allclose(out[name][0].numpy(), step_vectors[name], rtol=0, atol=1e-12)


def test_torchdiffeq_within_one_percent_of_reference(step_vectors, hcp):
    out = _run_reference(step_vectors, hcp, integrate_odeint)
    ref = step_vectors["bold"]
    rel = np.linalg.norm(out["bold"][0].numpy().T - ref) / np.linalg.norm(ref)
    assert rel < 0.01
    assert rel > 1e-4  # the documented one-step lag of the Balloon is really there
    # S itself has no lag: the neural update is the same Euler step
    np.testing.assert_allclose(out["s"][0].numpy().T, step_vectors["S"], rtol=0, atol=1e-12)


def test_balloon_at_rest_gives_zero_bold():
    z, f, v, q = balloon.rest_state((3, 5), torch.float64, "cpu")
    assert torch.equal(balloon.bold(v, q), torch.zeros(3, 5, dtype=torch.float64))
    s = torch.zeros(3, 5, dtype=torch.float64)
    for d in balloon.derivatives(s, z, f, v, q):  # rest is an equilibrium (to rounding)
        assert d.abs().max() < 1e-15
    for _ in range(10_000):  # and it stays there over 100 s of integration
        dz, df, dv, dq = balloon.derivatives(s, z, f, v, q)
        z, f, v, q = z + 0.01 * dz, f + 0.01 * df, v + 0.01 * dv, q + 0.01 * dq
    assert balloon.bold(v, q).abs().max() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_firing_rate_finite_and_continuous_at_singularity(dtype):
    x0 = dynamics.B / dynamics.A  # a*x = b
    x = torch.tensor([x0], dtype=dtype)
    u = dynamics.A * x - dynamics.B
    h = dynamics.firing_rate(x)
    assert torch.isfinite(h).all()
    # limit 1/d + u/2 (u is the rounding residue of a*x - b in this precision)
    np.testing.assert_allclose(h.double().numpy(), (1 / dynamics.D + u.double() / 2).numpy(), rtol=1e-6)
    # exactly 0 for u = 0 gives the limit
    h0 = dynamics.firing_rate(
        torch.tensor([0.0], dtype=dtype) * 0 + torch.tensor(x0, dtype=torch.float64).to(dtype)
    )
    assert torch.isfinite(h0).all()
    # agrees with the direct float64 formula a little away from the singularity
    xs = torch.linspace(x0 - 0.05, x0 + 0.05, 1001, dtype=torch.float64)
    us = dynamics.A * xs - dynamics.B
    direct = us / (1 - torch.exp(-dynamics.D * us))
    ok = us.abs() > 1e-3
    got = dynamics.firing_rate(xs.to(dtype)).double()
    np.testing.assert_allclose(
        got[ok].numpy(), direct[ok].numpy(), rtol=1e-5 if dtype == torch.float32 else 1e-12
    )
    assert torch.isfinite(got).all()


def test_firing_rate_exact_zero_argument():
    # find an x with a*x - b == 0 exactly in float64
    x = torch.tensor([0.4], dtype=torch.float64)  # 270 * 0.4 = 108 exactly
    assert (dynamics.A * x - dynamics.B).item() == 0.0
    assert dynamics.firing_rate(x).item() == pytest.approx(1 / dynamics.D, rel=1e-15)


def test_default_protocol_samples_spec_section_4():
    p = SimProtocol()
    assert p.main_steps == 98_401 and p.total_steps == 99_401
    assert p.tr_steps == 72 and p.n_samples == 1367 and p.n_tr == 1200
    steps = p.sample_steps()
    assert steps[167] == 72 * 168 and steps[-2] == 72 * 1366 and steps[-1] == 98_401
    t = p.kept_times_s()
    np.testing.assert_allclose(t[:2], [120.96, 121.68])
    np.testing.assert_allclose(t[-2:], [983.52, 984.01])
    np.testing.assert_allclose(np.diff(t[:-1]), 0.72)
    control = SimProtocol(dt=0.001)
    assert control.main_steps == 984_001 and control.tr_steps == 720 and control.n_tr == 1200
    assert control.warmup_steps == 1000


def test_kept_samples_follow_a_known_input_signal():
    """With w = G = 0 each region is a scalar ODE; drive it with known noise and compare every kept
    sample of S (and BOLD) to a plain numpy integration of the same equations."""
    protocol = SimProtocol(
        warmup_steps=7, duration_s=30.0, burn_in_samples=5
    )  # 3,001 steps: final sample off-grid
    n, dt = 2, protocol.dt
    steps = np.arange(protocol.total_steps)
    xi = np.stack([np.sin(0.01 * steps), np.cos(0.003 * steps)])  # (N, steps), a known signal
    params = RegionalParams(
        w=torch.zeros(1, n, dtype=torch.float64),
        I=torch.tensor([[0.3, 0.35]], dtype=torch.float64),
        G=torch.zeros(1, dtype=torch.float64),
        sigma=torch.tensor([[0.005, 0.002]], dtype=torch.float64),
    )
    stream = Noise.explicit(torch.tensor(xi)[None]).stream(1, n, protocol.total_steps, torch.float64, "cpu")
    out = integrate_euler(params, torch.zeros(n, n, dtype=torch.float64), protocol, stream, record_s=True)

    # the same system in numpy, step by step
    u = dynamics.A * np.array([0.3, 0.35]) - dynamics.B
    h = u / (1 - np.exp(-dynamics.D * u))
    scale = np.array([0.005, 0.002]) * np.sqrt(dt / 0.001)
    s = np.full(n, dynamics.S0)
    z, f, v, q = np.zeros(n), np.ones(n), np.ones(n), np.ones(n)
    for k in range(protocol.warmup_steps):
        s = s + dt * (-s / dynamics.TAU_S + dynamics.GAMMA * (1 - s) * h) + scale * xi[:, k]
    s_at, bold_at = {}, {}
    for m in range(1, protocol.main_steps + 1):
        k = protocol.warmup_steps + m - 1
        s = s + dt * (-s / dynamics.TAU_S + dynamics.GAMMA * (1 - s) * h) + scale * xi[:, k]
        vp = v ** (1 / balloon.ALPHA)
        dz = s - balloon.KAPPA * z - balloon.GAMMA_H * (f - 1)
        dv = (f - vp) / balloon.TAU
        dq = (f * (1 - (1 - balloon.RHO) ** (1 / f)) / balloon.RHO - q * vp / v) / balloon.TAU
        z, f, v, q = z + dt * dz, f + dt * z, v + dt * dv, q + dt * dq
        s_at[m] = s.copy()
        bold_at[m] = (
            100
            / balloon.RHO
            * balloon.V0
            * (balloon.K1 * (1 - q) + balloon.K2 * (1 - q / v) + balloon.K3 * (1 - v))
        )
    kept = list(range(72 * 6, 3001, 72)) + [3001]  # samples 5.. of "after every 72nd step" + the final one
    assert kept == protocol.sample_steps()[5:].tolist()
    np.testing.assert_allclose(
        out["s"][0].numpy().T, np.stack([s_at[m] for m in kept]), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(
        out["bold"][0].numpy().T, np.stack([bold_at[m] for m in kept]), rtol=1e-9, atol=1e-13
    )


# -- noise ---------------------------------------------------------------------------------------


def test_keyed_normals_match_python_splitmix_reference():
    seed, key, step, n = 7, 12345, 9, 6
    got = keyed_normals(seed, torch.tensor([key]), step, 1, n, dtype=torch.float64)[0, 0]
    base = stream_base(seed, key) & ((1 << 64) - 1)
    expected = []
    for pair in range(3):
        counter = step * 3 + pair
        z = _mix64_int(base + (counter + 1) * 0x9E3779B97F4A7C15)
        u1, u2 = ((z >> 32) + 1) / 2**32, (z & 0xFFFFFFFF) / 2**32
        r = np.sqrt(-2 * np.log(u1))
        expected += [r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_keyed_normals_statistics():
    x = keyed_normals(3, torch.arange(40), 0, 2000, 17, dtype=torch.float64)  # (T, K, N), 1.36 M draws
    flat = x.flatten()
    assert abs(flat.mean().item()) < 5 / np.sqrt(flat.numel())
    assert abs(flat.std().item() - 1) < 0.005
    assert abs(((flat**4).mean() - 3).item()) < 0.05  # Gaussian kurtosis
    # streams, steps and regions are uncorrelated
    assert abs(np.corrcoef(x[:, 0, 0], x[:, 1, 0])[0, 1]) < 0.1
    assert abs(np.corrcoef(x[:-1, 0, 0], x[1:, 0, 0])[0, 1]) < 0.1
    assert abs(np.corrcoef(x[:, 0, 0], x[:, 0, 1])[0, 1]) < 0.1
    # a block starting mid-stream is the same stream
    assert torch.equal(
        keyed_normals(3, torch.tensor([5]), 100, 10, 17, dtype=torch.float64)[:, 0], x[100:110, 5]
    )


SHORT = SimProtocol.shortened(n_tr=20, warmup_steps=50)


def test_same_seed_same_bold_and_seed_matters(hcp):
    data, space = hcp
    theta = space.random_start(3, np.random.default_rng(0))
    a = simulate(theta, space, data.sc, Simulator(protocol=SHORT), Noise.independent(1))
    b = simulate(theta, space, data.sc, Simulator(protocol=SHORT), Noise.independent(1))
    c = simulate(theta, space, data.sc, Simulator(protocol=SHORT), Noise.independent(2))
    assert torch.equal(a.bold, b.bold)
    assert not torch.allclose(a.bold, c.bold)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_chunking(hcp, dtype):
    data, space = hcp
    theta = space.random_start(7, np.random.default_rng(1))
    keys = torch.arange(100, 107)
    whole = simulate(
        theta, space, data.sc, Simulator(protocol=SHORT, dtype=dtype), Noise.independent(5, keys)
    )
    for chunk in (1, 3, 4):
        parts = simulate(
            theta,
            space,
            data.sc,
            Simulator(protocol=SHORT, dtype=dtype, chunk_size=chunk),
            Noise.independent(5, keys),
        )
        assert torch.equal(parts.bold, whole.bold)
    # simulated in separate calls, keyed by their ids, the sets give the same BOLD
    tail = simulate(
        theta[4:], space, data.sc, Simulator(protocol=SHORT, dtype=dtype), Noise.independent(5, keys[4:])
    )
    assert torch.equal(tail.bold, whole.bold[4:])


def test_common_random_numbers_share_noise_within_a_repeat(hcp):
    data, space = hcp
    theta = space.random_start(1, np.random.default_rng(2)).repeat(4, 1)  # one set, 4 simulations
    repeats = torch.tensor([0, 1, 0, 1])
    out = simulate(theta, space, data.sc, Simulator(protocol=SHORT), Noise.common(9, repeats))
    assert torch.equal(out.bold[0], out.bold[2]) and torch.equal(out.bold[1], out.bold[3])
    assert not torch.allclose(out.bold[0], out.bold[1])
    stream = Noise.common(9, repeats).stream(4, 68, 10, torch.float32, "cpu")
    xi = stream.at(3)
    assert torch.equal(xi[0], xi[2]) and not torch.equal(xi[0], xi[1])


def test_nan_simulation_flagged_invalid_not_raised(hcp):
    data, space = hcp
    theta = space.random_start(3, np.random.default_rng(3))
    xi = torch.randn(3, 68, SHORT.total_steps, dtype=torch.float64)
    xi[1, 5, 200] = float("nan")
    out = simulate(theta, space, data.sc, Simulator(protocol=SHORT), Noise.explicit(xi))
    assert out.valid.tolist() == [True, False, True]
    assert torch.isfinite(out.bold[0]).all() and torch.isfinite(out.bold[2]).all()


def test_euler_and_torchdiffeq_agree_on_deterministic_run(hcp):
    """Noise off: the two paths differ only by the Balloon's one-step lag."""
    data, space = hcp
    theta = (
        torch.tensor(
            np.loadtxt(REFERENCE.parents[0] / "kong2021_example_expected_output.csv", delimiter=",")[
                :10, :2
            ].T
        )
        if REFERENCE.is_file()
        else space.random_start(2, np.random.default_rng(4))
    )
    protocol = SimProtocol.shortened(n_tr=40, warmup_steps=100)
    zero = Noise.explicit(torch.zeros(1, 68, protocol.total_steps, dtype=torch.float64))
    a = simulate(theta, space, data.sc, Simulator(protocol=protocol, dtype=torch.float64), zero)
    b = simulate(
        theta, space, data.sc, Simulator(protocol=protocol, dtype=torch.float64, method="torchdiffeq"), zero
    )
    rel = (a.bold - b.bold).norm() / a.bold.norm()
    assert rel < 0.02


def test_float32_and_float64_agree_for_the_same_noise(hcp):
    data, space = hcp
    theta = space.random_start(2, np.random.default_rng(5))
    a = simulate(theta, space, data.sc, Simulator(protocol=SHORT, dtype=torch.float32), Noise.independent(3))
    b = simulate(theta, space, data.sc, Simulator(protocol=SHORT, dtype=torch.float64), Noise.independent(3))
    assert ((a.bold.double() - b.bold).norm() / b.bold.norm()) < 1e-3
