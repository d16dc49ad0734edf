"""Search against a surrogate: exact projection, projected Adam, the surrogate objective, the callback."""

import csv

import numpy as np
import pytest
import torch
from conftest import assert_diverse_and_feasible, tiny_overrides, write_synthetic_dataset
from hydra import compose, initialize_config_module

from pmfm.data import load_bundled
from pmfm.params import ParamSpace
from pmfm.pipelines.config import simulator_of
from pmfm.search.gradient import AdamSettings, projected_adam
from pmfm.search.projection import FeasibleProjection
from pmfm.search.runner import SearchSettings, surrogate_search
from pmfm.search.surrogate import INFEASIBLE_SCORE, SurrogateObjective, SurrogateScore


@pytest.fixture(scope="module")
def space():
    return ParamSpace(load_bundled().basis())


def _module(space, network="mlp", **hparams):
    from pmfm.models import SurrogateModule

    data = load_bundled()
    torch.manual_seed(0)
    return SurrogateModule(
        network=network,
        network_hparams=hparams,
        box=space.box.tolist(),
        basis=data.basis().tolist(),
        sc=data.sc.tolist(),
    )


# -- projection ------------------------------------------------------------------------------------


def test_projection_is_feasible_exact_and_leaves_feasible_points_alone(space):
    project = FeasibleProjection(space)
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(400, 10, generator=gen, dtype=torch.float64) * 3 - 1  # mostly far outside
    x = project(u)
    assert bool(space.is_feasible(space.denormalise(x)).all())
    inside = space.normalise(space.random_start(50, np.random.default_rng(0)))
    assert torch.equal(project(inside), inside)
    # x is THE projection iff <u - x, v - x> <= 0 for every feasible v (variational inequality);
    # checked against feasible points, the other projections included
    v = torch.cat([inside, x])  # (450, 10)
    inner = ((u - x)[:, None, :] * (v[None] - x[:, None, :])).sum(-1)  # (400, 450)
    assert inner.max() <= 1e-7 * (u - x).norm(dim=1).max()
    # and no feasible point is closer
    assert bool(((u[:, None] - v[None]).norm(dim=-1) >= (u - x).norm(dim=1)[:, None] - 1e-9).all())
    # non-finite rows come back feasible too
    bad = torch.full((2, 10), float("nan"), dtype=torch.float64)
    assert bool(space.is_feasible(space.denormalise(project(bad))).all())


def test_projected_adam_never_visits_or_returns_an_infeasible_point(space):
    seen = []
    target = torch.full((10,), 3.0, dtype=torch.float64)  # far outside the box: pushes into the walls

    def score(u, grad=False):
        seen.append(u.detach().clone())
        return ((u - target) ** 2).sum(1) + torch.sin(7 * u).sum(1), {}

    starts = space.random_start(16, np.random.default_rng(3))
    result = projected_adam(score, space, starts, AdamSettings(steps=150, lr=0.05))
    visited = torch.cat(seen)  # (151 * 16, 10) every iterate, normalised
    assert len(visited) == 151 * 16
    assert bool(space.is_feasible(space.denormalise(visited)).all())
    assert bool(space.is_feasible(result.theta).all())
    assert result.evaluations == 151 * 16
    # Adam went downhill: each start's best is below its start, the history never rises
    first = score(space.normalise(starts))[0]
    assert bool((result.score < first).all())
    assert bool((result.history[1:] <= result.history[:-1]).all())
    again = projected_adam(score, space, starts, AdamSettings(steps=150, lr=0.05))
    assert torch.equal(again.theta, result.theta)  # deterministic


# -- the surrogate as an objective ---------------------------------------------------------------


def test_surrogate_objective_scores_are_predictions_plus_penalties(space):
    module = _module(space, "ensemble", member="mlp", k=3, hidden=16, depth=2)
    theta = space.random_start(6, np.random.default_rng(1))
    outside = theta[:1].clone()
    outside[0, 6] = 11.0  # G out of bounds
    objective = SurrogateObjective(
        space, SurrogateScore(module, uncertainty_penalty=2.0, validity_penalty=0.5)
    )
    ev = objective(torch.cat([theta, outside]))
    pred = module.predict(theta)
    expected = pred["total"] + 2.0 * pred["total_std"] + 0.5 * (1 - pred["p_valid"])
    np.testing.assert_allclose(ev.total[:6].numpy(), expected.double().numpy(), rtol=1e-6)
    assert ev.total[6] == INFEASIBLE_SCORE and not ev.valid[6]
    assert objective.n_evaluations == 7
    with pytest.raises(ValueError, match="ensemble"):
        SurrogateScore(_module(space, hidden=16, depth=2), uncertainty_penalty=1.0)


@pytest.mark.parametrize("name", ["cmaes", "adam"])
def test_surrogate_search_returns_feasible_diverse_candidates_that_beat_random(space, name):
    module = _module(space, hidden=32, depth=2)
    settings = SearchSettings(name=name, popsize=20, mu=5, max_generations=10, steps=60, lr=0.02)
    out = surrogate_search(module, space, settings, n_starts=4, top_k=3, seed=0)
    assert_diverse_and_feasible(space, out.theta, most=3)
    assert np.all(np.diff(out.predicted["score"]) >= 0)  # best predicted first
    score = SurrogateScore(module)
    random_scores, _ = score(space.normalise(space.random_start(64, np.random.default_rng(9))))
    assert out.predicted["score"][0] < float(random_scores.min())
    np.testing.assert_allclose(out.predicted["total"], module.predict(out.theta)["total"].numpy(), rtol=1e-5)


# -- the training callback ---------------------------------------------------------------------------


def test_callback_under_fast_dev_run_logs_the_resimulated_best(tiny_folder, tmp_path):
    from pmfm.data import load_folder
    from pmfm.evaluate import evaluate_params
    from pmfm.pipelines.train import train_surrogate

    space = ParamSpace(load_folder(tiny_folder, "test", n_tr=100).basis())
    dataset = write_synthetic_dataset(tmp_path / "ds", space, n_runs=6, per_run=20)
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *tiny_overrides(tiny_folder),
                f"dataset.folder={dataset}",
                "logger=csv",
                "+trainer.fast_dev_run=true",
                "trainer.accelerator=cpu",
                "search.popsize=10",
                "search.mu=3",
                "search.max_generations=5",
                "search.n_starts=2",
                "search_callback.top_k=2",
                "search_callback.seed=4",
            ],
        )
    metrics = train_surrogate(cfg, tmp_path / "run")
    assert {"search/pred_best", "search/sim_best", "search/sim_of_pred_best"} <= set(metrics)
    rows = list(csv.DictReader((tmp_path / "run" / "search" / "candidates_final.csv").open()))
    assert len(rows) == 2  # search_callback.top_k candidates re-simulated
    sim = [float(r["sim_total"]) for r in rows]
    assert metrics["search/sim_best"] == pytest.approx(min(sim), rel=1e-6)
    assert metrics["search/pred_best"] == pytest.approx(float(rows[0]["pred_total"]), rel=1e-6)
    assert (tmp_path / "run" / "search" / "convergence_final.png").is_file()
    # the logged cost is a real simulation: simulate the same sets again, same noise, same costs
    theta = torch.tensor([[float(r[n]) for n in space.names] for r in rows], dtype=torch.float64)
    simulator = simulator_of(cfg)
    data = load_folder(tiny_folder, "test", n_tr=100)
    again = evaluate_params(theta, space, data, simulator, repeats=cfg.dataset.repeats, seed=4).costs.total
    np.testing.assert_allclose(again.numpy(), sim, rtol=1e-6)


def test_dataset_starts_are_the_best_valid_simulated_samples(space):
    from pmfm.search.runner import dataset_starts

    theta = space.random_start(6, np.random.default_rng(2)).numpy()
    theta = np.concatenate([theta, theta[:1]])  # row 6 duplicates row 0
    rows = {
        "theta": theta,
        "total": np.array([0.9, 0.5, 20.0, 0.7, 1.1, 0.8, 0.4]),
        "n_valid_fc": np.array([3, 3, 0, 3, 3, 3, 3]),
        "n_valid_fcd": np.array([3, 3, 0, 3, 3, 0, 3]),  # row 5 is invalid for the FCD term
    }
    starts = dataset_starts(rows, space, 4)
    # by total: 6 (0.4), 1 (0.5), 3 (0.7), [5 invalid], 0 (0.9) = duplicate of 6, skipped, 4 (1.1)
    np.testing.assert_array_equal(starts.numpy(), theta[[6, 1, 3, 4]])
