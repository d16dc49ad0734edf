"""``python -m pmfm.train``, ``pmfm.predict`` and ``pmfm.compare`` on a synthetic dataset (fast)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_synthetic_dataset
from hydra import compose, initialize_config_module

import pmfm.conf
from pmfm.data import load_bundled
from pmfm.models import SurrogateModule
from pmfm.params import ParamSpace
from pmfm.pipelines.compare import compare
from pmfm.pipelines.predict import predict_csv
from pmfm.pipelines.train import train_surrogate

CONF = Path(pmfm.conf.__file__).parent
FAST = [
    "logger=csv",
    "trainer.max_epochs=3",
    "datamodule.batch_size=64",
    "trainer.accelerator=cpu",
    "device=cpu",
    "search_callback.enabled=false",  # a full-protocol re-simulation (~20 s); tested elsewhere
    "model=mlp",  # on the coefficients unless a test names another (the linearised features: its own test)
    "model.network_hparams.features=coefficients",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    space = ParamSpace(load_bundled().basis())
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "synthetic", space)


def _cfg(dataset, *overrides):
    fast = (
        [o for o in FAST if not o.startswith("model")]
        if any(o.startswith("model=") for o in overrides)
        else FAST
    )
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        return compose("train", overrides=[f"dataset.folder={dataset}", *fast, *overrides])


def _module(cfg) -> SurrogateModule:
    """The untrained surrogate a train config describes (its auto hparams resolved on the bundled data)."""
    from pmfm.pipelines.train import data_hparams

    space, data = ParamSpace(load_bundled().basis()), load_bundled()
    return SurrogateModule(
        network=cfg.model.network,
        network_hparams=dict(cfg.model.network_hparams) | data_hparams(cfg.model, data),
        terms=["fc_cost", "ks"],
        output_names=list(cfg.datamodule.outputs),
        box=space.box.tolist(),
        basis=data.basis().tolist(),
        sc=data.sc.tolist(),
    )


@pytest.mark.parametrize(
    "model", sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "emulator")
)
def test_every_model_config_instantiates_and_predicts(dataset, model):
    module = _module(_cfg(dataset, f"model={model}"))
    space = ParamSpace(load_bundled().basis())
    pred = module.predict(space.random_start(4, np.random.default_rng(0)))
    assert {"fc_cost", "ks", "total", "p_valid"} <= set(pred)
    assert all(v.shape == (4,) for v in pred.values())


def test_train_mlp_end_to_end(dataset, tmp_path):
    metrics = train_surrogate(_cfg(dataset, "trainer.max_epochs=25"), tmp_path)
    assert (tmp_path / "pred_vs_sim.png").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/spearman"] == pytest.approx(metrics["test/spearman"])
    assert metrics["test/spearman"] > 0.5  # the synthetic cost is a smooth function of the inputs
    # reload without Hydra: same predictions; pmfm.predict writes them per input row
    model = SurrogateModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    space = ParamSpace(np.asarray(model.hparams.basis))
    theta = space.random_start(5, np.random.default_rng(1))
    np.savetxt(tmp_path / "sets.csv", theta.numpy(), delimiter=",")
    out = tmp_path / "pred"
    out.mkdir()
    pred = predict_csv(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "sets.csv", out, "cpu")
    again = model.predict(theta)
    np.testing.assert_allclose(pred["total"], again["total"].numpy(), rtol=1e-5)
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["fc_cost", "ks", "total", "p_valid"]


def test_model_mlp_trains_the_linearised_features_and_reloads_with_its_target_fc(dataset, tmp_path):
    from pmfm.models.networks import MLP, LinearisedMLP

    metrics = train_surrogate(_cfg(dataset, "model=mlp", "trainer.max_epochs=2"), tmp_path)
    assert np.isfinite(metrics["test/mae_total"])
    model = SurrogateModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    assert isinstance(model.net, LinearisedMLP)  # what `python -m pmfm.train model=mlp` trains
    assert type(_module(_cfg(dataset, "model=mlp_lna")).net) is LinearisedMLP  # its earlier name
    coefficients = _module(_cfg(dataset, "model=mlp", "model.network_hparams.features=coefficients"))
    assert type(coefficients.net) is MLP
    data = load_bundled()
    np.testing.assert_allclose(model.net.target_fc.numpy(), data.fc)  # resolved from target_fc: auto
    theta = ParamSpace(data.basis()).random_start(4, np.random.default_rng(2))
    first = model.predict(theta)["total"]
    model.net._memo.clear()
    torch.testing.assert_close(model.predict(theta)["total"], first)  # memo or not, the same numbers


def test_resume_from_checkpoint_continues(dataset, tmp_path):
    train_surrogate(_cfg(dataset, "trainer.max_epochs=2"), tmp_path / "a")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=False)
    train_surrogate(_cfg(dataset, "trainer.max_epochs=4", f"ckpt_path={last}"), tmp_path / "b")
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == first["epoch"] + 2  # two more epochs after the restored ones
    assert resumed["global_step"] == 2 * first["global_step"]


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "pmfm.train", *args], capture_output=True, text=True, timeout=timeout
    )


def test_multirun_two_seeds_then_compare(dataset, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _cli("-m", f"dataset.folder={dataset}", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(runs) == 2
    rows = compare(sweep)
    assert [r["seed"] for r in sorted(rows, key=lambda r: r["seed"])] == ["1", "2"]
    assert (sweep / "comparison.csv").is_file() and (sweep / "comparison.png").is_file()


def test_wandb_logger_is_offline_and_finishes(dataset, tmp_path):
    proc = _cli(f"dataset.folder={dataset}", *FAST[1:], "logger=wandb", f"hydra.run.dir={tmp_path}",
                "trainer.max_epochs=2")  # fmt:skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0  # an offline run, ready for `wandb sync`
    assert "wandb sync" in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/spearman" in metrics and "val/spearman" in metrics


def test_ddp_on_cpu_with_two_processes(dataset, tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2"]
    proc = _cli(f"dataset.folder={dataset}", *FAST, *ddp, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "test/spearman" in json.loads((tmp_path / "metrics.json").read_text())


def test_optuna_sweep_runs_trials(dataset, tmp_path):
    proc = _cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"dataset.folder={dataset}", *FAST,
                "trainer.max_epochs=2", f"hydra.sweep.dir={tmp_path}")  # fmt:skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "optimization_results.yaml").is_file()
    assert len([p for p in tmp_path.iterdir() if (p / "metrics.json").is_file()]) == 2


def test_dataset_made_with_another_cost_variant_is_refused(dataset, tmp_path):
    import shutil

    from pmfm.datasets import DatasetError

    copy = tmp_path / "kong"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["cost"] = {"variant": "kong2021"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="cost=kong2021 .* cost=delssome"):
        train_surrogate(
            _cfg(copy, "cost=delssome", "datamodule.outputs=[valid,fc_cost,ks,fc_l1]"), tmp_path / "run"
        )


def test_mlp_inputs_are_standardised_with_the_training_split(dataset, tmp_path):
    from pmfm.datasets import PMFMDataModule
    from pmfm.pipelines.train import input_statistics

    cfg = _cfg(dataset)
    space = ParamSpace(load_bundled().basis())
    dm = PMFMDataModule(
        dataset, space, outputs=tuple(cfg.datamodule.outputs), split=tuple(cfg.datamodule.split)
    )
    stats = input_statistics(cfg.model, dm)
    x = dm.dataset("train").x
    np.testing.assert_allclose(stats["input_mean"], x.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats["input_std"], x.std(0).numpy(), rtol=1e-6)
    assert input_statistics(_cfg(dataset, "model=gnn").model, dm) == {}  # regional inputs are already scaled
    train_surrogate(_cfg(dataset, "trainer.max_epochs=1"), tmp_path)
    model = SurrogateModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    np.testing.assert_allclose(model.net.input_mean.numpy(), stats["input_mean"], rtol=1e-6)


def test_train_conditioned_transformer_serves_another_group(dataset, tmp_path):
    from pmfm.models.conditioning import empirical_condition

    train_surrogate(_cfg(dataset, "model=transformer_cond", "trainer.max_epochs=1"), tmp_path)
    model = SurrogateModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    data = load_bundled()
    own = empirical_condition(data.fc, data.fcd_cdf)
    torch.testing.assert_close(model.net.condition, own)  # resolved from condition: auto
    theta = ParamSpace(data.basis()).random_start(4, np.random.default_rng(3))
    pred = model.predict(theta)["total"]
    torch.testing.assert_close(model.predict(theta, condition=own)["total"], pred)
    weaker = own.clone()
    weaker[:-32] *= 0.3  # a subject with a third of the FC: another condition, other predictions
    assert (model.predict(theta, condition=weaker)["total"] - pred).abs().max() > 1e-6
    from omegaconf import OmegaConf

    from pmfm.pipelines.predict import group_condition

    np.savetxt(tmp_path / "sets.csv", theta.numpy(), delimiter=",")  # pmfm.predict condition.split=vali
    vali = group_condition(OmegaConf.create({"path": None, "split": "vali"}))
    scored = predict_csv(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "sets.csv", tmp_path, "cpu", vali)
    expected = model.predict(theta, condition=vali)["total"].numpy()
    np.testing.assert_allclose(scored["total"], expected, rtol=1e-5)
    assert group_condition(OmegaConf.create({"path": None, "split": None})) is None
    plain = SurrogateModule(network="mlp", network_hparams={"hidden": 8, "depth": 1}, box=model.hparams.box)
    with pytest.raises(ValueError, match="not conditioned"):
        plain.predict(theta, condition=own)
