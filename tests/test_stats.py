"""A set's stored statistics cost it against any target as its simulations would (pmfm.cost.stats)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY_TR, make_tiny_folder

from pmfm.cost import DELSSOME, KONG2021, RepeatStats, combine_repeats, fc_matrix, fcd_cdf, fcd_pair_count
from pmfm.cost.stats import N_LEVELS, cdf_from_levels, cdf_levels, cost_from_stats, set_stats
from pmfm.data import load_folder
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamSpace
from pmfm.sim import SimProtocol, Simulator

BOUND = 0.002  # per term and total


def test_levels_rebuild_a_cdf_within_half_a_level():
    rng = np.random.default_rng(0)
    total = 6903
    cdf = torch.tensor(np.sort(rng.integers(0, total + 1, (5, 400)), axis=1), dtype=torch.float64)
    cdf[:, -1] = total
    rebuilt = cdf_from_levels(cdf_levels(cdf, total), total, 400)
    assert rebuilt.shape == (5, 400) and (rebuilt[:, -1] == total).all()
    assert (rebuilt - cdf).abs().max() <= total / (2 * N_LEVELS) + 1e-9


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """200 sets of the tiny 8-region model, R = 3, with their per-repeat statistics."""
    folder = make_tiny_folder(tmp_path_factory.mktemp("tiny"))
    data = load_folder(folder, "test", n_tr=TINY_TR)
    space = ParamSpace(data.basis())
    theta = space.random_start(200, np.random.default_rng(3))
    simulator = Simulator(protocol=SimProtocol(warmup_steps=100, duration_s=73.43, burn_in_samples=2))
    evaluation = evaluate_params(theta, space, data, simulator, repeats=3, seed=5, keep_stats=True)
    return data, evaluation.stats


def _targets(data, n: int = 3):
    """The tiny data's own target and ``n`` others: FC and FCD of made-up BOLD, as a subject's."""
    rng = np.random.default_rng(11)
    out = [(data.fc, data.fcd_cdf)]
    for k in range(n):
        bold = torch.tensor(rng.standard_normal((1, data.n_regions, TINY_TR)))
        bold = bold + (0.3 + 0.3 * k) * bold[:, :1]  # more or less shared signal
        out.append((fc_matrix(bold)[0].numpy(), fcd_cdf(bold, KONG2021)[0].numpy()))
    return out


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_cost_from_stats_matches_the_simulations_cost_against_four_targets(simulated, stage):
    data, stats = simulated
    rng = np.random.default_rng(7)
    # some repeats invalid for one term or both, as the FIC rate rule or a NaN run makes them
    flags = {k: torch.as_tensor(rng.random(len(stats)) > 0.25) for k in ("fc_valid", "fcd_valid")}
    flags["fcd_valid"][:90] = False  # 30 whole sets without a valid KS repeat (10, or NaN in the test stage)
    stats = dataclasses.replace(
        stats, fc_valid=stats.fc_valid & flags["fc_valid"], fcd_valid=stats.fcd_valid & flags["fcd_valid"]
    )
    kept = set_stats(stats, 3, fcd_pair_count(TINY_TR, KONG2021.window))
    assert kept.fc_z.dtype == torch.float16 and kept.fcd_levels.shape == (200, N_LEVELS)
    partly = (kept.n_valid_fc > 0) & (kept.n_valid_fc < 3)
    assert partly.sum() > 50 and (kept.n_valid_fcd == 0).sum() >= 30
    for emp_fc, emp_cdf in _targets(data):
        for variant in (KONG2021, DELSSOME):
            exact = combine_repeats(stats, emp_fc, emp_cdf, 3, variant, stage)
            approx = cost_from_stats(kept, emp_fc, emp_cdf, variant, stage)
            for term in ("fc_cost", "fc_l1", "ks", "total"):
                a, b = getattr(exact, term), getattr(approx, term)
                assert torch.equal(a.isnan(), b.isnan()), term
                assert torch.nan_to_num(a - b).abs().max() <= BOUND, (variant.name, term)
            assert torch.equal(exact.n_valid_fc, approx.n_valid_fc)
            assert torch.equal(exact.n_valid_fcd, approx.n_valid_fcd)


def test_a_set_with_no_valid_repeat_costs_as_the_rules_say(simulated):
    data, stats = simulated
    dead = RepeatStats(
        stats.fc[:3], stats.cdf[:3], torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)
    )
    kept = set_stats(dead, 3, fcd_pair_count(TINY_TR, KONG2021.window))
    assert cost_from_stats(kept, data.fc, data.fcd_cdf, stage="fit").total.item() == 20.0  # 10 per term
    assert cost_from_stats(kept, data.fc, data.fcd_cdf, stage="test").total.isnan().all()
