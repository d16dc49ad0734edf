"""Train/val/test loaders over a bank's statistics (pmfm.datasets.bank), split by group, for the emulator.

Groups are those of :mod:`pmfm.datasets.datamodule`: a CMA-ES run (its ``start``, unique in a
loaded bank) or a Sobol shard, dealt to splits by :func:`~pmfm.datasets.datamodule.assign_splits`
with ``split_seed``, never by row. ``test_groups`` (labels such as ``start_00003``) go to the test
split whatever the shares; the other groups are dealt to train and val.

A batch is a dict: ``x`` (B, P) float32 normalised parameters, ``fc_z`` (B, E) float32, ``levels``
(B, L) float32 FCD levels as bin / (n_bins - 1), ``valid_fc`` and ``valid_fcd`` (B,) bool, ``index``
(B,) int64 the row's position in the loaded bank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from pmfm.datasets.bank import Bank
from pmfm.datasets.datamodule import SPLITS, _check_split, assign_splits, group_keys, group_label
from pmfm.datasets.store import DatasetError
from pmfm.params import ParamSpace

KEYS = ("x", "fc_z", "levels", "valid_fc", "valid_fcd", "index")


class _Rows(TensorDataset):
    """Rows as a dict batch (TensorDataset of the columns in KEYS order)."""

    def __getitem__(self, index):
        return dict(zip(KEYS, super().__getitem__(index), strict=True))


class BankDataModule(L.LightningDataModule):
    """Normalised parameters -> a bank's statistics, split by CMA-ES run or Sobol shard.

    ``folder``: a bank folder (``rows``: already loaded rows instead, e.g. in tests); ``generate``:
    a zero-argument callable that makes the bank when ``folder`` has none.
    """

    def __init__(
        self,
        space: ParamSpace,
        folder: str | Path | None = None,
        rows: dict[str, np.ndarray] | None = None,
        n_bins: int = 10_000,
        split: Sequence[float] = (0.8, 0.2, 0.0),
        split_seed: int = 0,
        test_groups: Sequence[str] = (),
        batch_size: int = 64,
        generate: Callable[[], object] | None = None,
    ):
        super().__init__()
        if (folder is None) == (rows is None):
            raise ValueError("give a bank folder or loaded rows, not both")
        self.space, self.folder, self.rows = space, None if folder is None else Path(folder), rows
        self.n_bins, self.split, self.split_seed = int(n_bins), tuple(float(s) for s in split), split_seed
        _check_split(self.split)
        self.test_groups, self.batch_size, self.generate = [str(g) for g in test_groups], batch_size, generate
        self.split_groups: dict[str, list[str]] = {}
        self.split_index: dict[str, np.ndarray] = {}  # rows of each split, positions in the loaded bank
        self._data: dict[str, _Rows] = {}

    def prepare_data(self) -> None:
        if self.folder is not None and self.generate is not None and Bank(self.folder).read() is None:
            self.generate()

    def load(self) -> dict[str, np.ndarray]:
        """The bank's rows (loaded once)."""
        if self.rows is None:
            assert self.folder is not None
            self.rows = Bank(self.folder).load()
        return self.rows

    def setup(self, stage: str | None = None) -> None:
        if self._data:
            return
        rows = self.load()
        keys = group_keys(rows["start"], rows["shard"])
        labels = {int(k): group_label(int(k)) for k in np.unique(keys)}
        unknown = sorted(set(self.test_groups) - set(labels.values()))
        if unknown:
            known = sorted(labels.values())
            raise DatasetError(f"test_groups {unknown} are not among the bank's groups {known}")
        held = {k for k, name in labels.items() if name in self.test_groups}
        rest = {k: int((keys == k).sum()) for k in labels if k not in held}
        shares = self.split if not held else (self.split[0], self.split[1], 0.0)
        split_of = assign_splits(rest, shares, self.split_seed) | dict.fromkeys(held, 2)
        row_split = np.array([split_of[int(k)] for k in keys], dtype=np.int64)
        batch = self.encode(rows)
        for s, name in enumerate(SPLITS):
            index = np.flatnonzero(row_split == s)
            self.split_index[name] = index
            self.split_groups[name] = sorted(labels[k] for k, v in split_of.items() if v == s)
            self._data[name] = _Rows(*(batch[k][index] for k in KEYS))

    def encode(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Rows -> the batch columns (module docstring), every row of ``rows``."""
        if "fc_z" not in rows or "fcd_levels" not in rows:
            raise DatasetError("bank rows without fc_z and fcd_levels: made before statistics were kept")
        theta = torch.from_numpy(np.asarray(rows["theta"], dtype=np.float64))
        return {
            "x": self.space.normalise(theta).float(),
            "fc_z": torch.from_numpy(rows["fc_z"].astype(np.float32)),
            "levels": torch.from_numpy(rows["fcd_levels"].astype(np.float32) / (self.n_bins - 1)),
            "valid_fc": torch.from_numpy(rows["n_valid_fc"] > 0),
            "valid_fcd": torch.from_numpy(rows["n_valid_fcd"] > 0),
            "index": torch.arange(len(theta)),
        }

    def dataset(self, name: str) -> _Rows:
        self.setup()
        return self._data[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(name), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self):
        if not len(self.dataset("train")):
            raise DatasetError("the train split of the bank is empty")
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)
