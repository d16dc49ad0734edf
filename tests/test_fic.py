"""The FIC model (docs/fic.md): w_IE solution, settling, validity, its cost, and every stage."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from conftest import TINY_REGIONS, TINY_TR, tiny_overrides
from hydra import compose, initialize_config_module

from pmfm.cost import FIC, combine_repeats, cost_variant, evaluate, repeat_stats
from pmfm.params import FIC_FIXED_BOUNDS, ParamError, ParamSpace, fic_bounds
from pmfm.physics import fic
from pmfm.pipelines.config import simulator_of
from pmfm.sim.fic import integrate_fic
from pmfm.sim.noise import Noise
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.registry import resolve_method
from pmfm.sim.simulate import simulate
from pmfm.sim.simulator import Simulator


def _params(n=8, b=5, seed=0, sigma=0.0) -> fic.FICParams:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return fic.FICParams(
        w_ee=2.7 + 3 * rand(b, n), w_ei=0.3 + 2.9 * rand(b, n), G=3 * rand(b), sigma=torch.full((b, n), sigma)
    )


def _coupling(n=8, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    sc = rng.uniform(0, 100, (n, n))
    sc = (sc + sc.T) / 2
    np.fill_diagonal(sc, 0)
    return fic.coupling_matrix(torch.as_tensor(sc))


def _rates_at(state: fic.SteadyState, p: fic.FICParams, c: torch.Tensor):
    """(r_E, r_I, dS_E/dt, dS_I/dt) evaluated at the solved fixed point."""
    i_e, i_i = fic.currents(
        state.s_e, state.s_i, fic.J_N * p.w_ee, (fic.J_N * p.G)[:, None], fic.J_N * p.w_ei,
        state.w_ie, c.T.contiguous(), lambda s, ct: s @ ct,
    )  # fmt: skip
    r_e, r_i = fic.transfer_e(i_e), fic.transfer_i(i_i)
    return (r_e, r_i, *fic.drifts(state.s_e, state.s_i, r_e, r_i))


# -- the w_IE solution and the fixed point ---------------------------------------------------------


@pytest.mark.parametrize("target", [3.0, 2.5, 4.0])
def test_w_ie_puts_every_region_at_the_target_rate(target):
    p, c = _params(n=68, b=6), _coupling(68)
    state = fic.steady_state(p, c, target_rate=target)
    r_e, _, ds_e, ds_i = _rates_at(state, p, c)
    assert (r_e - target).abs().max() < 1e-6  # Hz, at the fixed point of every region
    assert ds_e.abs().max() < 1e-9 and ds_i.abs().max() < 1e-9  # it is a fixed point
    assert (state.w_ie > 0).all()


def test_excitatory_steady_state_is_exact():
    s_e, i_e = fic.excitatory_steady_state(3.0)
    g = fic.GAMMA * 3.0 * fic.TAU_E
    assert s_e == pytest.approx(g / (1 + g), abs=1e-15)
    assert s_e == pytest.approx(0.16128, abs=1e-5) and i_e == pytest.approx(0.37653, abs=1e-5)  # DELSSOME
    assert float(fic.transfer_e(torch.tensor(i_e, dtype=torch.float64))) == pytest.approx(3.0, abs=1e-9)
    # the release's hard-coded state is the fixed point of ~3.0632 Hz
    s_rel, i_rel = fic.excitatory_steady_state(0.1641205151 / ((1 - 0.1641205151) * fic.GAMMA * fic.TAU_E))
    assert s_rel == pytest.approx(0.1641205151, abs=1e-10) and i_rel == pytest.approx(0.3772259651, abs=1e-6)


def test_transfer_is_finite_at_its_removable_singularity():
    x = torch.tensor([fic.B_E / fic.A_E, fic.B_I / fic.A_I])
    assert torch.isfinite(fic.transfer_e(x[:1])).all() and torch.isfinite(fic.transfer_i(x[1:])).all()
    assert float(fic.transfer_e(x[:1].double())) == pytest.approx(1 / fic.D_E)


def test_without_noise_the_model_settles_at_the_solved_state():
    # enough inhibition for a stable fixed point (w_EE <= w_EI + 1 here; stronger excitation runs away,
    # which is what the rate rule catches)
    g = torch.Generator().manual_seed(1)
    w_ei = 2.0 + torch.rand(4, 8, generator=g, dtype=torch.float64)
    w_ee = w_ei - 0.5 + torch.rand(4, 8, generator=g, dtype=torch.float64)
    gs = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    p = fic.FICParams(w_ee=w_ee, w_ei=w_ei, G=gs, sigma=torch.zeros(4, 8))
    c = _coupling(8)
    state = fic.steady_state(p, c)
    protocol = SimProtocol.shortened(40, dt=0.006, warmup_steps=0)
    stream = Noise.independent(0, torch.arange(4)).stream(4, 8, protocol.total_steps, torch.float64, "cpu")
    start = (state.s_e * 0.9, state.s_i * 1.1)  # perturbed off the fixed point
    out = integrate_fic(p, c, protocol, stream, initial=start)
    assert (out["S_E"] - state.s_e).abs().max() < 1e-8
    assert (out["S_I"] - state.s_i).abs().max() < 1e-8
    assert (out["rate"] - 3.0).abs().max() < 0.05  # mean over the main loop, from the perturbed start


# -- validity ------------------------------------------------------------------------------------


def test_rate_rule_flags_runs_whose_mean_rate_leaves_the_band():
    rates = torch.tensor([[3.0, 2.7, 3.3], [3.0, 3.31, 3.0], [2.69, 3.0, 3.0], [3.0, float("nan"), 3.0]])
    assert fic.rate_valid(rates).tolist() == [True, False, False, False]


def test_a_run_outside_the_band_is_invalid_and_drops_out_of_the_cost(tiny_folder):
    from pmfm.data import load_folder
    from pmfm.evaluate import evaluate_params

    data = load_folder(tiny_folder, "test", n_tr=TINY_TR)
    protocol = SimProtocol.shortened(TINY_TR, dt=0.006, warmup_steps=50)
    at_3hz = Simulator(protocol=protocol, circuit="fic", dtype="float64", bounds="fixed")
    space = at_3hz.param_space(data)
    # uniform maps w_EE = 3, w_EI = 2.5 (a stable fixed point), G = 1, the lowest noise
    theta = torch.tensor([[3.0, 0, 0, 2.5, 0, 0, 1.0, 0.0005, 0, 0]], dtype=torch.float64)
    low = evaluate_params(theta, space, data, at_3hz, repeats=2, variant=FIC).costs
    assert low.mean_rate.shape == (1, TINY_REGIONS)
    assert (low.mean_rate - 3.0).abs().max() < 0.05 and int(low.n_valid_rate[0]) == 2
    assert int(low.n_valid()[0]) == 2 and float(low.total[0]) < 5
    # the same runs judged against a band they leave: band [2.7, 2.9]
    band = dataclasses.replace(at_3hz, rate_band=(2.7, 2.9))
    out = evaluate_params(theta, space, data, band, repeats=2, variant=FIC).costs
    torch.testing.assert_close(out.mean_rate, low.mean_rate)
    assert int(out.n_valid_rate[0]) == 0 and int(out.n_valid_fc[0]) == 0 and int(out.n_valid_fcd[0]) == 0
    assert float(out.fc_cost[0]) == float(out.fc_l1[0]) == float(out.ks[0]) == 5.0  # docs/fic.md


# -- the FIC cost ---------------------------------------------------------------------------------


def _numpy_fic_cost(bold, emp_fc, emp_cdf, repeats, window, n_bins):
    """Plain numpy: raw FC correlation + L1 + KS on [-1, 1] of R repeats averaged."""
    fcs, cdfs = [], []
    n, t = bold.shape[1:]
    iu = np.triu_indices(n, 1)
    for x in bold:
        fcs.append(np.corrcoef(x)[iu])
        wins = np.array([np.corrcoef(x[:, s : s + window])[iu] for s in range(t - window + 1)])
        fcd = np.clip(np.corrcoef(wins), -1, 1)[np.triu_indices(len(wins), 1)]
        cdfs.append(np.cumsum(np.histogram(fcd, n_bins, (-1.0, 1.0))[0]))
    fc = np.mean(fcs, 0)
    emp = emp_fc[iu]
    corr = np.corrcoef(fc, emp)[0, 1]
    ks = np.abs(np.mean(cdfs, 0) - emp_cdf).max() / emp_cdf[-1]
    l1 = abs(fc.mean() - emp.mean())
    return 1 - corr, l1, ks, 1 - corr + l1 + ks


def test_fic_cost_equals_a_numpy_implementation():
    rng = np.random.default_rng(3)
    n, t, window, n_bins, r = 6, 60, 15, 500, 3
    variant = cost_variant("fic", window=window, n_bins=n_bins)
    assert (variant.fisher_z, variant.hist_min, variant.hist_max, variant.use_l1) == (False, -1.0, 1.0, True)
    bold = rng.standard_normal((r, n, t)) + 0.7 * rng.standard_normal((r, 1, t))
    emp_bold = rng.standard_normal((1, n, t)) + rng.standard_normal((1, 1, t))
    emp_fc = np.corrcoef(emp_bold[0])
    emp_cdf = repeat_stats(torch.tensor(emp_bold), variant).cdf[0].numpy()
    costs = evaluate(torch.tensor(bold), emp_fc, emp_cdf, repeats=r, variant=variant)
    want = _numpy_fic_cost(bold, emp_fc, emp_cdf, r, window, n_bins)
    got = (costs.fc_cost[0], costs.fc_l1[0], costs.ks[0], costs.total[0])
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-10, atol=1e-12)


def test_a_term_without_a_valid_run_is_5():
    rng = np.random.default_rng(0)
    bold = torch.tensor(rng.standard_normal((2, 5, 40)))
    variant = cost_variant("fic", window=10, n_bins=100)
    stats = repeat_stats(bold, variant)
    none = type(stats)(
        stats.fc, stats.cdf, torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    )
    costs = combine_repeats(none, np.corrcoef(bold[0].numpy()), stats.cdf[0], 2, variant)
    assert (float(costs.fc_cost[0]), float(costs.fc_l1[0]), float(costs.ks[0])) == (5.0, 5.0, 5.0)
    assert float(costs.total[0]) == 15.0
    assert cost_variant("auto", circuit="fic") == FIC and cost_variant("auto").name == "kong2021"


# -- parameters, SC and integrator choice ----------------------------------------------------------


def test_fic_parameter_space_names_bounds_and_starts():
    rng = np.random.default_rng(0)
    basis = np.column_stack([np.ones(8), rng.uniform(1.0, 1.7, 8), rng.uniform(-5, 7, 8)])
    m = 0.286
    release = fic_bounds(m)
    assert release.w == pytest.approx((20 * m - 3, 20 * m)) and release.I == pytest.approx((22 * m - 6, 3.2))
    assert (release.G, release.sigma) == ((0.0, 3.0), (0.0005, 0.01))
    assert fic_bounds(0.05).w == (0.0, 1.0) and fic_bounds(0.6).I == (3.5, 5.0)  # the clips
    assert fic_bounds(kind="fixed") == FIC_FIXED_BOUNDS and FIC_FIXED_BOUNDS.w == (1.0, 10.0)
    space = ParamSpace(basis, bounds=release, circuit="fic")
    assert space.names[:4] == ("wEE0", "wEE1", "wEE2", "wEI0") and space.names[6] == "G"
    starts = space.random_start(20, np.random.default_rng(1))
    assert bool(space.is_feasible(starts).all())
    # the myelin coefficients are half the least-squares ones: replay the draw without halving
    plain = ParamSpace(basis, bounds=release).draw_start(np.random.default_rng(5))
    halved = space.draw_start(np.random.default_rng(5))
    np.testing.assert_allclose(halved[[1, 4]], plain[[1, 4]] / 2)
    np.testing.assert_allclose(np.delete(halved, [1, 4]), np.delete(plain, [1, 4]))
    bad = starts[:1].clone()
    bad[0, 6] = 3.5
    with pytest.raises(ParamError, match="G = 3.5"):
        space.check(bad)
    bad = starts[:1].clone()
    bad[0, 0] += 100
    with pytest.raises(ParamError, match="w_EE"):
        space.check(bad)


def test_sc_is_scaled_to_002_with_an_optional_log():
    sc = torch.tensor([[0.0, 100.0], [10.0, 0.0]], dtype=torch.float64)
    assert fic.coupling_matrix(sc).max() == pytest.approx(0.02)
    log = fic.coupling_matrix(sc, "log")
    assert log.max() == pytest.approx(0.02) and float(log[1, 0]) == pytest.approx(
        0.02 * np.log(11) / np.log(101)
    )
    with pytest.raises(ValueError, match="transform"):
        fic.coupling_matrix(sc, "sqrt")


def test_other_paths_fall_back_to_the_plain_path_and_never_run_the_wrong_model(caplog):
    assert resolve_method("auto", torch.device("cuda"), "fic") == "euler"
    assert resolve_method("fused", torch.device("cuda"), "fic") == "euler"
    assert resolve_method("auto", torch.device("cuda")) in ("fused", "euler")  # the pMFM's choice
    rng = np.random.default_rng(0)
    basis = np.column_stack([np.ones(8), rng.uniform(1.0, 1.7, 8), rng.uniform(-5, 7, 8)])
    space = ParamSpace(basis, circuit="fic")
    theta = space.random_start(2, np.random.default_rng(0))
    sc = _coupling(8).numpy() * 1000
    protocol = SimProtocol.shortened(4, dt=0.006, warmup_steps=10)
    ref = simulate(theta, space, sc, Simulator(protocol=protocol, method="euler", circuit="fic"))
    with caplog.at_level(logging.WARNING):
        fused = simulate(theta, space, sc, Simulator(protocol=protocol, method="fused", circuit="fic"))
    assert "does not implement the FIC model" in caplog.text
    torch.testing.assert_close(fused.bold, ref.bold, rtol=0, atol=0)
    assert ref.rate is not None and ref.rate.shape == (2, 8)
    pmfm_sim = Simulator(protocol=protocol)
    with pytest.raises(ValueError, match="fic space"):
        simulate(theta, space, sc, pmfm_sim, Noise())
    assert Simulator(circuit="fic", method="fused").resolved_method == "euler"


def test_protocol_at_the_validation_dt_keeps_the_samples():
    train = SimProtocol(dt=0.006, warmup_steps=5000, duration_s=1008.714, burn_in_samples=201)
    assert (train.main_steps, train.tr_steps, train.n_tr) == (168_120, 120, 1200)
    vali = train.at_dt(0.0005)
    assert (vali.main_steps, vali.tr_steps, vali.n_tr, vali.warmup_steps) == (2_017_440, 1440, 1200, 5000)
    np.testing.assert_allclose(vali.kept_times_s(), train.kept_times_s(), atol=1e-9)


def test_simulator_fic_config_selects_every_fic_piece():
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        for name in ("simulate", "generate", "train", "fit"):
            cfg = compose(name, overrides=["simulator=fic", "device=cpu"])
            sim = simulator_of(cfg)
            assert cost_variant(cfg.cost.name, sim.circuit) == FIC
            assert (sim.circuit, sim.protocol.dt, sim.eval_dt, sim.protocol.n_tr) == (
                "fic",
                0.006,
                0.0005,
                1200,
            )
            assert (sim.protocol.warmup_steps, sim.protocol.burn_in_samples) == (5000, 201)
            assert (sim.target_rate, sim.rate_band) == (3.0, (2.7, 3.3))
        cfg = compose("fit", overrides=["device=cpu"])
        assert simulator_of(cfg).circuit == "pmfm"
        assert cost_variant(cfg.cost.name).name == "kong2021"


# -- every stage with simulator=fic on the shrunk config ------------------------------------------


def fic_overrides(folder) -> list[str]:
    """tiny_overrides for the FIC model: 100 TRs of 120 steps (dt 0.006 s), validation at the same dt."""
    base = [o for o in tiny_overrides(folder) if not o.startswith("protocol=")]
    return [
        "simulator=fic",  # selects protocol=fic (dt 0.006 s), shrunk here
        *base,
        "protocol.warmup_steps=100",
        "protocol.burn_in_samples=2",
        f"protocol.duration_s={((TINY_TR + 2) * 120 - 1) * 0.006:.3f}",
        "simulator.eval_dt=0.006",
    ]


@pytest.fixture
def fic_folders(tiny_splits):
    return tiny_splits


def _stage_overrides(folder, root) -> list[str]:
    """The shrunk config of the stage tests: tiny data, a 36-sample CMA-ES dataset, 2 epochs."""
    base = [o for o in fic_overrides(folder) if not o.startswith("data.split")] + ["data.split=train"]
    return [
        *base,
        f"paths.datasets={root}",
        "dataset=cmaes",
        "dataset.name=fic_tiny",
        "dataset.repeats=1",
        "dataset.num_shards=2",
        "dataset.cmaes.n_starts=3",
        "dataset.cmaes.popsize=6",
        "dataset.cmaes.mu=2",
        "dataset.cmaes.max_generations=2",
        "logger=csv",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "datamodule.batch_size=16",
        "plot=false",
        "validation.repeats=2",
        "validation.top_k=2",
    ]


def test_generate_train_and_surrogate_fit_run_the_fic_model(fic_folders, tmp_path):
    """generate, train and fit (strategy=surrogate, which generates and trains first) with simulator=fic."""
    from pmfm.datasets import load_dataset
    from pmfm.models import SurrogateModule
    from pmfm.pipelines.fit.run import fit

    common = _stage_overrides(fic_folders, tmp_path / "datasets")
    run_dir = tmp_path / "surrogate"
    run_dir.mkdir()
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "fit",
            overrides=[
                *common,
                "strategy=surrogate",
                "search.n_starts=2",
                "strategy.top_k=2",
                "strategy.repeats=1",
                "search.popsize=8",
                "search.mu=2",
                "search.max_generations=3",
            ],
        )
    fit(cfg, run_dir)
    # generate: the dataset is the FIC model's, with per-region rates and their validity
    folder = tmp_path / "datasets" / "fic_tiny_fic_100tr_dt0.006_r1"  # named after circuit, protocol, R
    rows = load_dataset(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"]["circuit"]["name"] == "fic" and manifest["config"]["cost"]["variant"] == "fic"
    assert manifest["config"]["simulator"]["dt"] == 0.006
    assert rows["mean_rate"].shape == (len(rows["theta"]), TINY_REGIONS) == (3 * 6 * 2, 8)
    in_band = ((rows["mean_rate"] >= 2.7) & (rows["mean_rate"] <= 3.3)).all(1)
    np.testing.assert_array_equal(rows["n_valid_rate"], in_band.astype(int))  # R = 1
    assert np.all(rows["n_valid_fc"] <= rows["n_valid_rate"])  # an out-of-band run counts for no term
    assert np.all(rows["total"][~in_band] == 15.0)  # three terms of 5
    # train: the checkpoint records the model and bounds it was trained on
    module = SurrogateModule.load_from_checkpoint(next((run_dir / "surrogate").rglob("*.ckpt")))
    space = module.param_space()
    assert space.circuit == "fic" and space.names[0] == "wEE0"
    hparams = module.hparams
    assert (hparams["network"], hparams["network_hparams"]["features"]) == (
        "mlp",
        "coefficients",
    )  # not the pMFM's
    # fit: candidates re-simulated, their validity reported
    validity = np.loadtxt(run_dir / "validity.csv", delimiter=",", skiprows=2, ndmin=2)
    assert validity.shape[1] == 1 + 4  # rank, train_valid, vali_valid, rate_min, rate_max
    assert (validity[:, 2] >= 0).all() and (validity[:, 3] <= validity[:, 4]).all()


@pytest.mark.slow
def test_simulator_strategy_fit_runs_the_fic_model(fic_folders, tmp_path):
    from pmfm.pipelines.fit.run import fit

    common = _stage_overrides(fic_folders, tmp_path / "datasets")
    sim_dir = tmp_path / "simulator"
    sim_dir.mkdir()
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "fit",
            overrides=[
                *common,
                "strategy=simulator",
                "strategy.n_starts=2",
                "strategy.repeats=1",
                "strategy.cmaes.popsize=6",
                "strategy.cmaes.mu=2",
                "strategy.cmaes.max_generations=2",
            ],
        )
    best = fit(cfg, sim_dir)
    assert np.isfinite(best)
    summary = json.loads((sim_dir / "summary.json").read_text())
    assert "(fic: euler" in summary["device"]
