"""SurrogateModule and the ranking metrics: masking, bounds, training, checkpoints, predict."""

import math
import sys
import types

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from pmfm.data import load_bundled
from pmfm.datasets.datamodule import RowsDataset
from pmfm.models import (
    COST_RANGES,
    SurrogateModule,
    auroc,
    pearson,
    spearman,
    surrogate_report,
    top_k_recall,
)
from pmfm.params import ParamSpace

TARGETS = ["valid", "fc_cost", "ks"]
INVALID = 10.0  # the cost's placeholder for a term with no valid repeat ("fit" stage)
SMALL = {"hidden": 32, "depth": 2}  # hyperparameters the stand-in and the real MLP both take


# -- networks: the real registry, or a stand-in while it cannot be imported ------------------------
class _StandInMLP(nn.Module):
    is_ensemble = False

    def __init__(self, n_outputs, box, basis, sc, hidden=32, depth=2, **_):
        super().__init__()
        layers, n_in = [], len(box)
        for _ in range(depth):
            layers += [nn.Linear(n_in, hidden), nn.Tanh()]
            n_in = hidden
        self.net = nn.Sequential(*layers, nn.Linear(n_in, n_outputs))

    def forward(self, u):
        return self.net(u)


class _StandInEnsemble(nn.Module):
    is_ensemble = True

    def __init__(self, n_outputs, box, basis, sc, member="mlp", k=3, **hparams):
        super().__init__()
        self.members = nn.ModuleList(_StandInMLP(n_outputs, box, basis, sc, **hparams) for _ in range(k))

    def forward(self, u):
        return torch.stack([m(u) for m in self.members])


def _stand_in_build(name, *, n_outputs, box, basis, sc, **hparams):
    cls = {"mlp": _StandInMLP, "ensemble": _StandInEnsemble}[name]
    return cls(n_outputs, box, basis, sc, **hparams)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second intra-op thread only contends with other work on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _networks(monkeypatch):
    try:
        import pmfm.models.networks  # noqa: F401
    except Exception:  # not written yet (or mid-edit): a tiny stand-in with the same contract
        fake = types.ModuleType("pmfm.models.networks")
        fake.build_network = _stand_in_build
        monkeypatch.setitem(sys.modules, "pmfm.models.networks", fake)


@pytest.fixture(scope="module")
def space():
    return ParamSpace(load_bundled().basis())


@pytest.fixture(scope="module")
def geometry(space):
    data = load_bundled()
    return {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}


def make_module(geometry, **kwargs):
    kwargs.setdefault("network_hparams", SMALL)
    return SurrogateModule(**geometry, **kwargs)


def synthetic_rows(n, seed=0):
    """Known smooth costs of u; rows with u0 < 0.25 are invalid and hold the placeholder."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 10, generator=g)
    valid = x[:, 0] > 0.25
    fc = 0.4 + 0.8 * x[:, 1]
    ks = 0.1 + 0.5 * x[:, 2] * x[:, 3]
    y = torch.stack([valid.float(), torch.where(valid, fc, INVALID), torch.where(valid, ks, INVALID)], 1)
    return RowsDataset(x, y, valid)


def loader(rows, batch_size=64, shuffle=False):
    sampler = RandomSampler(rows) if shuffle else SequentialSampler(rows)
    return DataLoader(rows, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False))


def tiny_trainer(tmp_path, **kwargs):
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


# -- metrics ---------------------------------------------------------------------------------------
def test_pearson_spearman_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = a + rng.normal(0, 2, 40)
    assert pearson(torch.tensor(a), torch.tensor(b)) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    # torchmetrics' Spearman keeps a 1e-6 guard in its denominator
    assert spearman(torch.tensor(a), torch.tensor(b)) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-6)
    assert spearman(a[::-1].copy(), a) == pytest.approx(stats.spearmanr(a[::-1], a)[0], abs=1e-6)  # arrays
    assert math.isnan(pearson(torch.ones(5), torch.arange(5.0)))  # constant input
    assert math.isnan(spearman(torch.arange(5.0), torch.full((5,), 2.0)))
    assert math.isnan(spearman(torch.ones(1), torch.ones(1)))
    assert math.isnan(pearson(torch.tensor([0.0, math.nan, 1.0]), torch.arange(3.0)))  # non-finite
    with pytest.raises(ValueError, match="lengths"):
        spearman(torch.ones(3), torch.ones(4))


def test_top_k_recall_by_hand():
    true = torch.arange(10.0)  # best (lowest) 20%: rows 0 and 1
    assert top_k_recall(true, true, 0.2) == 1.0
    assert top_k_recall(-true, true, 0.2) == 0.0
    pred = torch.tensor([0.0, 5, 6, 7, 8, 0.5, 9, 10, 11, 12])  # predicted best: rows 0 and 5
    assert top_k_recall(pred, true, 0.2) == 0.5
    assert top_k_recall(pred, true, 0.01) == 1.0  # k is at least 1


def test_auroc_by_hand_and_against_mann_whitney():
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([False, True])) == 0.5  # a tie counts half
    assert math.isnan(auroc(torch.rand(4), torch.ones(4, dtype=torch.bool)))
    assert auroc(torch.full((4,), 5.0), torch.tensor([0, 1, 0, 1])) == 0.5  # all tied, outside [0, 1]
    assert auroc(torch.tensor([-3.0, 7.0, 2.0]), torch.tensor([0, 1, 1])) == 1.0  # scores, not probabilities
    rng = np.random.default_rng(2)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
    u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(
        u / (labels.sum() * (~labels).sum())
    )


def test_surrogate_report_uses_valid_rows_only():
    n = 200
    t_fc, t_ks = torch.linspace(0.3, 1.3, n), torch.linspace(0.1, 0.6, n).flip(0) ** 2
    valid = torch.arange(n) % 4 != 0
    true = {"fc_cost": torch.where(valid, t_fc, INVALID), "ks": torch.where(valid, t_ks, torch.nan)}
    true["total"] = true["fc_cost"] + true["ks"]
    pred = {"fc_cost": t_fc + 0.1, "ks": t_ks, "total": t_fc + t_ks + 0.1, "p_valid": valid.float()}
    report = surrogate_report(pred, true, valid)
    assert report["mae_fc_cost"] == pytest.approx(0.1, abs=1e-6)
    assert report["mae_ks"] == pytest.approx(0.0, abs=1e-12)
    for key in ("pearson", "spearman", "pearson_top10", "spearman_top10", "top1_recall", "top5_recall"):
        assert report[key] == pytest.approx(1.0), key
    assert report["auroc_valid"] == 1.0
    assert math.isnan(surrogate_report(pred, true, torch.ones(n, dtype=torch.bool))["auroc_valid"])


def test_surrogate_report_with_ties_against_scipy_and_exact_auroc():
    """A hand-made split with tied predictions and ties across classes: every figure by hand."""
    total = torch.tensor([0.50, 0.70, 0.60, 0.90, 0.80, 1.10, 1.00, 1.30, 1.20, 1.50, 9.0, 9.0])
    pred_total = torch.tensor([0.55, 0.55, 0.70, 0.70, 0.70, 1.00, 1.20, 1.20, 1.10, 1.40, 0.1, 0.2])
    valid = torch.tensor([True] * 10 + [False] * 2)
    p_valid = torch.tensor([0.9, 0.8, 0.8, 0.7, 0.3, 0.9, 0.6, 0.6, 0.8, 0.5, 0.3, 0.6])  # ties with invalid
    pred = {"total": pred_total, "p_valid": p_valid}
    report = surrogate_report(pred, {"total": total}, valid)
    t, p = total[:10].numpy(), pred_total[:10].numpy()
    assert report["mae_total"] == pytest.approx(np.abs(p - t).mean(), abs=1e-7)
    assert report["pearson"] == pytest.approx(stats.pearsonr(p, t)[0], abs=1e-6)
    assert report["spearman"] == pytest.approx(stats.spearmanr(p, t)[0], abs=1e-6)
    assert math.isnan(report["pearson_top10"]) and math.isnan(report["spearman_top10"])  # one row: undefined
    assert report["top1_recall"] == 1.0 and report["top5_recall"] == 1.0  # k = 1: row 0, predicted best
    # exact AUROC: pairs (valid, invalid) scored higher, ties counting half, by hand
    pos, neg = p_valid[valid], p_valid[~valid]
    wins = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
    assert report["auroc_valid"] == pytest.approx(float(wins.mean()), abs=1e-7)
    assert report["auroc_valid"] == pytest.approx(33 / 40)  # 16.5 of the 20 pairs


# -- the module: loss masking, bounds, ensembles ---------------------------------------------------
def hand_batch(cost_placeholder):
    valid = torch.tensor([True, False, True, False, True, False])
    fc = torch.tensor([0.5, 0, 0.9, 0, 1.2, 0])
    ks = torch.tensor([0.2, 0, 0.4, 0, 0.3, 0])
    y = torch.stack([valid.float(), fc, ks], 1)
    y[~valid, 1:] = cost_placeholder
    return {"x": torch.rand(6, 10), "y": y, "valid": valid}


def test_cost_loss_ignores_invalid_rows_and_validity_uses_all(geometry):
    module = make_module(geometry)
    z = torch.randn(6, 3, requires_grad=True)  # raw outputs: validity logit, fc_cost, ks
    with_ten, with_nan = module.losses(z, hand_batch(INVALID)), module.losses(z, hand_batch(torch.nan))
    batch = hand_batch(INVALID)
    v = batch["valid"]
    only_valid = module.losses(z[v], {k: t[v] for k, t in batch.items()})
    lo, span = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])
    expected = (((lo + span * torch.sigmoid(z[v, 1:])) - batch["y"][v, 1:]) ** 2).mean(0).sum()
    for losses in (with_ten, with_nan):
        assert torch.isfinite(losses["loss"])
        torch.testing.assert_close(losses["loss_cost"], only_valid["loss_cost"])
        torch.testing.assert_close(losses["loss_cost"], expected)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], v.float())  # all six rows
        torch.testing.assert_close(losses["loss_valid"], bce)
        torch.testing.assert_close(losses["loss"], bce + expected)
    with_nan["loss"].backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad[~v, 1:] == 0).all()  # invalid rows: no gradient into the cost outputs
    assert (z.grad[v, 1:] != 0).all()
    assert (z.grad[:, 0] != 0).all()  # the validity head learns from every row


def test_batch_without_valid_rows_has_zero_cost_loss(geometry):
    module = make_module(geometry, validity_weight=0.5)
    batch = hand_batch(torch.nan)
    batch["valid"][:] = False
    batch["y"][:, 0] = 0.0
    z = torch.randn(6, 3, requires_grad=True)
    losses = module.losses(z, batch)
    assert losses["loss_cost"] == 0.0
    torch.testing.assert_close(losses["loss"], 0.5 * losses["loss_valid"])
    losses["loss"].backward()
    assert torch.isfinite(z.grad).all()


def test_validity_target_from_the_y_column_without_batch_valid(geometry):
    module = make_module(geometry)
    batch = hand_batch(INVALID)
    z = torch.randn(6, 3)
    without = {k: v for k, v in batch.items() if k != "valid"}
    for key, value in module.losses(z, batch).items():
        torch.testing.assert_close(module.losses(z, without)[key], value)


def test_outputs_stay_in_their_ranges_for_extreme_inputs(geometry):
    module = make_module(
        geometry, terms=["fc_cost", "ks", "fc_l1"], output_names=["valid", "fc_cost", "ks", "fc_l1"]
    )
    u = torch.cat([torch.full((2, 10), -1e4), torch.full((2, 10), 1e4), torch.rand(4, 10)])
    u[0, ::2] = 1e4
    with torch.no_grad():
        out = module(u)
    assert set(out) == {"fc_cost", "ks", "fc_l1", "total", "p_valid", "valid_logit"}
    for term, (lo, hi) in COST_RANGES.items():
        assert torch.isfinite(out[term]).all() and (out[term] >= lo).all() and (out[term] <= hi).all()
    assert ((out["p_valid"] >= 0) & (out["p_valid"] <= 1)).all()
    torch.testing.assert_close(out["total"], out["fc_cost"] + out["ks"])  # fc_l1 not in the Kong total


def test_l1_total_and_term_checks(geometry):
    names = ["valid", "fc_cost", "fc_l1", "ks"]
    module = make_module(geometry, terms=["fc_cost", "ks", "fc_l1"], output_names=names, use_l1_in_total=True)
    out = module.predict_normalised(torch.rand(5, 10))
    assert set(out) == {"fc_cost", "ks", "fc_l1", "total", "p_valid"}
    torch.testing.assert_close(out["total"], out["fc_cost"] + out["ks"] + out["fc_l1"])
    batch = {"x": torch.rand(3, 10), "y": torch.tensor([[1.0, 0.5, 0.1, 0.2]] * 3)}
    z = torch.zeros(3, 4)  # bounded outputs 1.0 (fc_cost), 0.5 (ks), 1.0 (fc_l1); ks is column 3 of y
    expected = (1.0 - 0.5) ** 2 + (0.5 - 0.2) ** 2 + (1.0 - 0.1) ** 2
    assert float(module.losses(z, batch)["loss_cost"]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="fc_l1"):
        make_module(geometry, use_l1_in_total=True)
    with pytest.raises(ValueError, match="output_names"):
        make_module(geometry, terms=["fc_cost", "ks"], output_names=["valid", "fc_cost"])
    with pytest.raises(ValueError, match="terms"):
        make_module(geometry, terms=["fc_cost"], output_names=names)


def test_ensemble_means_spreads_and_summed_member_losses(geometry):
    module = make_module(geometry, network="ensemble", network_hparams={"member": "mlp", "k": 3, **SMALL})
    assert module.is_ensemble
    u = torch.rand(6, 10)
    with torch.no_grad():
        z = module.net(u)  # (K, B, 3)
        out = module(u)
    assert z.shape == (3, 6, 3)
    members = [module.heads(z[k]) for k in range(3)]
    totals = torch.stack([m["total"] for m in members])
    torch.testing.assert_close(out["total"], totals.mean(0))
    torch.testing.assert_close(out["total_std"], totals.std(0, correction=0))
    torch.testing.assert_close(out["p_valid"], torch.stack([m["p_valid"] for m in members]).mean(0))
    assert {"fc_cost_std", "ks_std", "total_std", "p_valid_std"} <= set(out)
    batch = hand_batch(torch.nan)
    summed = sum(module.losses(z[k], batch)["loss"] for k in range(3))
    torch.testing.assert_close(module.losses(z, batch)["loss"], summed)
    pred = module.predict_normalised(u)
    assert set(pred) == {
        "fc_cost",
        "ks",
        "total",
        "p_valid",
        "fc_cost_std",
        "ks_std",
        "total_std",
        "p_valid_std",
    }


# -- training, evaluation, checkpoints, predict ----------------------------------------------------
def full_loss(module, rows):
    with torch.no_grad():
        batch = rows[list(range(len(rows)))]
        return float(module.losses(module.net(batch["x"]), batch)["loss"])


def test_training_lowers_the_loss_and_checkpoint_reloads(geometry, space, tmp_path):
    L.seed_everything(0)
    train, val = synthetic_rows(512, seed=0), synthetic_rows(256, seed=1)
    module = make_module(geometry, lr=1e-2, max_epochs_hint=20)
    before = full_loss(module, train)
    trainer = tiny_trainer(tmp_path, max_epochs=20)
    trainer.fit(module, loader(train, shuffle=True), loader(val))
    after = full_loss(module, train)
    assert after < 0.2 * before, (before, after)
    for key in ("train/loss", "train/loss_valid", "train/loss_cost", "val/loss", "val/spearman"):
        assert key in trainer.callback_metrics, key

    metrics = trainer.validate(module, loader(val), verbose=False)[0]
    expected = {"loss", "mae_fc_cost", "mae_ks", "mae_total", "pearson", "spearman", "pearson_top10"}
    expected |= {"spearman_top10", "top1_recall", "top5_recall", "auroc_valid"}
    assert {f"val/{k}" for k in expected} == set(metrics)
    assert metrics["val/spearman"] > 0.85 and metrics["val/auroc_valid"] > 0.95
    pred, true, valid = module.last_eval
    assert len(pred["total"]) == len(true["total"]) == len(valid) == 256
    torch.testing.assert_close(true["total"][valid], (true["fc_cost"] + true["ks"])[valid])
    test_metrics = trainer.test(module, loader(val), verbose=False)[0]
    assert test_metrics["test/spearman"] == pytest.approx(metrics["val/spearman"])

    path = tmp_path / "surrogate.ckpt"
    trainer.save_checkpoint(path)
    theta = space.random_start(16, np.random.default_rng(0))
    expected_pred = module.predict(theta)
    reloaded = SurrogateModule.load_from_checkpoint(path)
    assert isinstance(reloaded.hparams.box, list) and isinstance(reloaded.hparams.sc[0], list)
    for key, value in reloaded.predict(theta).items():
        torch.testing.assert_close(value, expected_pred[key])


def test_eval_counts_each_row_once_in_dataset_order(geometry, tmp_path):
    """Batches out of order with one repeated (as a distributed sampler pads): the same figures."""
    module = make_module(geometry)
    rows = synthetic_rows(100, seed=4)
    plain = tiny_trainer(tmp_path).validate(module, loader(rows, batch_size=32), verbose=False)[0]
    expected = module.last_eval
    batches = [rows[list(range(i, min(i + 32, len(rows))))] for i in range(0, len(rows), 32)]
    padded = [batches[2], batches[0], batches[3], batches[1], batches[0]]
    metrics = tiny_trainer(tmp_path).validate(module, DataLoader(padded, batch_size=None), verbose=False)[0]
    assert metrics.keys() == plain.keys()
    for key, value in plain.items():  # val/loss too: the batch-size weighted mean of batch losses
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
    pred, true, valid = module.last_eval
    assert torch.equal(valid, expected[2]) and len(valid) == len(rows)
    for key in ("total", "fc_cost", "ks"):
        torch.testing.assert_close(true[key], expected[1][key])
        torch.testing.assert_close(pred[key], expected[0][key])
    # batches without an index (a loader of one's own): every row counted, in the order seen
    bare = [{k: v for k, v in b.items() if k != "index"} for b in batches]
    metrics = tiny_trainer(tmp_path).validate(module, DataLoader(bare, batch_size=None), verbose=False)[0]
    assert metrics == pytest.approx(plain)
    torch.testing.assert_close(module.last_eval[0]["total"], expected[0]["total"])


def test_predict_raw_equals_forward_on_normalised(geometry, space):
    module = make_module(geometry)
    module.train()
    theta = space.random_start(12, np.random.default_rng(3))  # (12, 10) float64 raw coefficients
    pred = module.predict(theta)
    assert set(pred) == {"fc_cost", "ks", "total", "p_valid"}
    assert module.training  # predict restores the mode
    with torch.no_grad():
        module.eval()
        direct = module(space.normalise(theta).float())
    for key, value in pred.items():
        assert value.shape == (12,) and not value.requires_grad
        torch.testing.assert_close(value, direct[key])
    from_numpy = module.predict(theta.numpy())
    torch.testing.assert_close(from_numpy["total"], pred["total"])
    with pytest.raises(ValueError, match="raw parameters"):
        module.predict(torch.zeros(3, 7))


def test_predict_normalised_keeps_the_graph_when_asked(geometry):
    module = make_module(geometry)
    u = torch.rand(5, 10, requires_grad=True)
    assert not module.predict_normalised(u)["total"].requires_grad
    total = module.predict_normalised(u, grad=True)["total"]
    total.sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all() and (u.grad != 0).any()


def test_real_registry_networks_build():
    networks = pytest.importorskip("pmfm.models.networks")
    if getattr(networks, "__file__", None) is None:
        pytest.skip("pmfm.models.networks does not import (a stand-in ran the other tests)")
    module = SurrogateModule(network="mlp", network_hparams=SMALL)  # bundled box, basis and SC
    out = module.predict_normalised(torch.rand(4, 10))
    assert set(out) == {"fc_cost", "ks", "total", "p_valid"} and out["total"].shape == (4,)
