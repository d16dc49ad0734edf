"""How well can any surrogate rank held-out samples? The noise ceiling, and a checkpoint against it.

A simulated cost at R = 3 is itself noisy: re-simulating the same parameters with fresh noise does
not reproduce its ranking exactly. The Spearman correlation between the stored totals and a fresh
R = 3 re-simulation of the same samples is the ceiling a surrogate (which sees only the parameters)
cannot beat. This script re-simulates the test split of a dataset (split by CMA-ES run, as
PMFMDataModule does) and reports, overall and within the best 10% by stored total: the ceiling,
and the checkpoint's Spearman against the stored totals.

    python experiments/surrogate_ceiling.py --ckpt outputs/train/<run>/checkpoints/last.ckpt
    # or on two cores: --part 0 --parts 2 & --part 1 --parts 2, then --ckpt ... --combine
    # or once on a GPU for every row of a dataset, then anywhere with --fresh:
    python experiments/surrogate_ceiling.py --dataset <folder> --resimulate-all fresh.npz --device cuda
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pmfm.data import load_bundled
from pmfm.datasets import PMFMDataModule, load_dataset
from pmfm.datasets.generation import BUNDLED_DATASETS
from pmfm.evaluate import evaluate_params
from pmfm.models import SurrogateModule
from pmfm.models.metrics import spearman
from pmfm.params import ParamSpace
from pmfm.sim.simulator import Simulator


def top10(total: np.ndarray) -> np.ndarray:
    return total <= np.quantile(total, 0.10)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=str(BUNDLED_DATASETS / "hcp_cmaes_r3"))
    p.add_argument("--ckpt", default=None, help="a SurrogateModule checkpoint to score against the ceiling")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--split", default="0.7,0.15,0.15")
    p.add_argument("--seed", type=int, default=777, help="noise seed of the re-simulation (fresh noise)")
    p.add_argument("--out", default="experiments/results/surrogate_ceiling.json")
    p.add_argument("--part", type=int, default=None, help="re-simulate only this part of the test rows")
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--combine", action="store_true", help="use the parts re-simulated earlier")
    p.add_argument("--resimulate-all", default=None, help="re-simulate every row into this .npz and stop")
    p.add_argument("--fresh", default=None, help="a --resimulate-all .npz: its totals, not a new run")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (the simulator's fastest path)")
    a = p.parse_args(argv)

    data = load_bundled("train")
    space = ParamSpace(data.basis())
    if a.resimulate_all:
        return resimulate_all(a.dataset, a.resimulate_all, space, data, a.device, a.seed)
    dm = PMFMDataModule(
        a.dataset, space, split=tuple(float(x) for x in a.split.split(",")), split_seed=a.split_seed
    )
    dm.setup("test")
    rows = load_dataset(a.dataset)
    groups = set(dm.split_groups["test"])
    labels = np.array(
        [
            f"start_{s:05d}" if s >= 0 else f"shard_{h:05d}"
            for s, h in zip(rows["start"], rows["shard"], strict=True)
        ]
    )
    test = np.isin(labels, list(groups)) & (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0)
    theta = torch.as_tensor(rows["theta"][test])
    stored = rows["total"][test]
    print(f"test split: {len(groups)} group(s), {int(test.sum())} valid samples")
    parts = np.array_split(np.arange(len(theta)), a.parts)
    part_file = Path(a.out).with_suffix("")
    if a.part is not None:  # re-simulate one part and stop
        rows_part = parts[a.part]
        resim = evaluate_params(theta[rows_part], space, data, Simulator(), repeats=3, seed=a.seed + a.part)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        np.save(f"{part_file}_part{a.part}.npy", resim.costs.total.numpy())
        return {}
    if a.fresh:
        fresh = np.load(a.fresh)["total"]  # (N,) every row of the dataset
        if len(fresh) != len(rows["total"]):
            raise SystemExit(f"{a.fresh}: {len(fresh)} rows, the dataset has {len(rows['total'])}")
        again = fresh[test]
    elif a.combine:
        again = np.concatenate([np.load(f"{part_file}_part{i}.npy") for i in range(a.parts)])
    else:
        again = evaluate_params(theta, space, data, Simulator(), repeats=3, seed=a.seed).costs.total.numpy()
    best = top10(stored)
    result = {
        "n_test": int(test.sum()),
        "ceiling_spearman": float(spearman(torch.tensor(stored), torch.tensor(again))),
        "ceiling_spearman_top10": float(spearman(torch.tensor(stored[best]), torch.tensor(again[best]))),
    }
    if a.ckpt:
        model = SurrogateModule.load_from_checkpoint(a.ckpt, map_location="cpu")
        pred = model.predict(theta)["total"].numpy()
        result["surrogate_spearman"] = float(spearman(torch.tensor(stored), torch.tensor(pred)))
        result["surrogate_spearman_top10"] = float(
            spearman(torch.tensor(stored[best]), torch.tensor(pred[best]))
        )
        result["share_of_ceiling_top10"] = (
            result["surrogate_spearman_top10"] / result["ceiling_spearman_top10"]
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def resimulate_all(dataset: str, out: str, space, data, device: str, seed: int) -> dict:
    """Every row of ``dataset`` simulated again at R = 3 with fresh noise: ``out`` holds total (N,)."""
    rows = load_dataset(dataset)
    auto = {"name": "auto", "method": "auto", "dtype": "float32", "precision": "tf32", "protocol": {}}
    sim = Simulator.from_config(auto, device)
    theta = torch.as_tensor(rows["theta"])
    again = evaluate_params(theta, space, data, sim, repeats=3, seed=seed).costs.total.numpy()
    np.savez(out, total=again, stored=rows["total"], method=sim.resolved_method)
    ok = np.isfinite(again) & np.isfinite(rows["total"])
    rho = float(spearman(torch.tensor(rows["total"][ok]), torch.tensor(again[ok])))
    print(f"{len(again)} rows re-simulated on {sim.device} ({sim.resolved_method}): Spearman {rho:.3f}")
    return {"rows": len(again), "spearman": rho}


if __name__ == "__main__":
    main()
