"""Issue 5's acceptance check: is the surrogate strategy's chosen set as good as the simulator's?

    python experiments/fit_acceptance.py --simulator outputs/fit/<sim run> --surrogate outputs/fit/<sur run>

Each run's chosen set (rank 1 of its results.csv) is simulated again with fresh, independent noise
on the validation split, R = 20 repeats per group, 5 groups (100 simulations per set), costed per
group ("fit" stage: a term without a valid repeat is 10). Prints and saves (results/fit_acceptance.json)
mean +- standard error over the groups, the difference in standard errors, and each run's total
simulations from its summary.json. Pass: surrogate mean <= simulator mean + 2 SE (SE of the
difference) while the surrogate run used fewer simulations in total.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from pmfm.cost import cost_variant
from pmfm.data import load
from pmfm.params import ParamSpace
from pmfm.results import read_results
from pmfm.sim.simulator import Simulator
from pmfm.evaluate.selection import grouped_costs, mean_and_se

RESULTS = Path(__file__).resolve().parent / "results" / "fit_acceptance.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--simulator", type=Path, required=True, help="run folder of a strategy=simulator fit"
    )
    parser.add_argument(
        "--surrogate", type=Path, nargs="+", required=True, help="run folder(s) of strategy=surrogate fits"
    )
    parser.add_argument("--repeats", type=int, default=20, help="R per group")
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20265, help="noise seed (fresh: not a fit's seed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--method", default="euler", help="simulator path: euler, or auto (fused on CUDA)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    simulator = Simulator.from_config(
        {"name": args.method, "method": args.method, "dtype": "float32", "protocol": {}}, args.device
    )
    variant = cost_variant("kong2021")
    vali = load(None, "vali", n_tr=simulator.protocol.n_tr, window=variant.window, n_bins=variant.n_bins)
    space = ParamSpace(load(None, "train").basis())
    report = {
        "repeats_per_group": args.repeats,
        "groups": args.groups,
        "seed": args.seed,
        "device": f"{simulator.device} ({simulator.resolved_method})",
    }
    runs = [("simulator", args.simulator)] + [(f"surrogate_{i + 1}", f) for i, f in enumerate(args.surrogate)]
    for name, folder in runs:
        theta = read_results(folder / "results.csv", space).theta[:1]  # (1, 10): the chosen set
        tic = time.perf_counter()
        groups = grouped_costs(
            theta, space, vali, simulator, group_size=args.repeats, n_groups=args.groups,
            seed=args.seed, variant=variant, stage="fit",
        )["total"][0]  # fmt: skip
        mean, se, n = mean_and_se(groups)
        summary = json.loads((folder / "summary.json").read_text())
        report[name] = {
            "run": str(folder),
            "theta": theta[0].tolist(),
            "group_totals": groups.tolist(),
            "mean": mean,
            "se": se,
            "finite_groups": n,
            "total_simulations": summary["total"]["simulations"],
            "fit_wall_s": summary["total"]["wall_s"],
            "resimulation_wall_s": time.perf_counter() - tic,
        }
        print(f"{name:>11}: {mean:.4f} +- {se:.4f} (SE, {n} groups of R = {args.repeats}); "
              f"fit used {summary['total']['simulations']} simulations")  # fmt: skip
    sim = report["simulator"]
    for name, _ in runs[1:]:
        sur = report[name]
        se_diff = math.hypot(sim["se"], sur["se"])
        sur["difference"] = sur["mean"] - sim["mean"]
        sur["difference_in_se"] = sur["difference"] / se_diff if se_diff > 0 else float("nan")
        sur["pass_quality"] = bool(sur["mean"] <= sim["mean"] + 2 * se_diff)
        sur["pass_simulations"] = bool(sur["total_simulations"] < sim["total_simulations"])
        print(
            f"{name} - simulator = {sur['difference']:+.4f} "
            f"({sur['difference_in_se']:+.2f} SE of the difference); "
            f"quality {'PASS' if sur['pass_quality'] else 'FAIL'}, "
            f"fewer simulations {'PASS' if sur['pass_simulations'] else 'FAIL'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
