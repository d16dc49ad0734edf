"""The fused Triton kernel against the reference Euler path: Triton's interpreter on the CPU (tiny
sizes), the real kernel on CUDA (``gpu``-marked, full size)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    reason = "no CUDA, and TRITON_INTERPRET=1 was not set before triton was imported (conftest.py sets it)"
    pytest.skip(reason, allow_module_level=True)
pytest.importorskip("triton")

from pmfm.cost import KONG2021, cost_variant  # noqa: E402
from pmfm.data import bundled_path, load_bundled  # noqa: E402
from pmfm.evaluate import evaluate_params  # noqa: E402
from pmfm.params import ParamSpace, read_params_csv  # noqa: E402
from pmfm.physics import dynamics  # noqa: E402
from pmfm.sim import Noise, SimProtocol, Simulator, simulate  # noqa: E402
from pmfm.sim.euler import integrate_euler  # noqa: E402
from pmfm.sim.registry import resolve_method  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pmfm_step_vectors.npz"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# a short protocol the interpreter runs in seconds: 10 warm-up steps, a TR of 5 steps, 30 TRs kept
TINY = SimProtocol.shortened(30, tr_s=0.05, warmup_steps=10)


@pytest.fixture(autouse=True)
def _interpreter_without_cuda(monkeypatch):
    """Keep the interpreter on for every test here, whatever other tests did to the environment."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def hcp():
    data = load_bundled("train")
    space = ParamSpace(data.basis())
    theta = read_params_csv(bundled_path().parent / "kong2021_example.csv", space)  # (5, 10)
    return data, space, theta


def _step_vectors(hcp, n_steps, precision, layout="auto"):
    if not REFERENCE.is_file():
        pytest.skip(f"reference step vectors not found at {REFERENCE}")
    ref = dict(np.load(REFERENCE))
    data, space, _ = hcp
    theta = torch.tensor(ref["coef"])[None]
    # no warm-up, BOLD and S recorded after every step, the published noise
    protocol = SimProtocol(warmup_steps=0, duration_s=(n_steps - 1) * 0.01, tr_s=0.01, burn_in_samples=0)
    noise = Noise.explicit(torch.tensor(ref["xi"][:, :n_steps])[None])
    out = simulate(
        theta,
        space,
        data.sc,
        Simulator(protocol=protocol, method="fused", device=DEVICE, precision=precision, layout=layout),
        noise,
        record_s=True,
    )
    s, bold = out.s[0].cpu().double().numpy().T, out.bold[0].cpu().double().numpy().T
    return s, bold, ref["S"][:n_steps], ref["bold"][:n_steps]


@pytest.mark.parametrize("layout", ["split", "wide"])
def test_fused_reproduces_reference_step_vectors_interpreted(hcp, layout):
    # 300 of the 2,000 steps (the interpreter runs ~100 steps/s); the float32 Euler path has the
    # same errors: S within 2e-7, BOLD within 2e-5 while the signal is still near rest
    s, bold, ref_s, ref_bold = _step_vectors(hcp, 300, "ieee", layout)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(bold, ref_bold, rtol=0, atol=5e-5)
    assert np.linalg.norm(bold - ref_bold) / np.linalg.norm(ref_bold) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["split", "wide"])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_fused_reproduces_reference_step_vectors_gpu(hcp, precision, layout):
    s, bold, ref_s, ref_bold = _step_vectors(hcp, 2000, precision, layout)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=5e-6)
    assert np.linalg.norm(bold - ref_bold) / np.linalg.norm(ref_bold) < 1e-4  # float32 Euler: 6.4e-6


@pytest.mark.parametrize(("mode", "layout"), [("independent", "split"), ("common", "wide")])
def test_fused_keyed_noise_matches_reference_path(hcp, mode, layout):
    """The kernel draws the same SplitMix64 streams as pmfm.sim.noise: same BOLD as the Euler path."""
    data, space, theta = hcp
    theta = theta[[0, 2, 4]].repeat_interleave(2, dim=0)  # (6, 10)
    if mode == "common":
        noise = Noise.common(5, torch.tensor([0, 1, 0, 1, 0, 1]))
    else:
        noise = Noise.independent(5, torch.tensor([3, 9, 11, 12, 40, 41]))
    fused = simulate(
        theta,
        space,
        data.sc,
        Simulator(protocol=TINY, method="fused", device=DEVICE, precision="ieee", layout=layout),
        noise,
    )
    plain = simulate(theta, space, data.sc, Simulator(protocol=TINY, method="euler", device=DEVICE), noise)
    assert fused.bold.shape == plain.bold.shape == (6, 68, 30)
    assert fused.valid.all()
    torch.testing.assert_close(fused.bold, plain.bold, rtol=1e-3, atol=1e-5)
    # different streams really give different runs (the comparison above is not vacuous)
    assert (fused.bold[0] - fused.bold[1]).abs().max() > 100 * (fused.bold - plain.bold).abs().max()
    if mode == "common":  # same set, same stream: identical runs
        assert torch.equal(
            fused.bold[0],
            simulate(
                theta[:1],
                space,
                data.sc,
                Simulator(protocol=TINY, method="fused", device=DEVICE, precision="ieee", layout=layout),
                Noise.common(5, [0]),
            ).bold[0],
        )


@pytest.mark.parametrize("layout", ["split", "wide"])
def test_fused_results_do_not_depend_on_the_batch(hcp, layout):
    data, space, theta = hcp
    n = 70 if layout == "split" else 20  # two programs of 64 or of 16
    keys = torch.arange(20, 20 + n)
    kw = dict(protocol=TINY, method="fused", device=DEVICE, layout=layout)
    big = simulate(theta[torch.arange(n) % 5], space, data.sc, Simulator(**kw), Noise.independent(1, keys))
    alone = simulate(
        theta[[(n - 3) % 5]], space, data.sc, Simulator(**kw), Noise.independent(1, keys[[n - 3]])
    )
    assert torch.equal(big.bold[n - 3], alone.bold[0])  # in the second program of a batch, and alone


def test_fused_flags_nan_run_invalid(hcp):
    data, space, theta = hcp
    xi = torch.randn(3, 68, TINY.total_steps, generator=torch.Generator().manual_seed(0))
    xi[1, 7, 50] = math.nan  # one poisoned draw in run 1
    out = simulate(
        theta[:3], space, data.sc, Simulator(protocol=TINY, method="fused", device=DEVICE), Noise.explicit(xi)
    )
    assert out.valid.tolist() == [True, False, True]
    assert torch.isfinite(out.bold[[0, 2]]).all()


def test_auto_picks_fused_only_on_cuda():
    assert resolve_method("auto", torch.device("cpu")) == "euler"
    assert resolve_method("euler", torch.device("cuda")) == "euler"
    with pytest.raises(ValueError, match="unknown integration method"):
        resolve_method("rk45", torch.device("cpu"))


def test_fused_refuses_float64(hcp):
    data, space, theta = hcp
    with pytest.raises(ValueError, match="float32"):
        simulate(
            theta[:1],
            space,
            data.sc,
            Simulator(protocol=TINY, method="fused", device=DEVICE, dtype=torch.float64),
        )


RUNS = 40  # independent runs per reference set


@pytest.fixture(scope="module")
def euler_costs_gpu(hcp):
    data, space, theta = hcp
    sim = Simulator(method="euler", device="cuda")
    return evaluate_params(theta.repeat_interleave(RUNS, dim=0), space, data, sim, repeats=1, seed=1).costs


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32x3", "tf32"])
def test_fused_cost_distributions_match_reference_path(hcp, euler_costs_gpu, precision):
    """Full protocol, the 5 reference sets, 40 independent runs each: per set, the mean total of the
    fused kernel is within 2.5 standard errors of the float32 Euler path's; validity flags agree."""
    data, space, theta = hcp
    sim = Simulator(method="fused", device="cuda", precision=precision)
    fused = evaluate_params(theta.repeat_interleave(RUNS, dim=0), space, data, sim, repeats=1, seed=2).costs
    for costs in (euler_costs_gpu, fused):
        assert int(costs.n_valid().min()) == 1, "a run was flagged invalid"
    a = euler_costs_gpu.total.reshape(5, RUNS).numpy()
    b = fused.total.reshape(5, RUNS).numpy()
    se = np.sqrt(a.var(1, ddof=1) / RUNS + b.var(1, ddof=1) / RUNS)
    print(f"{precision}: euler {a.mean(1).round(3)}, fused {b.mean(1).round(3)}, se {se.round(3)}")
    assert np.all(np.abs(a.mean(1) - b.mean(1)) < 2.5 * se), (a.mean(1), b.mean(1), se)


@pytest.mark.gpu
def test_fused_ks_within_tolerance_of_float64(hcp):
    """Same noise streams in float64 (plain path) and in the kernel: the FCD KS differs by < 0.002."""
    data, space, theta = hcp
    noise = Noise.independent(3, torch.arange(5))
    kw = dict(protocol=SimProtocol(), device="cuda")
    ref = simulate(theta, space, data.sc, Simulator(method="euler", dtype="float64", **kw), noise)
    fused = simulate(theta, space, data.sc, Simulator(method="fused", **kw), noise)
    emp = (data.fc, data.fcd_cdf)
    from pmfm.cost import evaluate

    c64 = evaluate(ref.bold, *emp, repeats=1, variant=KONG2021)
    c32 = evaluate(fused.bold.double(), *emp, repeats=1, variant=cost_variant("kong2021"))
    assert torch.all((c64.ks - c32.ks).abs() < 0.002), (c64.ks, c32.ks)


@pytest.mark.parametrize("layout", ["split", "wide"])
def test_coupling_matrix_padding_is_inert(hcp, layout):
    """Regions padded to the kernel's power-of-two tiles take no part: 8 regions give the same BOLD
    as the Euler path on the same 8-region system."""
    data, _, _ = hcp
    from pmfm.params import RegionalParams

    n, bsz = 8, 2
    gen = torch.Generator().manual_seed(3)
    sc = torch.rand(n, n, generator=gen, dtype=torch.float64)
    c = dynamics.coupling_matrix(sc + sc.T).float()
    params = RegionalParams(
        w=0.5 + 0.2 * torch.rand(bsz, n, generator=gen),
        I=0.3 + 0.02 * torch.rand(bsz, n, generator=gen),
        G=torch.tensor([1.5, 2.5]),
        sigma=0.004 + 0.001 * torch.rand(bsz, n, generator=gen),
    )
    from pmfm.sim.fused import integrate_fused

    noise = Noise.independent(0, torch.arange(bsz))
    on_device = RegionalParams(*(getattr(params, k).to(DEVICE) for k in ("w", "I", "G", "sigma")))
    fused = integrate_fused(on_device, c.to(DEVICE), TINY, noise, precision="ieee", layout=layout)["bold"]
    stream = noise.stream(bsz, n, TINY.total_steps, torch.float32, "cpu")
    plain = integrate_euler(params, c, TINY, stream)["bold"]
    torch.testing.assert_close(fused.cpu(), plain, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("mode", ["independent", "common"])
def test_compiled_path_draws_the_reference_noise(hcp, mode):
    """The compiled path's device-side streams give the reference path's runs."""
    data, space, theta = hcp
    theta = theta[[1, 3]].repeat_interleave(2, dim=0)  # (4, 10)
    noise = Noise.common(2, [0, 1, 0, 1]) if mode == "common" else Noise.independent(2, [5, 6, 7, 99])
    kw = dict(protocol=TINY, device=DEVICE, coupling="matmul")
    compiled = simulate(theta, space, data.sc, Simulator(method="compiled", **kw), noise, record_s=True)
    plain = simulate(theta, space, data.sc, Simulator(method="euler", **kw), noise, record_s=True)
    if DEVICE == "cpu":  # eager: the same operations in the same order, so the same bits
        assert torch.equal(compiled.s, plain.s) and torch.equal(compiled.bold, plain.bold)
    else:  # compiled kernels and CUDA graphs: the same runs to float32 rounding
        assert float((compiled.bold - plain.bold).norm() / plain.bold.norm()) < 1e-4


def test_layout_rule_and_region_tiles():
    from pmfm.sim.fused import choose_layout, region_tiles

    cpu = torch.device("cpu")
    assert choose_layout("auto", 1, cpu) == "split"  # the interpreter counts one multiprocessor
    assert choose_layout("wide", 10**6, cpu) == "wide"
    with pytest.raises(ValueError, match="layout"):
        choose_layout("tall", 1, cpu)
    assert region_tiles(68) == (64, 16)  # 12 padded lanes instead of 60
    for n in (8, 16, 17, 33, 64, 68, 100, 114, 200, 400):
        na, nb = region_tiles(n)
        assert na + nb >= n and min(na, nb) >= 16
        assert na & (na - 1) == 0 and nb & (nb - 1) == 0  # powers of two
        assert na + nb <= max(32, 2 * n)  # never wider than one padded tile
