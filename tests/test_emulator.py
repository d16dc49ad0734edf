"""The emulator of simulated statistics: its cost is cost_from_stats of its statistics, its FCD head
is monotone, it learns a smooth known problem well enough to rank costs, it reloads without Hydra,
and the bank's data module never splits a group."""

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from pmfm.cost.stats import cost_from_stats
from pmfm.datasets.bank import bank_stats
from pmfm.datasets.bank_datamodule import BankDataModule
from pmfm.datasets.datamodule import group_keys
from pmfm.models.emulator import EmulatorModule, emulated_costs, monotone_levels, statistics_metric
from pmfm.models.metrics import spearman
from pmfm.params import ParamSpace

N = 8  # regions
E = N * (N - 1) // 2
N_BINS = 200  # FCD histogram bins of the toy problem
FCD_TOTAL = 1000  # window pairs of the toy problem's FCD


def toy_stats(u: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics that are a smooth known function of u (n, 10): fc_z a few smooth patterns, the FCD
    CDF that of a normal law whose mean and sd follow u, FC invalid where u[:, 2] > 0.9."""
    rng = np.random.default_rng(123)
    patterns = rng.standard_normal((3, E)) * 0.3  # fixed edge patterns
    weights = np.stack([u[:, 0], np.sin(np.pi * u[:, 1]), u[:, 3] * u[:, 4]], 1)  # (n, 3)
    fc_z = 0.2 + weights @ patterns  # (n, E)
    mean, sd = 0.3 + 0.4 * u[:, 5], 0.05 + 0.1 * u[:, 6]  # of the FCD values, on [0, 1] bins
    from scipy.stats import norm

    quantiles = (np.arange(1000) + 0.5) / 1000
    values = norm.ppf(quantiles[None], mean[:, None], sd[:, None]).clip(0, 1)  # (n, L)
    levels = np.round(values * (N_BINS - 1)).astype(np.uint16)
    valid_fc = u[:, 2] <= 0.9
    return {
        "fc_z": np.where(valid_fc[:, None], fc_z, 0.0).astype(np.float16),
        "fcd_levels": levels,
        "n_valid_fc": np.where(valid_fc, 2, 0).astype(np.int16),
        "n_valid_fcd": np.full(len(u), 2, np.int16),
        "repeats": np.full(len(u), 2, np.int16),
    }


@pytest.fixture(scope="module")
def space():
    rng = np.random.default_rng(1)
    basis = np.column_stack([np.ones(N), rng.uniform(1.0, 1.7, N), rng.uniform(-5, 7, N)])
    return ParamSpace(basis)


def toy_rows(space, n_groups: int = 10, per_group: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Bank-shaped rows: half the groups Sobol-like shards, half CMA-ES runs."""
    u = np.random.default_rng(seed).uniform(0, 1, (n_groups * per_group, 10))
    group = np.repeat(np.arange(n_groups), per_group)
    start = np.where(group < n_groups // 2, -1, group).astype(np.int32)
    return {
        "theta": space.denormalise(torch.from_numpy(u)).numpy(),
        "u": u,
        "start": start,
        "shard": group.astype(np.int32),
        **toy_stats(u),
    }


def target(u_star: np.ndarray):
    """A target's (N, N) FC and (N_BINS,) FCD CDF in counts, from the toy statistics at u_star."""
    stats = toy_stats(u_star[None])
    fc = np.eye(N)
    i, j = np.triu_indices(N, 1)
    fc[i, j] = fc[j, i] = np.tanh(stats["fc_z"][0].astype(np.float64))
    cdf = np.bincount(stats["fcd_levels"][0], minlength=N_BINS).cumsum() * (FCD_TOTAL / 1000)
    return fc, cdf.astype(np.float64)


def module_for(rows, train_index, **hparams) -> EmulatorModule:
    module = EmulatorModule(n_params=10, n_edges=E, n_bins=N_BINS, fcd_total=FCD_TOTAL, repeats=2, **hparams)
    valid = rows["n_valid_fc"][train_index] > 0
    module.set_input_statistics(torch.from_numpy(rows["u"][train_index]).float())
    module.set_fc_basis(torch.from_numpy(rows["fc_z"][train_index][valid].astype(np.float32)))
    return module


def test_exact_statistics_through_the_low_rank_head_give_cost_from_stats(space):
    """Plumbing: the true rows projected on a full-rank basis, rebuilt and turned into SetStats by
    the emulator's own path, cost what the stored statistics cost against an unrelated target."""
    rows = toy_rows(space, n_groups=2, per_group=20)
    module = module_for(rows, np.arange(40), rank=E)
    stats = bank_stats(rows, FCD_TOTAL)
    fc_z = torch.from_numpy(rows["fc_z"].astype(np.float32))
    rebuilt = module.fc_from_coefficients(module.coefficients(fc_z))
    assert torch.allclose(rebuilt, fc_z, atol=1e-4)
    levels = torch.from_numpy(rows["fcd_levels"].astype(np.float64)) / (N_BINS - 1)
    p_fc = (stats.n_valid_fc > 0).float()
    mine = module.stats_from(rebuilt, levels, p_fc, (stats.n_valid_fcd > 0).float())
    assert torch.equal(mine.fcd_levels, stats.fcd_levels)
    fc, cdf = target(np.full(10, 0.3))
    want, got = cost_from_stats(stats, fc, cdf), cost_from_stats(mine, fc, cdf)
    assert (~(rows["n_valid_fc"] > 0)).any()  # invalid rows are part of the check
    for key in ("fc_cost", "ks", "total"):
        assert torch.allclose(getattr(got, key), getattr(want, key), atol=1e-3), key


def test_levels_are_monotone_in_the_unit_interval_and_probabilities_are_probabilities(space):
    torch.manual_seed(3)
    levels = monotone_levels(torch.randn(64, 2 + 20) * 5)
    assert levels.shape == (64, 1000)
    assert (levels.diff(dim=1) >= 0).all() and levels.min() >= 0 and levels.max() <= 1
    module = EmulatorModule(n_params=10, n_edges=E, n_bins=N_BINS, fcd_total=FCD_TOTAL, repeats=2)
    out = module(torch.rand(32, 10) * 3 - 1)  # also outside the box
    assert (out["levels"].diff(dim=1) >= 0).all()
    stats = module.predict_stats(torch.rand(32, 10))
    assert (stats.fcd_levels.diff(dim=1) >= 0).all() and int(stats.fcd_levels.max()) < N_BINS
    assert set(stats.n_valid_fc.tolist()) <= {0, 2}


@pytest.fixture(scope="module")
def trained(space, tmp_path_factory):
    """The emulator trained on the toy bank (train/val groups), its data module and checkpoint."""
    L.seed_everything(0)
    data = BankDataModule(
        space, rows=toy_rows(space), n_bins=N_BINS, split=(0.8, 0.2, 0.0),
        test_groups=["start_00009", "shard_00001"], batch_size=64,
    )  # fmt: skip
    data.setup()
    module = module_for(data.rows, data.split_index["train"], rank=8, n_knots=16, hidden=64, depth=2, lr=5e-3)
    trainer = L.Trainer(
        max_epochs=200, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path_factory.mktemp("emu"),
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    path = tmp_path_factory.mktemp("ckpt") / "emulator.ckpt"
    trainer.save_checkpoint(path)
    return module, data, path


def test_trained_emulator_ranks_held_out_costs(trained):
    module, data, _ = trained
    test = data.split_index["test"]
    rows = {k: v[test] for k, v in data.rows.items()}
    u = data.dataset("test")[:]["x"]
    stats, emulated = bank_stats(rows, FCD_TOTAL), module.predict_stats(u)
    valid, said_valid = stats.n_valid_fc > 0, emulated.n_valid_fc > 0
    assert (~valid).any() and (valid == said_valid).float().mean() >= 0.9  # a sharp edge at u[2] = 0.9
    both = valid & said_valid  # a set called valid by mistake costs ~0.5 instead of 10: ranked apart
    for u_star in (np.full(10, 0.5), np.linspace(0.1, 0.8, 10)):
        fc, cdf = target(u_star)
        true = cost_from_stats(stats, fc, cdf).total
        pred = emulated_costs(module, u, fc, cdf).total
        assert spearman(pred[both], true[both]) >= 0.9


def test_checkpoint_loads_without_hydra_and_predicts_the_same(trained):
    module, data, path = trained
    loaded = EmulatorModule.load_from_checkpoint(path, map_location="cpu")
    theta = data.rows["theta"][:16]
    a, b = module.predict_stats(theta, normalised=False), loaded.predict_stats(theta, normalised=False)
    assert torch.equal(a.fc_z, b.fc_z) and torch.equal(a.fcd_levels, b.fcd_levels)
    assert torch.equal(a.n_valid_fc, b.n_valid_fc)
    assert torch.equal(module.fc_dirs, loaded.fc_dirs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bank_data_module_never_puts_one_group_in_two_splits(space, seed):
    rows = toy_rows(space, n_groups=12, per_group=7, seed=seed)
    data = BankDataModule(space, rows=rows, n_bins=N_BINS, split=(0.6, 0.2, 0.2), split_seed=seed)
    data.setup()
    keys = group_keys(rows["start"], rows["shard"])
    seen = [set(keys[data.split_index[s]].tolist()) for s in ("train", "val", "test")]
    assert all(seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(data.split_index[s]) for s in ("train", "val", "test")) == len(keys)
    held = BankDataModule(space, rows=rows, n_bins=N_BINS, test_groups=["start_00011"], split_seed=seed)
    held.setup()
    assert set(keys[held.split_index["test"]].tolist()) == {11}
    assert held.split_groups["test"] == ["start_00011"]
    again = BankDataModule(space, rows=rows, n_bins=N_BINS, split=(0.6, 0.2, 0.2), split_seed=seed)
    again.setup()
    assert all(np.array_equal(again.split_index[s], data.split_index[s]) for s in ("train", "val", "test"))


def test_one_objective_costs_each_set_against_its_own_target_as_alone(trained, space):
    from pmfm.search.emulated import EmulatorObjective
    from pmfm.search.surrogate import INFEASIBLE_SCORE

    module = trained[0]
    targets = []
    for u_star in (np.full(10, 0.5), np.linspace(0.1, 0.8, 10)):
        fc, cdf = target(u_star)
        targets.append(SimpleNamespace(fc=fc, fcd_cdf=cdf))  # what the objective reads of a target
    theta = space.random_start(12, np.random.default_rng(4))  # (12, P) feasible sets
    theta[5] = theta[5] * 1e3  # infeasible
    keys = torch.arange(12)
    both = EmulatorObjective(space, module, targets, target_of=lambda k: k % 2)(theta, keys=keys)
    assert both.total[5] == INFEASIBLE_SCORE and not both.valid[5]
    for t in (0, 1):
        mine = (keys % 2 == t) & (keys != 5)
        alone = emulated_costs(module, space.normalise(theta[mine]), targets[t].fc, targets[t].fcd_cdf)
        torch.testing.assert_close(both.total[mine], alone.total.double())
    with pytest.raises(ValueError, match="target_of"):
        EmulatorObjective(space, module, targets)


def test_the_statistics_metric_is_the_loss_between_nearby_statistics_and_shapes_the_steps(trained, space):
    """d^T M d is the FC and FCD loss between the emulated statistics at u and u + d (small d), and
    the shaped covariance has step^2 / eigenvalue along each eigendirection of M, at most cap^2."""
    from pmfm.search.emulated import shaped_covariances

    module = trained[0]
    gen = torch.Generator().manual_seed(5)
    u = 0.3 + 0.4 * torch.rand(4, 10, generator=gen)
    d = 0.01 * torch.randn(4, 10, generator=gen)
    metric = statistics_metric(module, u)  # (4, P, P)
    with torch.no_grad():
        a, b = module(u), module(u + d)
    hp = module.hparams
    loss = hp["fc_weight"] * ((a["fc_z"] - b["fc_z"]) ** 2).mean(1) / module.fc_var
    loss = loss + hp["fcd_weight"] * ((a["levels"] - b["levels"]) ** 2).mean(1)
    quadratic = torch.einsum("bp,bpq,bq->b", d.double(), metric, d.double())
    torch.testing.assert_close(quadratic, loss.double(), rtol=0.15, atol=0.0)

    theta = space.denormalise(u.double())
    values, vectors = torch.linalg.eigh(metric)
    cap = 0.02
    step = 0.5 * cap * float(values[:, -1].min().sqrt())  # the steepest direction under the cap
    cov = shaped_covariances(space, module, theta, step=step, cap=cap)  # (4, P, P) raw
    per_unit = (space.normalise(torch.ones(1, 10)) - space.normalise(torch.zeros(1, 10)))[0].double()
    cov_u = per_unit[:, None] * cov * per_unit[None, :]
    along = torch.einsum("bpi,bpq,bqi->bi", vectors, cov_u, vectors)  # (4, P) variance along each
    want = torch.minimum(step**2 / values, torch.tensor(cap**2, dtype=torch.float64))
    torch.testing.assert_close(along, want, rtol=1e-6, atol=1e-12)
    assert (along < cap**2 * (1 - 1e-6)).any() and (along > cap**2 * (1 - 1e-6)).any()  # both regimes
