"""Train/val/test loaders over a dataset folder (see `pmfm.datasets.store`), split by group.

A *group* is the unit that never straddles two splits, so that the validation and test scores
measure generalisation to new regions of parameter space rather than to a neighbour of a training
point:

- a CMA-ES run: the rows with one ``start >= 0`` (all its generations); label ``start_00007``;
- for sampler rows (``start == -1``), their shard; label ``shard_00003``.

A run lives in exactly one shard (start ``s`` is written to shard ``s % num_shards``), so a shard
holds whole runs and a split is a set of groups that can be filtered shard by shard.

Groups are ordered (sampler shards, then runs, by number), shuffled with ``split_seed`` and dealt
greedily: each goes to the split whose row count is furthest below its target share of all rows.
With many groups the row shares come within about one group's size of ``split``. Afterwards, a
split with a positive share that got no group takes the smallest group of the split holding the
most groups (when that split has two or more), so with 3+ groups every split with a positive share
has at least one group. With fewer groups some splits stay empty (a warning says so): one group
goes wholly to the split with the largest share; two groups end in two splits (with the default
shares train and val, test empty). Empty val/test splits give loaders with no batches; an empty
train split raises when its loader is asked for.

Every batch is a dict of tensors: ``x`` (B, P) float32 coefficients normalised to [0, 1] by the
ParamSpace's box, ``y`` (B, T) float32 outputs in ``output_names`` order, ``valid`` (B,) bool,
True when both n_valid_fc and n_valid_fcd are positive, and ``index`` (B,) int64, the row's
position in the whole dataset (its complete shards in order, as ``load_dataset`` reads them), so
that evaluation under DDP can count each row of a split once, however the sampler padded it.
Targets of invalid samples are kept as stored (the cost's ``invalid_value``, 10 in the "fit"
stage): the loss is expected to mask the cost outputs with ``valid``; the "valid" target itself
(1.0 / 0.0) is meaningful for every row.

Datasets with at most ``stream_rows`` rows are loaded once into memory; larger ones stream from
their shards (an IterableDataset, one shard at a time, shards dealt to DataLoader workers and DDP
ranks; ranks may then see unequal numbers of batches, and the streamed loaders have no length).
Shuffling draws from torch's global RNG (seed it with ``lightning.seed_everything``), as
torch's RandomSampler does: the in-memory train loader reshuffles rows every epoch, the streamed one
reshuffles the shard order and the rows within each shard.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    get_worker_info,
)

from pmfm.datasets.store import DatasetError, ShardStore, load_dataset
from pmfm.params import ParamSpace

OUTPUTS = ("valid", "fc_cost", "fc_l1", "ks", "total")  # "valid": both n_valid counts > 0
SPLITS = ("train", "val", "test")


# -- groups and splits ------------------------------------------------------------------------------
def group_keys(start: np.ndarray, shard: np.ndarray) -> np.ndarray:
    """(n,) int64 group of each row: its start (CMA-ES run) if >= 0, else -1 - shard (sampler)."""
    start = np.asarray(start, dtype=np.int64)
    return np.where(start >= 0, start, -1 - np.asarray(shard, dtype=np.int64))


def group_label(key: int) -> str:
    return f"start_{key:05d}" if key >= 0 else f"shard_{-1 - key:05d}"


def _group_order(key: int) -> tuple[bool, int]:
    """Sampler shards first, then runs, each by number."""
    return (key >= 0, key if key >= 0 else -1 - key)


def assign_splits(sizes: dict[int, int], split: Sequence[float], seed: int) -> dict[int, int]:
    """Split index (0 train, 1 val, 2 test) of each group, from the groups' row counts.

    Deterministic in (the set of groups and their sizes, split, seed); see the module docstring.
    """
    shares = _check_split(split)
    keys = sorted(sizes, key=_group_order)
    order = np.random.default_rng(seed).permutation(len(keys))
    target = shares * sum(sizes.values())  # (3,) rows wanted per split
    assigned = np.zeros(3)
    members: list[list[int]] = [[], [], []]
    for i in order:
        key = keys[i]
        deficit = np.where(shares > 0, target - assigned, -np.inf)
        s = int(np.argmax(deficit))  # ties: the earlier split
        members[s].append(key)
        assigned[s] += sizes[key]
    for s in range(3):  # a split with a positive share and no group takes one, where one can be spared
        if shares[s] > 0 and not members[s]:
            donors = [d for d in range(3) if len(members[d]) > 1]
            if not donors:
                break
            d = max(donors, key=lambda d: len(members[d]))
            key = min(reversed(members[d]), key=sizes.__getitem__)  # smallest; ties: the latest dealt
            members[d].remove(key)
            members[s].append(key)
    return {key: s for s in range(3) for key in members[s]}


def _check_split(split: Sequence[float]) -> np.ndarray:
    shares = np.asarray(split, dtype=np.float64)
    if shares.shape != (3,) or not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares[0] <= 0:
        raise ValueError(
            f"split={tuple(split)}; expected three non-negative shares (train, val, test), train > 0"
        )
    return shares / shares.sum()


def manifest_complete(manifest: dict | None) -> bool:
    """Whether a manifest describes a finished dataset (every shard complete and listed)."""
    if manifest is None or not manifest.get("complete", False):
        return False
    total = manifest.get("counts", {}).get("shards_total")
    return total is not None and len(manifest.get("shards", {})) >= total


def _complete_shards(store: ShardStore, manifest: dict) -> tuple[int, list[int]]:
    """The planned number of shards and those with a sidecar (complete), as `load_dataset` finds them.

    Sidecars, not the manifest's list, decide: a manifest written by one of several concurrent
    generation workers may not list another's shard yet.
    """
    total = manifest.get("config", {}).get("dataset", {}).get("num_shards")
    if total is None:
        total = manifest.get("counts", {}).get("shards_total", 0)
    return int(total), [k for k in range(int(total)) if store.sidecar_path(k).is_file()]


# -- rows -> tensors --------------------------------------------------------------------------------
def encode_outputs(rows: dict[str, np.ndarray], outputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) float32 outputs in ``outputs`` order and (n,) bool validity of dataset rows."""
    valid = (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0)
    cols = [valid if t == "valid" else rows[t] for t in outputs]
    y = np.stack(cols, axis=1).astype(np.float32) if len(valid) else np.zeros((0, len(outputs)), np.float32)
    return y, valid


def encode(
    rows: dict[str, np.ndarray], space: ParamSpace, outputs: Sequence[str], index: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """A batch dict ``x`` (n, P) float32 normalised, ``y`` (n, T) float32, ``valid`` (n,) bool and
    ``index`` (n,) int64, the rows' positions in the dataset (default 0..n-1)."""
    y, valid = encode_outputs(rows, outputs)
    x = space.normalise(torch.from_numpy(np.asarray(rows["theta"], dtype=np.float64))).to(torch.float32)
    index = np.arange(len(valid)) if index is None else np.asarray(index)
    return {
        "x": x,
        "y": torch.from_numpy(y),
        "valid": torch.from_numpy(valid),
        "index": torch.from_numpy(index.astype(np.int64)),
    }


class _Moments:
    """Per-output count, mean and std; cost outputs over valid rows only, "valid" over all rows."""

    def __init__(self, outputs: Sequence[str]):
        self.outputs = tuple(outputs)
        self.n = np.zeros(len(outputs))
        self.sum = np.zeros(len(outputs))
        self.sumsq = np.zeros(len(outputs))

    def update(self, y: np.ndarray, valid: np.ndarray) -> None:
        mask = np.stack([np.ones_like(valid) if t == "valid" else valid for t in self.outputs], axis=1)
        values = np.where(mask, y.astype(np.float64), 0.0)  # (n, T)
        self.n += mask.sum(0)
        self.sum += values.sum(0)
        self.sumsq += (values**2).sum(0)

    def result(self) -> dict[str, dict[str, float]]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.sum / self.n
            std = np.sqrt(np.maximum(self.sumsq / self.n - mean**2, 0.0))
        return {
            t: {"mean": float(mean[i]), "std": float(std[i]), "n": int(self.n[i])}
            for i, t in enumerate(self.outputs)
        }


# -- datasets ---------------------------------------------------------------------------------------
class RowsDataset(Dataset):
    """In-memory rows, TensorDataset-like: an int index gives one item, a list of indices a batch.

    ``index`` (n,): each row's position in the dataset (default 0..n-1).
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, index: torch.Tensor | None = None
    ):
        self.x, self.y, self.valid = x, y, valid  # (n, P), (n, T), (n,)
        self.index = torch.arange(len(valid)) if index is None else torch.as_tensor(index, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.int64)
        return {
            "x": self.x[index],
            "y": self.y[index],
            "valid": self.valid[index],
            "index": self.index[index],
        }


class ShardStream(IterableDataset):
    """Batches of one split read shard by shard, each shard's rows filtered to the split's groups.

    Shards are dealt to (DDP rank, DataLoader worker) pairs so that no two readers share one; with
    ``shuffle`` the shard order is permuted each pass (the same permutation in every worker) and
    the rows of each shard too. Batches carry over shard boundaries; a reader's last one may be short.
    ``offsets``: the dataset position of each shard's first row (its rows' ``index`` counts on from it).
    """

    COLUMNS = ("theta", "start", "shard", "n_valid_fc", "n_valid_fcd")

    def __init__(
        self,
        folder: str | Path,
        shards: Sequence[int],
        keys: np.ndarray,
        space: ParamSpace,
        outputs: Sequence[str],
        batch_size: int,
        shuffle: bool,
        offsets: dict[int, int],
    ):
        self.store = ShardStore(folder)
        self.shards, self.keys = sorted(shards), np.asarray(keys, dtype=np.int64)
        self.space, self.outputs = space, tuple(outputs)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.offsets = {int(k): int(v) for k, v in offsets.items()}
        self._passes = 0  # passes made by this copy (persistent workers keep theirs)

    def read(self, shard: int, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """The split's rows of one shard (only ``columns``), in stored order, with their dataset ``index``."""
        with np.load(self.store.shard_path(shard)) as z:
            rows = {k: z[k] for k in {*columns, "start", "shard"}}
        keep = np.isin(group_keys(rows["start"], rows["shard"]), self.keys)
        rows = {k: v[keep] for k, v in rows.items()}
        rows["index"] = self.offsets[shard] + np.flatnonzero(keep)
        return rows

    def my_shards(self) -> tuple[list[int], int]:
        """This reader's shards in reading order, and the pass's seed."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world = _rank_world()
        self._passes += 1
        order, seed = list(self.shards), 0
        if self.shuffle:
            # the DataLoader draws one base seed per pass from the global RNG and gives worker k
            # base + k; without workers draw it here, as RandomSampler does
            base = (
                int(torch.empty((), dtype=torch.int64).random_().item())
                if info is None
                else info.seed - worker
            )
            seed = int(np.random.default_rng([base, self._passes]).integers(2**63))
            order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
        return order[rank * workers + worker :: world * workers], seed

    def __iter__(self):
        shards, seed = self.my_shards()
        columns = (*self.COLUMNS, *(t for t in self.outputs if t != "valid"))
        pending: dict[str, torch.Tensor] | None = None
        for shard in shards:
            rows = self.read(shard, columns)
            batch = encode(rows, self.space, self.outputs, rows["index"])
            if self.shuffle:
                perm = torch.from_numpy(np.random.default_rng([seed, shard]).permutation(len(batch["valid"])))
                batch = {k: v[perm] for k, v in batch.items()}
            if pending is not None:
                batch = {k: torch.cat([pending[k], v]) for k, v in batch.items()}
            n = len(batch["valid"])
            full = n - n % self.batch_size
            for i in range(0, full, self.batch_size):
                yield {k: v[i : i + self.batch_size] for k, v in batch.items()}
            pending = {k: v[full:] for k, v in batch.items()}
        if pending is not None and len(pending["valid"]):
            yield pending


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# -- the datamodule ---------------------------------------------------------------------------------
class PMFMDataModule(L.LightningDataModule):
    """Normalised parameters -> cost outputs from one dataset folder, split by CMA-ES run / shard.

    Built from primitive values (plus the ParamSpace that defines the normalised box), so it works
    without Hydra. ``generate`` is a zero-argument callable that creates or finishes the dataset;
    ``prepare_data`` calls it when the folder has no finished dataset.
    """

    def __init__(
        self,
        folder: str | Path,
        space: ParamSpace,
        outputs: Sequence[str] = ("valid", "fc_cost", "ks", "total"),
        split: Sequence[float] = (0.8, 0.1, 0.1),  # row shares of train, val, test (approximate)
        split_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        stream_rows: int = 2_000_000,  # more rows than this: stream from the shards
        pin_memory: bool = False,
        generate: Callable[[], object] | None = None,
    ):
        super().__init__()
        unknown = [t for t in outputs if t not in OUTPUTS]
        if unknown or not outputs:
            raise ValueError(f"outputs={tuple(outputs)}; expected a non-empty subset of {OUTPUTS}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        self.folder = Path(folder)
        self.space = space
        self.output_names = tuple(outputs)
        self.split = tuple(float(s) for s in split)
        _check_split(self.split)
        self.split_seed, self.batch_size, self.num_workers = split_seed, batch_size, num_workers
        self.stream_rows, self.pin_memory, self.generate = stream_rows, pin_memory, generate
        self.streaming: bool | None = None  # decided in setup
        self.split_groups: dict[str, list[str]] = {}
        self.split_rows: dict[str, int] = {}
        self._data: dict[str, RowsDataset | ShardStream] = {}
        self._stats: dict[str, dict[str, float]] | None = None

    @property
    def input_dim(self) -> int:
        return self.space.dim

    # -- Lightning hooks ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Create or finish the dataset with ``generate`` when it is missing or incomplete."""
        if self.generate is not None and not manifest_complete(ShardStore(self.folder).read_manifest()):
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        if self._data:
            return
        store = ShardStore(self.folder)
        manifest = store.read_manifest()
        if manifest is None:
            raise DatasetError(
                f"{store.manifest_path}: no dataset here; generate it (python -m pmfm.generate) "
                "or give the datamodule a `generate` callable"
            )
        dim = manifest.get("config", {}).get("dim")
        if dim is not None and int(dim) != self.space.dim:
            raise DatasetError(
                f"{self.folder}: dataset parameters have dim {dim}, the ParamSpace has {self.space.dim}"
            )
        total, shards = _complete_shards(store, manifest)
        if len(shards) < total:
            warnings.warn(
                f"{self.folder}: incomplete dataset; using its {len(shards)} of {total} shards", stacklevel=2
            )
        rows = sum(int(json.loads(store.sidecar_path(k).read_text())["rows"]) for k in shards)
        self.streaming = rows > self.stream_rows
        if self.streaming:
            self._setup_streaming(store, shards)
        else:
            self._setup_memory()

    def _setup_memory(self) -> None:
        rows = load_dataset(self.folder)
        keys = group_keys(rows["start"], rows["shard"])
        unique, counts = np.unique(keys, return_counts=True)
        split_of = self._assign(dict(zip(unique.tolist(), counts.tolist(), strict=True)))
        row_split = np.array([split_of[k] for k in unique.tolist()], dtype=np.int64)[
            np.searchsorted(unique, keys)
        ]
        batch = encode(rows, self.space, self.output_names)  # index: the position in the dataset
        for s, name in enumerate(SPLITS):
            index = torch.from_numpy(np.flatnonzero(row_split == s))
            self._data[name] = RowsDataset(*(batch[k][index] for k in ("x", "y", "valid", "index")))
            self.split_rows[name] = len(index)

    def _setup_streaming(self, store: ShardStore, shards: list[int]) -> None:
        sizes: dict[int, int] = {}
        shard_keys: dict[int, np.ndarray] = {}
        offsets, offset = {}, 0  # the dataset position of each shard's first row, as load_dataset reads them
        for shard in shards:
            if store.complete_info(shard) is None:
                raise DatasetError(f"{store.shard_path(shard)}: has a sidecar but is missing or corrupt")
            with np.load(store.shard_path(shard)) as z:
                unique, counts = np.unique(group_keys(z["start"], z["shard"]), return_counts=True)
                offsets[shard], offset = offset, offset + len(z["start"])
            shard_keys[shard] = unique
            for k, c in zip(unique.tolist(), counts.tolist(), strict=True):
                sizes[k] = sizes.get(k, 0) + c
        split_of = self._assign(sizes)
        for s, name in enumerate(SPLITS):
            keys = np.array(sorted(k for k, v in split_of.items() if v == s), dtype=np.int64)
            mine = [shard for shard in shards if np.isin(shard_keys[shard], keys).any()]
            self._data[name] = ShardStream(
                self.folder,
                mine,
                keys,
                self.space,
                self.output_names,
                self.batch_size,
                shuffle=name == "train",
                offsets=offsets,
            )
            self.split_rows[name] = sum(sizes[k] for k in keys.tolist())

    def _assign(self, sizes: dict[int, int]) -> dict[int, int]:
        split_of = assign_splits(sizes, self.split, self.split_seed)
        for s, name in enumerate(SPLITS):
            keys = sorted((k for k, v in split_of.items() if v == s), key=_group_order)
            self.split_groups[name] = [group_label(k) for k in keys]
        if len(sizes) < 3:
            warnings.warn(
                f"{self.folder}: only {len(sizes)} group(s) (CMA-ES runs / sampler shards); "
                f"groups per split: { {k: len(v) for k, v in self.split_groups.items()} }",
                stacklevel=3,
            )
        return split_of

    # -- loaders --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self._data and self.split_rows["train"] == 0:
            raise DatasetError(f"{self.folder}: the train split is empty ({self.split_groups})")
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def dataset(self, split: str) -> RowsDataset | ShardStream:
        """The Dataset of one split ("train", "val", "test"); call ``setup`` first."""
        if not self._data:
            raise RuntimeError("call setup() before asking for data")
        return self._data[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.dataset(split)
        if isinstance(data, ShardStream):
            sampler = None  # the streamed dataset batches and shuffles itself
        else:
            rows = RandomSampler(data) if shuffle else SequentialSampler(data)
            sampler = BatchSampler(rows, self.batch_size, drop_last=False)  # whole batches per fetch
        return DataLoader(
            data,
            batch_size=None,  # each fetch is already a batch
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    # -- statistics -----------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-target mean, std (population) and count over the train split, for standardising.

        Cost outputs count valid rows only (invalid ones hold a placeholder); "valid" counts all.
        """
        if self._stats is None:
            data = self.dataset("train")
            moments = _Moments(self.output_names)
            if isinstance(data, ShardStream):
                columns = ("n_valid_fc", "n_valid_fcd", *(t for t in self.output_names if t != "valid"))
                for shard in data.shards:
                    moments.update(*encode_outputs(data.read(shard, columns), self.output_names))
            elif isinstance(data, RowsDataset):
                moments.update(data.y.numpy(), data.valid.numpy())
            self._stats = moments.result()
        return self._stats
