"""A bank of simulated statistics: the samples of many runs, kept to be costed against any target.

    <bank>/
        bank.json                          what every row shares: circuit, SC, covariates, protocol, FCD bins
        sobol_1f2e3d4c/                    a part: an ordinary sharded dataset (pmfm.datasets.store)
        cmaes_synthetic_003_9a8b7c6d/      ... made by one plan (strategy, seed, sizes, the data it ran on)

A part's folder is named by the hash of what made it, so a later run with another plan appends new
parts, two runs appending at once never write the same part, and a killed run resumes its own. Rows
of different parts are comparable because the parts share ``bank.json``'s fingerprint; a target is
served only when it shares it too (``Bank.check``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pmfm.cost import CostVariant
from pmfm.cost.stats import SetStats
from pmfm.datasets.store import DatasetError, atomic_write_json, load_dataset
from pmfm.sim.simulator import Simulator

BANK_FILE = "bank.json"
OFFSET_COLUMNS = ("sample_id", "start", "shard")  # renumbered per part on loading, so they stay unique


def array_digest(array) -> str:
    """A short hash of an array's float64 values (what a bank's fingerprint compares)."""
    data = np.ascontiguousarray(np.asarray(array, dtype=np.float64)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(data, simulator: Simulator, variant: CostVariant) -> dict:
    """What rows and targets must share to be costed against each other."""
    return {
        "circuit": simulator.circuit,
        "n_regions": int(data.n_regions),
        "sc": array_digest(data.sc),
        "covariates": array_digest(data.basis()),
        "protocol": dataclasses.asdict(simulator.protocol),
        "fcd": variant.fcd_settings,
    }


class Bank:
    """One bank folder: its fingerprint and its parts."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        """The bank's fingerprint file."""
        return self.folder / BANK_FILE

    def read(self) -> dict | None:
        """The bank file's contents, or None where there is no bank yet."""
        if not self.path.is_file():
            return None
        try:
            made = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            made = err
        if not isinstance(made, dict) or "fingerprint" not in made:
            raise DatasetError(f"{self.path}: unreadable bank file ({made!r:.80}); expected a fingerprint")
        return made

    def claim(self, print_: dict) -> None:
        """Create the bank for this fingerprint, or check that it is the bank's."""
        made = self.read()
        if made is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"fingerprint": print_})
            return
        self.check(print_, "this run's simulator and data")

    def check(self, print_: dict, what: str) -> None:
        """Raise DatasetError naming both sides when ``print_`` (of ``what``) differs from the bank's."""
        made = self.read()
        if made is None:
            raise DatasetError(f"{self.path}: no bank here (missing {BANK_FILE})")
        mine = made["fingerprint"]
        differ = sorted(k for k in mine.keys() | print_.keys() if mine.get(k) != print_.get(k))
        if differ:
            sides = "; ".join(f"the bank's {k} {mine.get(k)!r}, its {print_.get(k)!r}" for k in differ)
            raise DatasetError(
                f"{self.path}: {what} does not share the bank's {', '.join(differ)} ({sides}); a bank "
                "serves only what shares its circuit, SC, covariates, protocol and FCD bins"
            )

    def parts(self) -> list[Path]:
        """Every part folder, sorted by name."""
        return sorted(p.parent for p in self.folder.glob("*/manifest.json"))

    def load(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every complete shard of every part (or of the parts ``names``, folder names), with a
        ``part`` column (its index among them) and sample ids, starts and shards renumbered so that
        they are unique in the bank."""
        out: list[dict[str, np.ndarray]] = []
        offsets = dict.fromkeys(OFFSET_COLUMNS, 0)
        parts = self.parts()
        if names is not None:
            missing = sorted(set(names) - {p.name for p in parts})
            if missing:
                raise DatasetError(f"{self.folder}: no part {', '.join(missing)} (a part was removed)")
            parts = [p for p in parts if p.name in set(names)]
        for index, part in enumerate(parts):
            rows = load_dataset(part)
            if not len(rows["sample_id"]):
                continue
            for key in OFFSET_COLUMNS:
                valid = rows[key] >= 0  # -1: no CMA-ES start
                shifted = rows[key].astype(np.int64) + offsets[key]
                rows[key] = np.where(valid, shifted, rows[key]).astype(rows[key].dtype)
                offsets[key] = int(shifted[valid].max(initial=offsets[key] - 1)) + 1
            rows["part"] = np.full(len(rows["sample_id"]), index, dtype=np.int32)
            out.append(rows)
        if not out:
            raise DatasetError(f"{self.folder}: the bank holds no complete shard yet")
        keys = [k for k in out[0] if all(k in rows for rows in out)]
        return {k: np.concatenate([rows[k] for rows in out]) for k in keys}


def bank_stats(rows: dict[str, np.ndarray], fcd_total: int, device=None) -> SetStats:
    """The statistics columns of loaded bank rows as :class:`~pmfm.cost.stats.SetStats`, on ``device``
    (a GPU costs a large bank against many targets far faster)."""
    missing = [k for k in ("fc_z", "fcd_levels") if k not in rows]
    if missing:
        raise DatasetError(f"bank rows without {', '.join(missing)}: made before statistics were kept")
    return SetStats(
        fc_z=torch.from_numpy(rows["fc_z"]).to(device),
        fcd_levels=torch.from_numpy(rows["fcd_levels"].astype(np.int32)).to(device),
        n_valid_fc=torch.from_numpy(rows["n_valid_fc"].astype(np.int64)).to(device),
        n_valid_fcd=torch.from_numpy(rows["n_valid_fcd"].astype(np.int64)).to(device),
        fcd_total=int(fcd_total),
        repeats=int(rows["repeats"].max(initial=1)),
    )
