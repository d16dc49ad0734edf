"""The searchers: Kong2021's multi-start CMA-ES on pycma and the objectives (docs/fitting.md)."""

import pickle

import numpy as np
import pytest
import torch
from conftest import TINY_TR

from pmfm.evaluate import CRN_STRIDE, FunctionObjective, Objective, SimulatorObjective, crn_seed
from pmfm.search import CMAESSettings, MultiStartCMAES, chi_n, kong_constants, kong_stds

P = 10  # the coefficient space: w0..w2, I0..I2, G, s0..s2


class BoxSpace:
    """A 10-D box [lo, hi], the part of a ParamSpace a searcher needs (dim, is_feasible)."""

    dim = P

    def __init__(self, lo=0.0, hi=1.0):
        self.lo = torch.full((P,), float(lo), dtype=torch.float64)
        self.hi = torch.full((P,), float(hi), dtype=torch.float64)

    def is_feasible(self, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        return ((theta >= self.lo) & (theta <= self.hi)).all(1) & torch.isfinite(theta).all(1)


def checked(space, fn, log=None):
    """fn wrapped to fail on any infeasible row and to log (batch size, keys, generation) per call."""

    def wrapped(theta, *, keys=None, generation=0):
        assert space.is_feasible(theta).all(), "the searcher evaluated an infeasible point"
        if log is not None:
            log.append((theta.shape[0], None if keys is None else keys.clone(), generation))
        return fn(theta, generation)

    return wrapped


def sphere(centre, scale=1.0):
    centre = torch.as_tensor(centre, dtype=torch.float64)
    return lambda theta, generation=0: scale * ((theta - centre) ** 2).sum(1)


def small_settings(**kw) -> CMAESSettings:
    return CMAESSettings(**{"popsize": 16, "mu": 4, "max_generations": 40, **kw})


# -- constants -----------------------------------------------------------------------------------


def test_kong_stds_from_the_start_intercepts():
    theta0 = [0.6, 0.1, -0.2, -0.3, 0.05, 0.0, 4.0, 0.004, 0.0, 0.0]
    expected = [0.3, 0.3, 0.3, 0.15, 0.15, 0.15, 0.4, 0.0005, 0.0005, 0.0005]
    np.testing.assert_allclose(kong_stds(theta0), expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="10 coefficients"):
        kong_stds(np.zeros(9))


def test_chi_n_standard_and_released_quirk():
    assert chi_n(10) == pytest.approx(3.0847, abs=1e-4)
    assert chi_n(10, quirk=True) == pytest.approx(3.0984, abs=1e-4)  # 1 / ((21 * 10) ^ 2) = 1 / 208
    k = kong_constants(10, 40)
    w = np.log(40.5) - np.log(np.arange(1, 41))
    assert k["mueff"] == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert k["cs"] == pytest.approx((k["mueff"] + 2) / (10 + k["mueff"] + 5))


def test_crn_seed_is_one_to_one_on_its_range():
    pairs = [(s, g) for s in range(-3, 12) for g in (0, 1, 2, 499, 500, CRN_STRIDE - 1)]
    assert len({crn_seed(s, g) for s, g in pairs}) == len(pairs)
    with pytest.raises(ValueError):
        crn_seed(1, CRN_STRIDE)


# -- the update is Kong's, generation by generation ------------------------------------------------


def kong_update(m, sigma, cov, generations, mu, cap, quirk):
    """The released Kong2021 CMA-ES update (numpy), fed with given candidates (pop, N) and totals."""
    n = len(m)
    k = kong_constants(n, mu, quirk)
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    ps, pc = np.zeros(n), np.zeros(n)
    d, b = np.linalg.eigh(cov)
    inv_sqrt = b @ np.diag(d**-0.5) @ b.T
    states = []
    for g, (x, f) in enumerate(generations, start=1):
        idx = np.argsort(f)
        old, m = m, x[idx[:mu]].T @ w
        ps = (1 - k["cs"]) * ps + np.sqrt(k["cs"] * (2 - k["cs"]) * k["mueff"]) * inv_sqrt @ (m - old) / sigma
        norm = np.linalg.norm(ps) / np.sqrt(1 - (1 - k["cs"]) ** (2 * g)) / k["chi_n"]
        hsig = float(norm < 1.4 + 2 / (n + 1))
        pc = (1 - k["cc"]) * pc + hsig * np.sqrt(k["cc"] * (2 - k["cc"]) * k["mueff"]) * (m - old) / sigma
        y = (x[idx[:mu]] - old).T / sigma  # (N, mu)
        cov = (
            (1 - k["c1"] - k["cmu"]) * cov
            + k["c1"] * (np.outer(pc, pc) + (1 - hsig) * k["cc"] * (2 - k["cc"]) * cov)
            + k["cmu"] * y @ np.diag(w) @ y.T
        )
        sigma = min(sigma * np.exp(k["cs"] / k["damps"] * (np.linalg.norm(ps) / k["chi_n"] - 1)), cap)
        cov = np.triu(cov, 1) + np.triu(cov).T
        d, b = np.linalg.eigh(cov)
        inv_sqrt = b @ np.diag(d**-0.5) @ b.T
        states.append((m, sigma, ps, cov))
    return states


@pytest.mark.parametrize("quirk", [False, True])
def test_update_matches_kong_released_code(quirk):
    """Same candidates and costs in: pycma with KongCSA gives Kong's mean, sigma, p_sigma and C."""
    rotation = np.linalg.qr(np.random.default_rng(3).standard_normal((P, P)))[0]
    scale = torch.as_tensor(np.logspace(0, 3, P))

    def ellipsoid(theta):  # rotated, ill-conditioned: C must learn correlations
        return (((theta - 0.3) @ torch.as_tensor(rotation) * scale) ** 2).sum(1)

    space = BoxSpace(-np.inf, np.inf)
    stds = np.array([0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.4, 5e-4, 5e-4, 5e-4])
    settings = CMAESSettings(
        popsize=30, mu=8, max_generations=30, stop_cost=-1, stop_sigma=0, chi_n_quirk=quirk
    )
    search = MultiStartCMAES(FunctionObjective(space, ellipsoid), torch.zeros(1, P), settings, 3, stds[None])
    es = search._es[0]
    generations, states = [], []
    while not search.done:
        r = search.step().starts[0]
        generations.append((r.candidates.numpy(), r.total.numpy()))
        states.append((es.mean.copy(), es.sigma, es.adapt_sigma.ps.copy(), es.sm.C.copy()))
    reference = kong_update(np.zeros(P), 0.15, np.diag(stds**2), generations, 8, 0.15, quirk)
    assert len(states) == 30
    for ours, kong in zip(states, reference, strict=True):
        np.testing.assert_allclose(ours[0], kong[0], rtol=0, atol=1e-12)
        assert ours[1] == pytest.approx(kong[1], rel=1e-10)
        np.testing.assert_allclose(ours[2], kong[2], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[3], kong[3], rtol=0, atol=1e-12 * np.abs(kong[3]).max())
    assert min(s[1] for s in states) < 0.15  # sigma moved: the comparison covers the CSA update


# -- the search ------------------------------------------------------------------------------------


def test_finds_constrained_optimum_on_the_boundary_without_infeasible_evaluations():
    space = BoxSpace(0.0, 1.0)
    centre = np.array([0.3, 1.2, 0.5, -0.4, 0.6, 0.2, 1.5, 0.7, 0.4, 0.5])  # three coordinates outside
    optimum = np.clip(centre, 0.0, 1.0)  # the separable sphere's constrained minimum
    objective = FunctionObjective(space, checked(space, sphere(centre)), with_context=True)
    settings = small_settings(
        popsize=20, mu=5, sigma0=0.3, sigma_cap=0.3, max_generations=200, stop_cost=-1, stop_sigma=3e-4
    )
    search = MultiStartCMAES(objective, torch.full((2, P), 0.5), settings, seed=1, stds=np.ones((2, P)))
    history = search.run()
    assert search.done
    for per_start in history:
        best = min(per_start, key=lambda b: b.total)
        assert best.total == pytest.approx(float(((optimum - centre) ** 2).sum()), abs=5e-4)
        np.testing.assert_allclose(best.theta.numpy(), optimum, atol=2e-2)


def test_all_active_starts_share_one_objective_call_per_generation():
    space = BoxSpace(-5.0, 5.0)
    log = []
    objective = FunctionObjective(space, checked(space, sphere(np.zeros(P)), log), with_context=True)
    starts = torch.stack(
        [torch.zeros(P), torch.full((P,), 2.0), torch.full((P,), -2.0)]
    )  # start 0 is at the optimum
    settings = small_settings(popsize=12, mu=3, max_generations=8, stop_cost=0.3)
    search = MultiStartCMAES(objective, starts, settings, seed=2, stds=np.full((3, P), 0.05))
    results = []
    search.run(callback=results.append)
    assert search.stop_reasons == ["converged", "max_generations", "max_generations"]
    assert len(log) == len(results) == 8  # one call per generation
    assert [n for n, _, _ in log] == [36] * 5 + [24] * 3  # start 0 stops after 5 counting generations
    assert [g for _, _, g in log] == list(range(1, 9))
    keys = torch.cat([k for _, k, _ in log])
    assert len(torch.unique(keys)) == len(keys)  # sample ids are unique over the run
    assert [r.batch_size for r in results] == [36] * 5 + [24] * 3
    assert [len(r.starts) for r in results] == [3] * 5 + [2] * 3
    assert all(len(h) == g for h, g in zip(search.history, (5, 8, 8), strict=True))


def test_sigma_never_exceeds_the_cap_after_a_tell():
    space = BoxSpace(-1e6, 1e6)
    objective = FunctionObjective(space, lambda theta: theta.sum(1))  # linear: CSA wants sigma to grow
    settings = small_settings(sigma0=0.1, sigma_cap=0.15, max_generations=30, stop_cost=-np.inf)
    search = MultiStartCMAES(objective, torch.zeros(2, P), settings, seed=0, stds=np.ones((2, P)))
    sigmas = []
    search.run(callback=lambda r: sigmas.extend(s.sigma for s in r.starts))
    assert max(sigmas) <= 0.15
    assert sigmas.count(0.15) > 10  # the cap was hit (and held)
    assert search._es[0].adapt_sigma._last_multiplier > 1  # uncapped, sigma would still be growing


def test_stop_rule_counts_non_consecutive_generations():
    space = BoxSpace(-5.0, 5.0)
    counting = {2, 4, 7, 9, 11, 12}  # generations whose best lies below stop_cost

    def cost(theta, *, keys=None, generation=0):
        offset = 0.0 if generation in counting else 1.0
        return 0.01 * (theta**2).sum(1) + offset

    search = MultiStartCMAES(
        FunctionObjective(space, cost, with_context=True),
        torch.full((1, P), 0.5),
        small_settings(max_generations=40),
        seed=4,
        stds=np.full((1, P), 0.2),
    )
    results = []
    while not search.done:
        results.append(search.step().starts[0])
    assert all(r.ps_norm < 11 for r in results)  # so only the cost decides which generations count
    assert [r.generation for r in results] == list(range(1, 12))
    assert [r.stop_count for r in results] == [0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5]
    assert [r.stopped for r in results] == [False] * 10 + [True]
    assert results[-1].stop_reason == "converged"


def test_stop_on_small_sigma_and_on_max_generations():
    space = BoxSpace(-5.0, 5.0)
    objective = FunctionObjective(space, sphere(np.zeros(P)))
    search = MultiStartCMAES(
        objective, torch.ones(1, P), small_settings(max_generations=3), seed=0, stds=np.ones((1, P))
    )
    assert len(search.run()[0]) == 3 and search.stop_reasons == ["max_generations"]
    settings = small_settings(stop_sigma=0.5, stop_cost=-1)  # sigma <= cap 0.15 < 0.5 after a tell
    search = MultiStartCMAES(objective, torch.ones(1, P), settings, seed=0, stds=np.ones((1, P)))
    search.step()
    assert search.done and search.stop_reasons == ["sigma"]
    with pytest.raises(RuntimeError, match="stopped"):
        search.step()


def test_a_start_that_cannot_draw_feasible_samples_stops_without_evaluating():
    space = BoxSpace(0.0, 1e-3)  # tiny box: nearly every sample of sigma 0.15 falls outside
    log = []
    objective = FunctionObjective(space, checked(space, sphere(np.zeros(P)), log), with_context=True)
    search = MultiStartCMAES(
        objective, torch.full((1, P), 5e-4), small_settings(max_redraws=3), seed=0, stds=np.ones((1, P))
    )
    result = search.step()
    assert search.stop_reasons == ["max_redraws"] and log == [] and result.batch_size == 0
    assert result.starts[0].redraws > 0 and len(result.starts[0].candidates) == 0


def test_resume_from_state_dict_is_bitwise_identical():
    space = BoxSpace(-5.0, 5.0)
    centre = np.linspace(-1, 1, P)
    objective = FunctionObjective(space, sphere(centre))
    starts = torch.stack([torch.zeros(P), torch.full((P,), 0.5)])
    settings = small_settings(max_generations=6, stop_cost=-1)

    def candidates(search, n):
        return [torch.cat([s.candidates for s in search.step().starts]) for _ in range(n)]

    np.random.seed(1)  # noqa: NPY002 (pycma must not read numpy's global state)
    straight = MultiStartCMAES(objective, starts, settings, seed=7, stds=np.full((2, P), 0.3))
    expected = candidates(straight, 6)

    np.random.seed(2)  # noqa: NPY002
    first = MultiStartCMAES(objective, starts, settings, seed=7, stds=np.full((2, P), 0.3))
    got = candidates(first, 3)
    state = pickle.loads(pickle.dumps(first.state_dict()))  # as if written to disk
    candidates(first, 2)  # the original moves on; the state must not
    resumed = MultiStartCMAES(objective, starts, settings, seed=7, stds=np.full((2, P), 0.3))
    resumed.load_state_dict(state)
    got += candidates(resumed, 3)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert resumed.done and straight.done
    assert [[b.total for b in h] for h in resumed.history] == [[b.total for b in h] for h in straight.history]
    with pytest.raises(ValueError, match="seed"):
        MultiStartCMAES(objective, starts, settings, seed=8, stds=np.full((2, P), 0.3)).load_state_dict(state)


def test_a_full_initial_covariance_shapes_the_first_population_and_resumes():
    """covariances=C: the first generation is drawn from N(start, sigma0^2 C) (checked on 4,000
    samples), and a state saved with it resumes the same search."""
    space = BoxSpace(-50.0, 50.0)
    rng = np.random.default_rng(2)
    root = rng.standard_normal((P, P)) * np.logspace(-2, 0, P)  # strongly correlated, condition ~1e4
    cov = root @ root.T
    settings = small_settings(
        popsize=4000, mu=100, sigma0=0.5, sigma_cap=1.0, max_generations=3, stop_cost=-1
    )
    objective = FunctionObjective(space, sphere(np.zeros(P)))
    search = MultiStartCMAES(objective, torch.zeros(1, P), settings, seed=3, covariances=cov[None])
    first = search.step().starts[0].candidates.numpy()
    sample = np.cov(first.T) / settings.sigma0**2
    whitened = np.linalg.solve(np.linalg.cholesky(cov), np.linalg.solve(np.linalg.cholesky(cov), sample).T)
    assert np.abs(whitened - np.eye(P)).max() < 0.15  # sampling error of a 4,000-sample covariance
    state = pickle.loads(pickle.dumps(search.state_dict()))
    expected = search.step().starts[0].candidates
    resumed = MultiStartCMAES(objective, torch.zeros(1, P), settings, seed=3, covariances=cov[None])
    resumed.load_state_dict(state)
    assert torch.equal(resumed.step().starts[0].candidates, expected)


def test_function_objective_flags_non_finite_values():
    objective = FunctionObjective(BoxSpace(), lambda theta: torch.tensor([1.0, float("nan"), float("inf")]))
    out = objective(torch.zeros(3, P))
    assert isinstance(objective, Objective)
    assert out.valid.tolist() == [True, False, False]
    assert out.total.tolist() == [1.0, 1e10, 1e10]


# -- the simulator objective: common random numbers ---------------------------------------------


def test_simulator_objective_common_random_numbers(tiny_folder):
    from pmfm.data import load_folder
    from pmfm.params import ParamSpace
    from pmfm.sim.protocol import SimProtocol
    from pmfm.sim.simulator import Simulator

    data = load_folder(tiny_folder, "test", n_tr=TINY_TR)
    space = ParamSpace(data.basis())
    simulator = Simulator(protocol=SimProtocol.shortened(TINY_TR, burn_in_samples=2, warmup_steps=100))
    objective = SimulatorObjective(space, data, simulator, repeats=2, seed=5)
    a = [0.5, 0, 0, 0.3, 0, 0, 2.0, 0.005, 0, 0]  # flat maps: w 0.5, I 0.3, G 2, sigma 0.005
    b = [0.4, 0, 0, 0.35, 0, 0, 3.0, 0.004, 0, 0]
    theta = torch.tensor([a, b, a], dtype=torch.float64)

    first = objective(theta, generation=1)
    assert first.valid.all() and set(first.terms) >= {"fc_cost", "ks", "n_valid_fc", "n_valid_fcd"}
    assert first.total[0] == first.total[2]  # same candidate, same generation: same noise, same cost
    np.testing.assert_allclose(first.total, first.terms["fc_cost"] + first.terms["ks"])
    second = objective(theta, generation=2)
    assert second.total[0] == second.total[2]
    assert second.total[0] != first.total[0]  # a new generation draws new noise

    infeasible = objective(torch.tensor([[5.0, 0, 0, 0.3, 0, 0, 2.0, 0.005, 0, 0]]), generation=1)
    assert not infeasible.valid[0] and infeasible.total[0] == 20.0  # not simulated: FC 10 + KS 10

    log = []

    class Logged:
        space = objective.space

        def __call__(self, theta, *, keys=None, generation=0):
            log.append((theta.shape[0], generation))
            return objective(theta, keys=keys, generation=generation)

    settings = CMAESSettings(popsize=8, mu=4, max_generations=2)
    search = MultiStartCMAES(Logged(), torch.tensor([a, b], dtype=torch.float64), settings, seed=1)
    history = search.run()
    assert log == [(16, 1), (16, 2)]
    assert [len(h) for h in history] == [2, 2] and all(b.valid for h in history for b in h)


def test_a_resumed_search_may_change_its_generation_budget():
    space = BoxSpace(-5.0, 5.0)
    objective = FunctionObjective(space, sphere(np.ones(P)))
    starts = torch.full((2, P), 2.0)

    def searcher(budget):
        settings = small_settings(max_generations=budget, stop_cost=-1)
        return MultiStartCMAES(objective, starts, settings, seed=3, stds=np.full((2, P), 0.3))

    uninterrupted = searcher(6)
    uninterrupted.run()
    short = searcher(3)
    short.run()
    assert short.stop_reasons == ["max_generations"] * 2 and short.generation == 3
    longer = searcher(6)
    longer.load_state_dict(short.state_dict())  # a larger budget: the stopped starts run on
    assert longer.active == [0, 1]
    longer.run()
    assert longer.generation == 6
    for a, b in zip(longer.history, uninterrupted.history, strict=True):
        assert [x.total for x in a] == [y.total for y in b]  # the same search as never stopping
    running = searcher(6)
    running.step()
    running.step()
    stopped = searcher(2)
    stopped.load_state_dict(running.state_dict())  # a budget already reached: done
    assert stopped.done and stopped.stop_reasons == ["max_generations"] * 2
    with pytest.raises(ValueError, match="other settings"):
        searcher(6).load_state_dict(
            {**short.state_dict(), "settings": {**short.state_dict()["settings"], "mu": 5}}
        )
