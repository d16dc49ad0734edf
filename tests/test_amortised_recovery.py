"""The amortised fit of a tiny subject made with the fit's own validation noise, whose truth
therefore costs exactly 0 there: the fit must come close to it."""

import numpy as np
import pytest
import torch
from conftest import AMORTISED, SMALL_BANK, compose_config, tiny_overrides

# 200 TRs ((200 + 2) x 72 - 1 steps of 0.01 s); the tiny folder's FCD (100 TRs) rescaled to them
TR_200 = ["protocol.duration_s=145.43", "data.fcd_n_tr=100"]
FIT = ["validation.repeats=4", "validation.top_k=2", "plot=false"]


@pytest.fixture
def subject(tiny_splits, tmp_path):
    """synthetic_000 in a folder of targets: 8 regions, 200 TRs, its train and vali splits the
    statistics of its truth's R = 4 simulations under the validation stage's noise."""
    from pmfm.cost.fcd import upper_triangle
    from pmfm.cost.repeats import masked_mean
    from pmfm.data import write_target
    from pmfm.evaluate.costs import repeat_noise, simulation_stats
    from pmfm.pipelines.config import load_data, simulator_of, variant_of
    from pmfm.sim.simulate import simulate

    cfg = compose_config("fit", _overrides(tiny_splits, tmp_path / "bank", *FIT))
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    truth = space.random_start(1, np.random.default_rng(1))  # (1, 10) mean FC 0.6: structured, not flat
    repeats = int(cfg.validation.repeats)
    noise = repeat_noise(1, repeats, int(cfg.validation.seed), common=True)  # what validation draws
    stats = simulation_stats(simulate(truth.repeat_interleave(repeats, 0), space, data.sc, simulator, noise),
                             variant, simulator)  # fmt: skip
    assert stats.fc_valid.all() and stats.fcd_valid.all()
    edges, n = masked_mean(stats.fc[None].double(), stats.fc_valid[None])[0][0], space.n_regions
    fc = np.eye(n)
    fc[np.triu_indices(n, 1)] = edges.numpy()
    fc = np.triu(fc, 1) + np.triu(fc, 1).T + np.eye(n)
    assert np.allclose(upper_triangle(torch.from_numpy(fc)).numpy(), edges.numpy())
    cdf = stats.cdf.double().mean(0).numpy()  # (bins,) the mean count CDF, as the cost averages it
    info = {"source": "synthetic", "tr_s": simulator.protocol.tr_s, "n_tr": simulator.protocol.n_tr}
    folder = tmp_path / "subjects"
    write_target(folder / "synthetic_000", {"train": (fc, cdf), "vali": (fc, cdf)}, np.asarray(data.sc), data,
                 info, (space.names, truth[0].numpy()))  # fmt: skip
    return folder


def _overrides(folder, bank, *extra):
    base = [o for o in tiny_overrides(folder) if not o.startswith("data.split")]
    return [*base, "data.split=train", *TR_200, f"dataset.folder={bank}", "progress=false", *extra]


def test_an_amortised_fit_comes_close_to_a_truth_that_costs_0_under_its_own_noise(
    tiny_splits, subject, tmp_path
):
    from pmfm.cost.stats import cost_from_stats
    from pmfm.data.targets import find_targets
    from pmfm.datasets.bank import Bank, bank_stats
    from pmfm.pipelines.dataset import make_dataset
    from pmfm.pipelines.fit.run import fit

    bank = tmp_path / "bank"
    (tmp_path / "made").mkdir()
    make_dataset(compose_config("generate", _overrides(tiny_splits, bank, *SMALL_BANK)), tmp_path / "made")
    run = tmp_path / "fit"
    fit(
        compose_config("fit", _overrides(tiny_splits, bank, *FIT, *AMORTISED, f"targets.path={subject}")), run
    )
    table = np.genfromtxt(run / "targets.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert abs(float(table["truth_total"])) < 1e-9  # the truth, at validation: exactly its own statistics
    assert float(table["vali_total"]) < 0.1  # the chosen set, in the same noise
    target = find_targets(subject)[0].load("train")
    rows = Bank(bank).load()
    costs = cost_from_stats(bank_stats(rows, int(target.fcd_cdf[-1])), target.fc, target.fcd_cdf)
    assert np.median(costs.total.numpy()) > 0.15  # not a target every set fits: the bank's half costs more
