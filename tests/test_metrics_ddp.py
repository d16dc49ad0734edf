"""Validation and test metrics under DDP are those of the whole split: 2 CPU processes give 1 process's."""

import json
import math
import runpy
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from conftest import write_synthetic_dataset

from pmfm.data import load_bundled
from pmfm.datasets import PMFMDataModule, ShardStore
from pmfm.models import SurrogateModule
from pmfm.params import ParamSpace

OUTPUTS = ("valid", "fc_cost", "ks", "total")
BATCH = 8  # 37 rows per split: 5 batches, so 2 processes get 3 each, batch 0 twice (padding)
PER_RUN = 37  # rows of a CMA-ES run, the unit a split is made of: an odd split

# Evaluates a checkpoint on the val and test splits with `devices` CPU processes, from memory and
# streamed from the shards; rank 0 writes the metrics, last_eval and the rows each process saw. Run
# as a script: Lightning's DDP re-runs it.
SCRIPT = """
import json
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pmfm.datasets import PMFMDataModule
from pmfm.models import SurrogateModule


class RowsSeen(Callback):
    def __init__(self):
        self.rows = 0

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows += len(batch["x"])

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows += len(batch["x"])


def evaluate(folder, ckpt, devices, out, batch_size):
    torch.set_num_threads(1)
    devices, batch_size = int(devices), int(batch_size)
    model = SurrogateModule.load_from_checkpoint(ckpt, map_location="cpu")
    seen = RowsSeen()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seen],
    )
    result = {}
    for mode, stream_rows in (("memory", 10**6), ("stream", 0)):
        outputs = model.hparams.output_names
        dm = PMFMDataModule(
            folder, model.param_space(), outputs=outputs, batch_size=batch_size, stream_rows=stream_rows
        )
        for stage, run in (("val", trainer.validate), ("test", trainer.test)):
            seen.rows = 0
            metrics = run(model, datamodule=dm, verbose=False)[0]
            rows = trainer.strategy.all_gather(torch.tensor(seen.rows)).reshape(-1)
            pred, true, valid = model.last_eval
            result[f"{mode}/{stage}"] = {
                "metrics": metrics,
                "rows_seen": rows.tolist(),
                "split_rows": dm.split_rows[stage],
                "pred": {k: v.tolist() for k, v in pred.items()},
                "true": {k: v.tolist() for k, v in true.items()},
                "valid": valid.tolist(),
            }
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    evaluate(*sys.argv[1:])
"""


def add_invalid_rows(folder, space, share=0.25):
    """Mark the rows with the highest second coefficient invalid (the synthetic data has none)."""
    store = ShardStore(folder)
    for shard in range(2):
        rows = store.read_shard(shard)
        u1 = space.normalise(torch.from_numpy(rows["theta"])).numpy()[:, 1]
        invalid = u1 > np.quantile(u1, 1 - share)
        for key in ("n_valid_fc", "n_valid_fcd"):
            rows[key] = np.where(invalid, 0, rows[key]).astype(rows[key].dtype)
        for key, placeholder in (("fc_cost", 10.0), ("ks", 10.0), ("total", 20.0)):
            rows[key] = np.where(invalid, placeholder, rows[key]).astype(rows[key].dtype)
        store.write_shard(shard, rows, {"strategy": "synthetic"})
    store.update_manifest(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A briefly trained surrogate (1 process) and its dataset: 12 runs of 37 rows, a quarter invalid."""
    root = tmp_path_factory.mktemp("ddp_metrics")
    space = ParamSpace(load_bundled().basis())
    folder = write_synthetic_dataset(root / "synthetic", space, per_run=PER_RUN)
    add_invalid_rows(folder, space)
    L.seed_everything(0)
    model = SurrogateModule(
        network="mlp",
        network_hparams={"features": "coefficients", "hidden": 32, "depth": 2},
        output_names=list(OUTPUTS),
        lr=1e-2,
    )
    dm = PMFMDataModule(folder, space, outputs=OUTPUTS, batch_size=64)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(root / "surrogate.ckpt")
    (root / "evaluate.py").write_text(SCRIPT)
    return root, folder


def test_two_processes_report_the_one_process_metrics(checkpoint):
    root, folder = checkpoint
    ckpt, script = root / "surrogate.ckpt", root / "evaluate.py"
    args = [str(folder), str(ckpt)]
    proc = subprocess.run(
        [sys.executable, str(script), *args, "2", str(root / "two.json"), str(BATCH)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runpy.run_path(str(script))["evaluate"](*args, 1, str(root / "one.json"), BATCH)
    one, two = (json.loads((root / f"{n}.json").read_text()) for n in ("one", "two"))

    names = ["spearman", "pearson", "spearman_top10", "pearson_top10", "top1_recall", "top5_recall"]
    names += ["mae_total", "mae_fc_cost", "mae_ks", "auroc_valid", "loss"]  # loss: each batch once
    for stage in ("val", "test"):
        reference = one[f"memory/{stage}"]
        n = reference["split_rows"]
        assert n % BATCH and math.ceil(n / BATCH) % 2, n  # an odd number of batches: the sampler pads
        assert reference["rows_seen"] == [n]
        assert sum(two[f"memory/{stage}"]["rows_seen"]) > n  # a padded split: some rows seen twice
        # streamed: a split of one CMA-ES run lives in one shard, so one process reads no row at all
        assert sorted(two[f"stream/{stage}"]["rows_seen"]) == [0, n]
        for got in (two[f"memory/{stage}"], one[f"stream/{stage}"], two[f"stream/{stage}"]):
            # last_eval on rank 0: the whole split, each row once, in dataset order
            assert len(got["valid"]) == n and got["valid"] == reference["valid"]
            for part in ("pred", "true"):
                assert got[part].keys() == reference[part].keys()
                for key, values in reference[part].items():
                    np.testing.assert_allclose(got[part][key], values, rtol=1e-6, atol=1e-7)
            for name in names:
                key = f"{stage}/{name}"
                assert key in reference["metrics"] and key in got["metrics"], key
                assert got["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-5, abs=1e-6), (
                    key
                )
        assert math.isfinite(reference["metrics"][f"{stage}/spearman_top10"])  # 37 rows: 4 in the best 10%
        assert (
            reference["metrics"][f"{stage}/spearman"] > 0.3
        )  # a trained model: a ranking that means something
