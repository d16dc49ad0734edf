"""A fit's on-disk state: one file per completed stage, written atomically, so a killed fit resumes.

``<run folder>/state/`` holds ``identity.json`` (the settings that determine the result: a run
folder refuses to resume under other ones), one ``<stage>.pt`` per completed stage, the searcher's
progress after every generation (``search_progress.pt``) and ``summary.json`` (wall time,
simulations and surrogate evaluations per stage). Every file is written to a temporary name and
renamed over the old one (``os.replace`` is atomic on POSIX), so a ``kill -9`` leaves either the
old or the new version, never half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

NOT_IDENTITY = ("test", "compare_to", "plot", "progress", "hydra")  # config keys a resumed fit may change


class StateError(RuntimeError):
    """The run folder was started with other settings (or its state is unreadable)."""


class RunState:
    """Stage files of one fit in ``folder/state``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder) / "state"
        self.folder.mkdir(parents=True, exist_ok=True)

    def claim(self, identity: dict, ignore=()) -> bool:
        """Record ``identity`` for a new run, or check it against the run being resumed.

        ``ignore``: key paths (tuples) left out of the comparison, settings that may change on resume.
        Returns True when resuming (an identity was already there). Raises StateError on mismatch.
        """
        path = self.folder / "identity.json"
        text = json.dumps(identity, sort_keys=True, indent=1, default=str)
        if path.is_file():
            old = _without(json.loads(path.read_text()), ignore)
            new = _without(json.loads(text), ignore)
            if old != new:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise StateError(
                    f"{path}: this run folder was started with other settings ({', '.join(diff)} differ); "
                    "resume with the same settings or start a new run folder"
                )
            return True
        _atomic_write_text(path, text)
        return False

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.pt").is_file()

    def load(self, name: str):
        """The object saved under ``name`` (torch.load, full unpickling: only load your own runs)."""
        return torch.load(self.folder / f"{name}.pt", weights_only=False)

    def save(self, name: str, obj) -> None:
        path = self.folder / f"{name}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """``{stage: {"wall_s", "simulations", "surrogate_evaluations", "note"}}`` so far."""
        path = self.folder / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def record(
        self, stage: str, *, wall_s: float, simulations: int = 0, evaluations: int = 0, note: str = ""
    ) -> None:
        """Add a stage's wall time and counts to the summary (accumulates over resumed pieces)."""
        summary = self.summary()
        entry = summary.setdefault(
            stage, {"wall_s": 0.0, "simulations": 0, "surrogate_evaluations": 0, "note": ""}
        )
        entry["wall_s"] += float(wall_s)
        entry["simulations"] += int(simulations)
        entry["surrogate_evaluations"] += int(evaluations)
        if note:
            entry["note"] = note
        _atomic_write_text(self.folder / "summary.json", json.dumps(summary, indent=1))


def _without(tree: dict, paths) -> dict:
    """``tree`` with the key paths removed (missing ones ignored)."""
    for path in paths:
        node = tree
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return tree


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
