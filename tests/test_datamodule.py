"""PMFMDataModule on synthetic shards: group-wise splits, encoding, streaming, prepare_data."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from pmfm.data import load_bundled
from pmfm.datasets import COLUMNS, PMFMDataModule, ShardStore
from pmfm.datasets.datamodule import SPLITS, assign_splits
from pmfm.params import ParamSpace

OUTPUTS = ("total", "valid", "fc_l1", "ks")  # fc_l1 holds the sample id: it names a row in a batch
INVALID = 10.0  # the cost's placeholder for a term with no valid repeat ("fit" stage)


@pytest.fixture(scope="module")
def space():
    return ParamSpace(load_bundled().basis())


def make_rows(space, rng, n, first_id, shard, start=-1, generation=-1):
    n_fc = rng.choice([0, 1, 3], size=n, p=[0.2, 0.2, 0.6])
    n_fcd = rng.choice([0, 2, 3], size=n, p=[0.1, 0.3, 0.6])
    valid = (n_fc > 0) & (n_fcd > 0)
    ids = np.arange(first_id, first_id + n)
    rows = {
        "theta": space.random_start(n, rng).numpy(),
        "sample_id": ids,
        "shard": np.full(n, shard),
        "start": np.full(n, start),
        "generation": np.asarray(generation) + np.zeros(n, dtype=int),
        "repeats": np.full(n, 3),
        "n_valid_fc": n_fc,
        "n_valid_fcd": n_fcd,
        "fc_cost": np.where(valid, rng.uniform(0.2, 0.8, n), INVALID),
        "fc_l1": ids.astype(np.float64),
        "ks": np.where(valid, rng.uniform(0.1, 0.9, n), INVALID),
        "total": np.where(valid, rng.uniform(0.5, 2.0, n), INVALID),
    }
    return {k: rows[k].astype(t) for k, t in COLUMNS.items()}


def write_dataset(folder, space, n_runs=8, sampler_shards=(20, 15, 25), gens=(2, 5), popsize=4, seed=0):
    """CMA-ES runs in shards 0-1 (start s in shard s % 2), then sampler shards; returns all rows."""
    rng = np.random.default_rng(seed)
    store = ShardStore(folder)
    config = {"dim": 10, "dataset": {"name": "synthetic", "num_shards": 2 + len(sampler_shards)}}
    store.claim(config, "synthetic", {"pmfm": "test"})
    next_id, shards = 0, {0: [], 1: []}
    for start in range(n_runs):
        for generation in range(int(rng.integers(gens[0], gens[1] + 1))):
            rows = make_rows(space, rng, popsize, next_id, start % 2, start, generation)
            shards[start % 2].append(rows)
            next_id += popsize
    for k, n in enumerate(sampler_shards, start=2):
        shards[k] = [make_rows(space, rng, n, next_id, k)]
        next_id += n
    everything = []
    for k, parts in shards.items():
        rows = {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}
        store.write_shard(k, rows, {"strategy": "synthetic"})
        everything.append(rows)
    store.update_manifest(len(shards))
    return {c: np.concatenate([r[c] for r in everything]) for c in COLUMNS}


def groups_of(rows):
    """sample id -> group label, as the datamodule names them."""
    return {
        int(i): f"start_{s:05d}" if s >= 0 else f"shard_{k:05d}"
        for i, s, k in zip(rows["sample_id"], rows["start"], rows["shard"], strict=True)
    }


def collect(loader):
    batches = list(loader)
    if not batches:
        return torch.zeros(0, 10), torch.zeros(0, len(OUTPUTS)), torch.zeros(0, dtype=torch.bool)
    return tuple(torch.cat([b[k] for b in batches]) for k in ("x", "y", "valid"))


def loaders(dm):
    return {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}


def row_multiset(loader):
    x, y, valid = collect(loader)
    return Counter(
        (a.numpy().tobytes(), b.numpy().tobytes(), bool(v)) for a, b, v in zip(x, y, valid, strict=True)
    )


def make_dm(folder, space, **kwargs):
    kwargs = {"outputs": OUTPUTS, "batch_size": 16, **kwargs}
    dm = PMFMDataModule(folder, space, **kwargs)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, space):
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, write_dataset(folder, space)


def test_runs_and_sampler_shards_never_straddle_splits(dataset, space):
    folder, rows = dataset
    dm = make_dm(folder, space)
    group = groups_of(rows)
    seen: dict[str, set] = {}  # group -> splits its rows landed in
    ids_per_split = {}
    for split, loader in loaders(dm).items():
        ids = collect(loader)[1][:, 2].long().tolist()
        ids_per_split[split] = ids
        for i in ids:
            seen.setdefault(group[i], set()).add(split)
        assert sorted({group[i] for i in ids}) == dm.split_groups[split]
        assert len(ids) == dm.split_rows[split]
    assert all(len(splits) == 1 for splits in seen.values()), seen
    all_ids = sorted(i for ids in ids_per_split.values() for i in ids)
    assert all_ids == sorted(rows["sample_id"].tolist())  # every row once: whole groups, no duplicates
    assert len(seen) == 8 + 3 and all(dm.split_groups[s] for s in SPLITS)
    assert {g[:5] for g in seen} == {"start", "shard"}


def test_split_shares_follow_the_request_with_many_groups(tmp_path, space):
    rows = write_dataset(tmp_path, space, n_runs=160, sampler_shards=(12,) * 20, gens=(1, 6), popsize=3)
    dm = make_dm(tmp_path, space, split=(0.7, 0.2, 0.1))
    total = len(rows["sample_id"])
    assert sum(dm.split_rows.values()) == total
    shares = [dm.split_rows[s] / total for s in SPLITS]
    assert np.allclose(shares, (0.7, 0.2, 0.1), atol=0.02), shares
    assert sum(len(g) for g in dm.split_groups.values()) == 180


def test_split_seed_decides_the_split(dataset, space):
    folder, _ = dataset
    first = make_dm(folder, space, split_seed=3).split_groups
    assert make_dm(folder, space, split_seed=3).split_groups == first
    assert make_dm(folder, space, split_seed=4).split_groups != first


def test_assign_splits_with_few_groups():
    three = assign_splits({0: 50, 1: 40, 2: 45}, (0.8, 0.1, 0.1), seed=0)
    assert sorted(three.values()) == [0, 1, 2]  # 3 groups: one per split, whatever their sizes
    assert list(assign_splits({5: 10}, (0.8, 0.1, 0.1), seed=0).values()) == [0]
    assert sorted(assign_splits({5: 10, 6: 12}, (0.8, 0.1, 0.1), seed=1).values()) == [0, 1]
    assert set(assign_splits({k: 5 for k in range(10)}, (0.9, 0.1, 0.0), seed=0).values()) == {0, 1}
    with pytest.raises(ValueError, match="split"):
        assign_splits({0: 1}, (0.0, 0.5, 0.5), seed=0)


def test_items_are_normalised_inputs_and_ordered_outputs(dataset, space):
    folder, rows = dataset
    dm = make_dm(folder, space)
    assert dm.input_dim == 10 and dm.output_names == OUTPUTS
    item = dm.dataset("train")[0]
    assert item["x"].shape == (10,) and item["x"].dtype == torch.float32
    assert item["y"].shape == (4,) and item["y"].dtype == torch.float32
    assert item["valid"].shape == () and item["valid"].dtype == torch.bool
    where = {int(i): n for n, i in enumerate(rows["sample_id"])}
    expected_x = space.normalise(torch.from_numpy(rows["theta"])).to(torch.float32)
    expected_valid = (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0)
    n_invalid = 0
    for loader in loaders(dm).values():
        x, y, valid = collect(loader)
        assert x.min() >= 0 and x.max() <= 1
        order = [where[i] for i in y[:, 2].long().tolist()]
        assert torch.equal(x, expected_x[order])
        assert np.array_equal(valid.numpy(), expected_valid[order])
        assert np.array_equal(y[:, 0].numpy(), rows["total"][order].astype(np.float32))
        assert np.array_equal(y[:, 1].numpy(), expected_valid[order].astype(np.float32))
        assert np.array_equal(y[:, 3].numpy(), rows["ks"][order].astype(np.float32))
        assert torch.all(y[~valid, 0] == INVALID)  # invalid costs kept as stored: the loss masks them
        n_invalid += int((~valid).sum())
    assert n_invalid > 0


def test_stats_over_train(dataset, space):
    folder, rows = dataset
    dm = make_dm(folder, space)
    x, y, valid = collect(dm.train_dataloader())
    stats = dm.stats()
    assert list(stats) == list(OUTPUTS)
    total = y[valid, 0].double()
    assert stats["total"]["n"] == int(valid.sum())
    assert stats["total"]["mean"] == pytest.approx(total.mean().item(), rel=1e-9)
    assert stats["total"]["std"] == pytest.approx(total.std(unbiased=False).item(), rel=1e-6)
    assert stats["valid"]["mean"] == pytest.approx(valid.double().mean().item())
    assert stats["total"]["mean"] < 2.0  # no invalid placeholder (10) inside


def test_train_shuffles_and_eval_does_not(dataset, space):
    folder, _ = dataset
    dm = make_dm(folder, space)
    train = dm.train_dataloader()
    a, b = (collect(train)[1][:, 2] for _ in range(2))
    assert not torch.equal(a, b) and torch.equal(a.sort().values, b.sort().values)
    val = collect(dm.val_dataloader())[1][:, 2]
    assert torch.equal(val, val.sort().values)  # stored order
    assert torch.equal(collect(dm.predict_dataloader())[1], collect(dm.test_dataloader())[1])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_yields_the_same_rows_as_memory(dataset, space, num_workers):
    folder, _ = dataset
    memory = make_dm(folder, space)
    stream = make_dm(folder, space, stream_rows=0, num_workers=num_workers)
    assert memory.streaming is False and stream.streaming is True
    assert stream.split_groups == memory.split_groups and stream.split_rows == memory.split_rows
    expected, got = loaders(memory), loaders(stream)
    for split in SPLITS:
        rows = row_multiset(got[split])
        assert rows == row_multiset(expected[split]), split
        assert max(rows.values()) == 1 and sum(rows.values()) == memory.split_rows[split]  # no duplicate
    for name, moments in stream.stats().items():
        assert moments == pytest.approx(memory.stats()[name], rel=1e-6)
    if num_workers == 0:  # shard order and rows reshuffled each epoch
        first, second = (collect(got["train"])[1][:, 2] for _ in range(2))
        assert not torch.equal(first, second)


@pytest.mark.parametrize("stream_rows", [2_000_000, 0])
def test_batches_carry_each_rows_position_in_the_dataset(dataset, space, stream_rows):
    folder, rows = dataset  # rows: the shards concatenated in order, as load_dataset reads them
    dm = make_dm(folder, space, stream_rows=stream_rows)
    seen = []
    for loader in loaders(dm).values():
        for batch in loader:
            assert batch["index"].dtype == torch.int64 and batch["index"].shape == batch["valid"].shape
            ids = batch["y"][:, 2].long().numpy()  # fc_l1 holds the sample id
            np.testing.assert_array_equal(rows["sample_id"][batch["index"].numpy()], ids)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(rows["sample_id"])))  # every row once, over the splits
    if not dm.streaming:
        assert dm.dataset("val")[0]["index"].shape == ()


def test_fit_runs_on_both_paths(dataset, space):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(10, len(OUTPUTS))

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.net(batch["x"])[:, 0], batch["y"][:, 0])

        def validation_step(self, batch, _):
            self.log("val/loss", self.training_step(batch, 0))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    folder, _ = dataset
    for stream_rows in (2_000_000, 0):
        dm = PMFMDataModule(folder, space, outputs=OUTPUTS, batch_size=16, stream_rows=stream_rows)
        trainer = L.Trainer(
            fast_dev_run=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        trainer.fit(Tiny(), datamodule=dm)
        assert trainer.state.finished


def test_prepare_data_generates_only_when_needed(tmp_path, space):
    folder = tmp_path / "ds"
    calls = []

    def generate():
        calls.append(1)
        write_dataset(folder, space, n_runs=2, sampler_shards=(5,), gens=(1, 1))

    dm = PMFMDataModule(folder, space, generate=generate)
    dm.prepare_data()  # missing
    assert len(calls) == 1
    dm.prepare_data()  # complete now
    assert len(calls) == 1
    dm.setup()
    assert dm.split_rows["train"] > 0

    store = ShardStore(folder)
    store.sidecar_path(2).unlink()
    store.update_manifest(3)  # complete: false, two of three shards
    dm.prepare_data()
    assert len(calls) == 2

    manifest = store.update_manifest(3)
    manifest["counts"]["shards_total"] = 4  # claims complete but lists fewer shards than planned
    (folder / "manifest.json").write_text(json.dumps(manifest))
    dm.prepare_data()
    assert len(calls) == 3

    store.sidecar_path(2).unlink()  # sidecars, not the manifest, say which shards are complete
    with pytest.warns(UserWarning, match="incomplete dataset; using its 2 of 3 shards"):
        with pytest.warns(UserWarning, match="only 2 group"):  # the two runs of shards 0 and 1
            PMFMDataModule(folder, space).setup()
