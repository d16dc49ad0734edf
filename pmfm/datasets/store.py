"""On-disk layout of a simulator-made dataset: columnar NumPy shards and a manifest.

    <root>/<name>/
        manifest.json            resolved config, its hash, package versions, counts, shard checksums
        shard_00003.npz          a complete shard: one array per column, rows in generation order
        shard_00003.json         its sidecar: rows, sha256, device; written after the shard
        shard_00003.partial/     work in progress: chunk_000012.npz files (rows + resume state)

Why NumPy ``.npz`` shards: columnar and typed (float64 costs, int32 ids), readable anywhere numpy
is (a GPU machine with only torch and numpy included) with no extra dependency, loaded one shard at a time for
streaming, and each file is written once, atomically (temporary file, then ``os.replace``). A
million rows is a few hundred shards of a few thousand rows; Parquet would add pyarrow for no gain
at this size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np

from pmfm.cost import Costs

BUNDLED_DATASETS = Path(__file__).parent / "bundled"  # datasets shipped with the package
# column -> (dtype, trailing shape); theta's width is the parameter space's dimension
COLUMNS: dict[str, str] = {
    "theta": "float64",  # (n, P) raw coefficients, docs/parameters.md order
    "sample_id": "int64",  # unique in the dataset; keys the noise of independent-noise strategies
    "shard": "int32",
    "start": "int32",  # CMA-ES run (start) index; -1 for samplers
    "generation": "int32",  # CMA-ES generation; -1 for samplers
    "repeats": "int16",  # R, the repeats averaged per cost
    "n_valid_fc": "int16",  # repeats valid for the FC terms
    "n_valid_fcd": "int16",  # repeats valid for the KS term
    "fc_cost": "float64",
    "fc_l1": "float64",
    "ks": "float64",
    "total": "float64",
}
# columns of FIC datasets only (docs/fic.md), absent from pMFM ones
RATE_COLUMNS: dict[str, str] = {
    "mean_rate": "float64",  # (n, N) mean excitatory rate per region over the main loop and repeats, Hz
    "n_valid_rate": "int16",  # repeats whose every regional mean rate was inside the validity band
}


# each sample's simulated statistics, to cost it against any target (pmfm.cost.stats; schema 2 on)
STATS_COLUMNS: dict[str, str] = {
    "fc_z": "float16",  # (n, E) Fisher z of the mean FC over the FC-valid repeats
    "fcd_levels": "uint16",  # (n, L) bins at which the mean FCD CDF reaches L evenly spaced levels
}
OPTIONAL_COLUMNS = RATE_COLUMNS | STATS_COLUMNS
SCHEMA = 2  # manifest["schema"]: 1 (costs only, the default of manifests without it), 2 (+ statistics)


def columns_of(rows) -> list[str]:
    """The columns ``rows`` (a dict or an open npz) holds: COLUMNS, plus the optional ones present."""
    keys = set(rows.files if hasattr(rows, "files") else rows)
    return [*COLUMNS, *(k for k in OPTIONAL_COLUMNS if k in keys)]


def column_type(key: str) -> str:
    return COLUMNS.get(key) or OPTIONAL_COLUMNS[key]


class DatasetError(RuntimeError):
    """A dataset folder that cannot be used as asked (other config, unreadable manifest, ...)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def empty_rows(dim: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((0, dim) if k == "theta" else (0,), dtype=t) for k, t in COLUMNS.items()}


def concat_rows(parts: list[dict[str, np.ndarray]], dim: int) -> dict[str, np.ndarray]:
    """Rows of ``parts`` in order; the FIC columns are kept when every non-empty part has them."""
    filled = [p for p in parts if len(p["sample_id"])] or parts
    if not filled:
        return empty_rows(dim)
    keys = [k for k in columns_of(filled[0]) if all(k in p for p in filled)]
    return {k: np.concatenate([p[k] for p in filled]).astype(column_type(k)) for k in keys}


def _npz_bytes(rows: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **rows)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows_checksum(rows: dict[str, np.ndarray]) -> str:
    """Order-independent checksum of rows: the sorted per-row hashes, hashed."""
    n = len(rows["sample_id"])
    per_row = []
    for i in range(n):
        h = hashlib.sha256()
        for k in columns_of(rows):
            h.update(np.ascontiguousarray(rows[k][i]).tobytes())
        per_row.append(h.hexdigest())
    return hashlib.sha256("".join(sorted(per_row)).encode()).hexdigest()


def rows_from(theta, costs: Costs, stats: dict | None = None, **ids) -> dict[str, np.ndarray]:
    """Dataset rows of evaluated parameter sets (a (n, P) tensor); ``stats`` holds their ``fc_z``
    and ``fcd_levels`` (tensors or arrays); ``ids`` give sample_id, shard, start, generation."""
    n = len(theta)
    rows = {
        "theta": theta.numpy(),
        "repeats": np.full(n, costs.repeats),
        "n_valid_fc": costs.n_valid_fc.numpy(),
        "n_valid_fcd": costs.n_valid_fcd.numpy(),
        "fc_cost": costs.fc_cost.numpy(),
        "fc_l1": costs.fc_l1.numpy(),
        "ks": costs.ks.numpy(),
        "total": costs.total.numpy(),
    }
    for key, value in ids.items():
        rows[key] = np.broadcast_to(np.asarray(value), (n,)).copy()
    out = {k: rows[k].astype(t) for k, t in COLUMNS.items()}
    if costs.mean_rate is not None and costs.n_valid_rate is not None:  # FIC: rates and their validity
        out["mean_rate"] = costs.mean_rate.numpy().astype(RATE_COLUMNS["mean_rate"])
        out["n_valid_rate"] = costs.n_valid_rate.numpy().astype(RATE_COLUMNS["n_valid_rate"])
    if stats is not None:
        for key, dtype in STATS_COLUMNS.items():
            out[key] = np.asarray(stats[key]).astype(dtype)
    return out


class ShardStore:
    """One dataset folder: complete shards, partial chunks, the manifest."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    # -- paths --------------------------------------------------------------------------------
    def shard_path(self, shard: int) -> Path:
        return self.folder / f"shard_{shard:05d}.npz"

    def sidecar_path(self, shard: int) -> Path:
        return self.folder / f"shard_{shard:05d}.json"

    def partial_dir(self, shard: int) -> Path:
        return self.folder / f"shard_{shard:05d}.partial"

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    # -- manifest -----------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{self.manifest_path}: unreadable manifest ({err})") from None

    def claim(self, config: dict, config_hash: str, versions: dict) -> None:
        """Create the folder for this config, or check that it already belongs to it."""
        manifest = self.read_manifest()
        if manifest is not None and manifest.get("config_hash") != config_hash:
            diff = _diff(manifest.get("config", {}), config)
            raise DatasetError(
                f"{self.manifest_path}: dataset was made with a different config "
                f"(differs in {', '.join(diff) or 'unknown keys'}); refusing to mix them. "
                f"Use another dataset.name or delete {self.folder}."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            atomic_write_json(
                self.manifest_path,
                {
                    "config": config,
                    "config_hash": config_hash,
                    "versions": versions,
                    "shards": {},
                    "schema": SCHEMA,
                },
            )

    @property
    def schema(self) -> int:
        """1: rows hold costs against the dataset's own target; 2: also each sample's statistics."""
        manifest = self.read_manifest() or {}
        return int(manifest.get("schema", 1))

    def update_manifest(self, num_shards: int) -> dict:
        """Rebuild the shard list and counts from the sidecars (safe with concurrent writers)."""
        manifest = self.read_manifest() or {}
        shards, rows = {}, 0
        for shard in range(num_shards):
            info = self.complete_info(shard)
            if info is not None:
                shards[self.shard_path(shard).name] = info
                rows += info["rows"]
        manifest["shards"] = shards
        manifest["counts"] = {"shards_complete": len(shards), "shards_total": num_shards, "rows": rows}
        manifest["complete"] = len(shards) == num_shards
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    # -- complete shards ----------------------------------------------------------------------
    def complete_info(self, shard: int) -> dict | None:
        """The sidecar of a complete shard whose file matches its checksum, else None."""
        path, side = self.shard_path(shard), self.sidecar_path(shard)
        if not side.is_file():
            return None
        try:
            info = json.loads(side.read_text())
            ok = path.is_file() and sha256(path.read_bytes()) == info["sha256"]
        except (OSError, json.JSONDecodeError, KeyError):
            ok = False
        if not ok:
            warnings.warn(
                f"{path}: corrupt or truncated shard (checksum mismatch); it will be regenerated",
                stacklevel=2,
            )
            for p in (path, side):
                p.unlink(missing_ok=True)
            return None
        return info

    def write_shard(self, shard: int, rows: dict[str, np.ndarray], meta: dict) -> dict:
        """Write a complete shard atomically, then its sidecar; remove its partial chunks."""
        data = _npz_bytes(rows)
        atomic_write_bytes(self.shard_path(shard), data)
        info = {
            "rows": len(rows["sample_id"]),
            "sha256": sha256(data),
            "rows_checksum": rows_checksum(rows),
            **meta,
        }
        atomic_write_json(self.sidecar_path(shard), info)
        shutil.rmtree(self.partial_dir(shard), ignore_errors=True)
        return info

    def read_shard(self, shard: int) -> dict[str, np.ndarray]:
        with np.load(self.shard_path(shard)) as z:
            return {k: z[k] for k in columns_of(z)}

    # -- partial chunks -----------------------------------------------------------------------
    def write_chunk(self, shard: int, index: int, rows: dict[str, np.ndarray], state=None) -> None:
        """Chunk ``index`` of a shard in progress, then (if given) the state to resume after it.

        The state is one file, replaced after each chunk (a CMA-ES state is megabytes: one per
        chunk would not do). A kill between the two writes leaves a chunk newer than the state;
        ``read_chunks`` drops it and the chunk is simply redone, identically.
        """
        folder = self.partial_dir(shard)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"chunk_{index:06d}.npz", _npz_bytes(rows))
        if state is not None:
            atomic_write_bytes(folder / "state.pkl", pickle.dumps({"chunks": index + 1, "state": state}))

    def read_chunks(self, shard: int) -> tuple[list[dict[str, np.ndarray]], object]:
        """Rows of the consecutive readable chunks 0, 1, ... and the state saved after the last."""
        folder = self.partial_dir(shard)
        parts: list[dict[str, np.ndarray]] = []
        while (path := folder / f"chunk_{len(parts):06d}.npz").is_file():
            try:
                with np.load(path) as z:
                    parts.append({k: z[k] for k in columns_of(z)})
            except Exception:  # a torn chunk cannot happen (atomic writes), a damaged disk can
                warnings.warn(
                    f"{path}: unreadable chunk; it and the chunks after it are redone", stacklevel=2
                )
                break
        state = None
        if (folder / "state.pkl").is_file():
            saved = pickle.loads((folder / "state.pkl").read_bytes())
            parts, state = parts[: saved["chunks"]], saved["state"]
            if len(parts) < saved["chunks"]:  # a chunk the state depends on is gone: start over
                parts, state = [], None
        for stale in folder.glob("chunk_*.npz") if folder.is_dir() else []:
            if int(stale.stem.split("_")[1]) >= len(parts):
                stale.unlink()
        return parts, state


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def load_dataset(folder: str | Path) -> dict[str, np.ndarray]:
    """All complete shards of a dataset, concatenated in shard order (checksums verified).

    Shards are found from their sidecars, so a manifest written by a concurrent worker that had
    not yet seen another's shard cannot hide it.
    """
    store = ShardStore(folder)
    manifest = store.read_manifest()
    if manifest is None:
        raise DatasetError(f"{store.manifest_path}: no dataset here (missing manifest.json)")
    config = manifest["config"]
    parts = []
    for shard in range(int(config["dataset"]["num_shards"])):
        if store.complete_info(shard) is not None:
            parts.append(store.read_shard(shard))
    return concat_rows(parts, int(config["dim"]))
