"""Seeded outputs of the command-line tools, recorded on the CPU, to show that a refactor keeps behaviour.

    python tests/behaviour/record.py --out outputs/behaviour          # run everything, write records
    python tests/behaviour/record.py --out outputs/behaviour --check  # compare: tests/behaviour/recorded

For float32 and float64 (fixed-order coupling, one thread): ``pmfm.simulate``'s costs.csv; the
results.csv of ``pmfm.fit`` with the simulator strategy and with a surrogate searched by CMA-ES, by
Adam and as CMA-ES pre-screening; the rows checksums of ``pmfm.generate`` (a Sobol and a CMA-ES
dataset). Everything runs on a short protocol (200 TRs) against the bundled HCP group with its FCD
CDF rescaled to that length. About 15 minutes on 2 cores. The command lines are the current
spelling of the same runs: a refactor that renames a setting updates them here, never the records.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.io import loadmat, savemat

RECORDED = Path(__file__).parent / "recorded"
N_TR, BURN_IN, WINDOW = 200, 20, 83
SHORT = ["protocol=short"]  # 200 TRs after 20 burn-in samples, 1,000 warm-up steps
COMMON = ["device=cpu", "simulator.coupling=fixed_order"]
FIT = [
    "seed=1",
    "plot=false",
    "validation.repeats=4",
    "validation.top_k=3",
    "test.repeats=4",
    "test.group_size=2",
]
SIMULATOR = ["strategy=simulator", "strategy.n_starts=2", "strategy.repeats=2", "strategy.cmaes.popsize=6",
             "strategy.cmaes.mu=2", "strategy.cmaes.max_generations=3"]  # fmt: skip
SHIPPED = resources.files("pmfm") / "datasets" / "bundled" / "hcp_cmaes_pmfm_1200tr_r3"  # full protocol
SURROGATE = [
    "model=mlp",
    f"dataset.folder={SHIPPED}",
    "trainer.max_epochs=3",
    "logger=csv",
    "strategy.repeats=2",
]
SEARCHES = {
    "cmaes": ["strategy=surrogate", "search=cmaes", "search.n_starts=2", "search.popsize=12", "search.mu=3",
              "search.max_generations=4", "strategy.top_k=3"],
    "adam": ["strategy=surrogate", "search=adam", "search.n_starts=3", "search.steps=5", "strategy.top_k=3"],
    "prescreen": ["strategy=prescreen", "strategy.n_starts=2", "strategy.simulate_top=6",
                  "strategy.cmaes.popsize=12", "strategy.cmaes.mu=2", "strategy.cmaes.max_generations=3"],
}  # fmt: skip
GENERATE = {
    "sobol": ["dataset=sobol", "dataset.num_shards=2", "dataset.shard_size=6", "dataset.chunk_size=4"],
    "cmaes": ["dataset=cmaes", "dataset.cmaes.n_starts=2", "dataset.cmaes.popsize=6", "dataset.cmaes.mu=2",
              "dataset.cmaes.max_generations=2"],
}  # fmt: skip


def short_data(folder: Path) -> Path:
    """The bundled HCP group (train, vali; vali again as test) with FCD CDFs rescaled to 200 TRs."""
    source = Path(str(resources.files("pmfm") / "data" / "bundled" / "hcp_desikan68"))
    folder.mkdir(parents=True, exist_ok=True)
    n_windows = N_TR - WINDOW + 1
    pairs = n_windows * (n_windows - 1) // 2
    for split, name in (("train", "train"), ("vali", "vali"), ("vali", "test")):
        shutil.copy(source / f"sc_{split}.csv", folder / f"sc_{name}.csv")
        shutil.copy(source / f"fc_{split}.csv", folder / f"fc_{name}.csv")
        cdf = loadmat(source / f"fcd_{split}.mat")[f"{split}_aveM"].astype(np.float64).ravel()
        rescaled = np.rint(cdf / cdf[-1] * pairs).astype(np.int64)
        savemat(folder / f"fcd_{name}.mat", {f"{name}_aveM": rescaled[:, None]})
    for name in ("myelin.csv", "rsfc_gradient.csv", "Desikan_68_region_description.mat"):
        shutil.copy(source / name, folder / name)
    return folder


def run(module: str, run_dir: Path, overrides: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", module, f"hydra.run.dir={run_dir}", *overrides]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def record(out: Path) -> None:
    work = out / "work"
    data = short_data(work / "data")
    folder = ["data=folder", f"data.path={data}", "data.split=train"]
    for dtype in ("float32", "float64"):
        base = [*SHORT, *COMMON, *folder, f"simulator.dtype={dtype}"]
        dest = out / dtype
        dest.mkdir(parents=True, exist_ok=True)
        run(
            "pmfm.simulate",
            work / dtype / "simulate",
            [*base, "plot=false", "repeats=3", "example=2", "save_bold=false"],
        )
        shutil.copy(work / dtype / "simulate" / "costs.csv", dest / "simulate_costs.csv")
        fits = {"simulator": SIMULATOR} | {f"surrogate_{k}": [*SURROGATE, *v] for k, v in SEARCHES.items()}
        for name, extra in fits.items():
            run_dir = work / dtype / f"fit_{name}"
            run("pmfm.fit", run_dir, [*base, *FIT, f"test.path={data}", *extra])
            shutil.copy(run_dir / "results.csv", dest / f"fit_{name}_results.csv")
        checksums = {}
        for name, extra in GENERATE.items():
            root = work / dtype / f"datasets_{name}"
            run("pmfm.generate", work / dtype / f"generate_{name}", [*base, f"paths.datasets={root}", *extra])
            for sidecar in sorted(root.glob("*/shard_*.json")):
                info = json.loads(sidecar.read_text())
                checksums[f"{name}/{sidecar.name}"] = {
                    "rows": info["rows"],
                    "rows_checksum": info["rows_checksum"],
                }
        (dest / "generate_checksums.json").write_text(json.dumps(checksums, indent=1, sort_keys=True) + "\n")


def check(out: Path) -> int:
    """Compare every recorded file byte for byte; print the differing ones."""
    differ = 0
    for path in sorted(RECORDED.rglob("*")):
        if path.is_dir():
            continue
        mine = out / path.relative_to(RECORDED)
        same = mine.is_file() and filecmp.cmp(path, mine, shallow=False)
        print(f"{'same' if same else 'DIFFERS'}  {path.relative_to(RECORDED)}")
        differ += not same
    return differ


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and their records")
    p.add_argument("--check", action="store_true", help="compare with tests/behaviour/recorded")
    p.add_argument("--skip-runs", action="store_true", help="only compare (records already in --out)")
    a = p.parse_args()
    if not a.skip_runs:
        record(a.out)
    if a.check:
        sys.exit(1 if check(a.out) else 0)


if __name__ == "__main__":
    main()
