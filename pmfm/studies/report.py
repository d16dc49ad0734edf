"""What every study writes: its table (results.csv), its summary (summary.json, summary.md) and
the provenance of the numbers (command, device, date, versions)."""

from __future__ import annotations

import csv
import datetime
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig

import pmfm
from pmfm.pipelines.benchmark import device_name


def provenance(device: str | torch.device) -> dict:
    """Command line, device (GPU name or CPU model and cores), UTC date, torch and pmfm versions."""
    return {
        "command": command(),
        "device": device_name(torch.device(device)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "pmfm": pmfm.__version__,
    }


def command() -> str:
    """The command line of this Hydra run (its overrides), or a note when called from Python."""
    try:
        task = list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run: a test or a script called the study function
        return f"pmfm.studies.run_study from Python ({Path(sys.argv[0]).name})"
    return " ".join(["python -m pmfm.experiment", *task])


def write_table(rows: list[dict], path: Path) -> Path:
    """Rows (dicts with the same keys) as a CSV; floats with 6 significant digits."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return path


def read_table(path: Path) -> list[dict]:
    """A study's table (results.csv) back as dicts of strings."""
    with path.open() as f:
        return list(csv.DictReader(f))


def write_summary(out_dir: Path, title: str, summary: dict, conclusion: list[str], table: str = "") -> dict:
    """summary.json (``summary`` + provenance) and summary.md (title, conclusion, table, provenance)."""
    summary = {**summary, "conclusion": conclusion}
    (out_dir / "summary.json").write_text(json.dumps(_plain(summary), indent=1) + "\n")
    prov = summary.get("provenance", {})
    lines = [f"# {title}", "", *[f"- {c}" for c in conclusion], ""]
    if table:
        lines += [table, ""]
    if prov:
        lines.append(
            f"Command `{prov['command']}` on {prov['device']}, {prov['date']}, "
            f"torch {prov['torch']}, pmfm {prov['pmfm']}."
        )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def write_json(result: dict, path: Path, also: str | Path | None = None, indent: int = 2) -> Path:
    """``result`` as indented JSON at ``path`` and, when ``also`` names a file, there too (e.g. where
    experiments/results keeps the committed runs)."""
    text = json.dumps(_plain(result), indent=indent) + "\n"
    path.write_text(text)
    if also:
        Path(also).parent.mkdir(parents=True, exist_ok=True)
        Path(also).write_text(text)
    return path


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of the rows (floats with 4 significant digits)."""
    columns = columns or list(rows[0])
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_short(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, *body])


def _cell(value):
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return value


def _short(value) -> str:
    if isinstance(value, float | np.floating):
        v = float(value)
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(value)


def _plain(obj):
    """JSON-safe: numpy scalars and arrays to Python, NaN kept as NaN (json writes NaN)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray | torch.Tensor):
        return _plain(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
