"""Simulator-made datasets: samplers of the feasible set, the sharded resumable store and the
Lightning DataModule that serves it for training."""

from pmfm.datasets.datamodule import PMFMDataModule
from pmfm.datasets.store import (
    BUNDLED_DATASETS,
    COLUMNS,
    RATE_COLUMNS,
    DatasetError,
    ShardStore,
    load_dataset,
    rows_from,
)

__all__ = [
    "BUNDLED_DATASETS",
    "COLUMNS",
    "RATE_COLUMNS",
    "DatasetError",
    "PMFMDataModule",
    "ShardStore",
    "load_dataset",
    "rows_from",
]
