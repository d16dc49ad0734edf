"""Simulator-made datasets: the shard store (numpy only) and, loaded lazily, the Lightning datamodule.

``import pmfm.datasets`` stays light (no Lightning, no simulator): ``PMFMDataModule`` is imported
from `pmfm.datasets.datamodule` on first access.
"""

from pmfm.datasets.store import COLUMNS, RATE_COLUMNS, DatasetError, ShardStore, load_dataset

__all__ = ["COLUMNS", "RATE_COLUMNS", "DatasetError", "PMFMDataModule", "ShardStore", "load_dataset"]


def __getattr__(name: str):
    if name == "PMFMDataModule":
        from pmfm.datasets.datamodule import PMFMDataModule

        return PMFMDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
