"""Speedup: the time per candidate evaluation and the wall time of a whole fit, side by side on one
device, and the seed's 5,000x claim checked against these numbers (not repeated).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pmfm.pipelines.benchmark import run_benchmark
from pmfm.pipelines.fit.state import RunState
from pmfm.plots import plt
from pmfm.sim.simulator import resolve_device
from pmfm.studies import parameter_recovery
from pmfm.studies.configs import sub_config
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table

GPU_ONLY = ("compiled", "fused")  # simulator paths that need CUDA


def per_evaluation(cfg: DictConfig, device) -> list[dict]:
    """Simulations/s, cost/s and surrogate evaluations/s on this device, and seconds per candidate."""
    s = cfg.study
    cuda = device.type == "cuda"
    methods = ("euler", *GPU_ONLY) if cuda else ("euler",)
    bench = run_benchmark(
        batches=(int(s.batch),),
        methods=methods,
        device=str(device),
        steps=int(s.steps),
        cost_batch=int(s.cost_batch),
        surrogates=tuple(s.surrogates),
        surrogate_batch=int(s.surrogate_batch),
        results_file=None,
    )
    cost = next(r for r in bench if r["implementation"].startswith("cost"))
    repeats = int(s.repeats)
    rows = []
    for r in bench:
        kind = r["implementation"].split()[0]
        if kind == "cost":
            continue
        per_candidate = (
            repeats * (1 / r["sims_per_s"] + 1 / cost["sims_per_s"]) if kind == "sim" else 1 / r["sims_per_s"]
        )
        rows.append(
            {
                "what": r["implementation"],
                "device": r["device"],
                "batch": r["batch"],
                "per_s": r["sims_per_s"],
                "seconds_per_candidate": per_candidate,
            }
        )
    if not cuda:
        for m in GPU_ONLY:
            rows.append(
                {
                    "what": f"sim {m}: not available on this device (CUDA only)",
                    "device": bench[0]["device"],
                    "batch": int(s.batch),
                    "per_s": float("nan"),
                    "seconds_per_candidate": float("nan"),
                }
            )
    rows.append(
        {
            "what": cost["implementation"],
            "device": cost["device"],
            "batch": cost["batch"],
            "per_s": cost["sims_per_s"],
            "seconds_per_candidate": repeats / cost["sims_per_s"],
        }
    )
    plain = next(r for r in rows if r["what"].startswith("sim euler"))
    for r in rows:
        r["speedup_vs_plain_candidate"] = plain["seconds_per_candidate"] / r["seconds_per_candidate"]
    return rows


def recorded_gpu(path: Path, device_key: str, repeats: int) -> list[dict]:
    """The fastest recorded rows on ``device_key`` (plain, compiled, fused, cost, surrogates) and
    each one's seconds per candidate (R simulations + R costs, or one surrogate pass)."""
    if not path.is_file():
        return []
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if device_key.lower() in r["device"].lower()]
    best: dict[str, dict] = {}
    for r in rows:
        words = r["implementation"].split()
        key = " ".join(words[:2]) if words[0] != "surrogate" else f"surrogate {words[1]}"
        if key not in best or float(r["sims_per_s"]) > float(best[key]["sims_per_s"]):
            best[key] = r
    cost = best.get("cost repeat_stats")
    out = []
    for key, r in best.items():
        rate = float(r["sims_per_s"])
        if key.startswith("sim") and cost:
            per_candidate = repeats * (1 / rate + 1 / float(cost["sims_per_s"]))
        elif key.startswith("cost"):
            per_candidate = repeats / rate
        else:
            per_candidate = 1 / rate
        out.append(
            {
                "what": r["implementation"],
                "device": r["device"],
                "date": r["date"],
                "batch": r["batch"],
                "per_s": rate,
                "seconds_per_candidate": per_candidate,
            }
        )
    return out


def whole_fits(cfg: DictConfig, out_dir: Path) -> dict:
    """Wall time, simulations and validated best of each fit, and the equal-quality speedup: the
    simulator strategy's time until its validated best first matched the surrogate fit's (generations
    assumed equally long), against the surrogate fit's whole wall time."""
    s = cfg.study
    folder = Path(s.fits_from) if s.fits_from else _run_recovery(cfg, out_dir)
    fits = {k: folder / f"fit_{k}" for k in ("simulator", "surrogate")}
    info: dict = {}
    for name, f in fits.items():
        summary = json.loads((f / "summary.json").read_text())
        vali = RunState(f).load("validation")["vali"][:, 2]
        info[name] = {
            "folder": str(f),
            "wall_s": summary["total"]["wall_s"],
            "simulations": summary["total"]["simulations"],
            "stages": {
                k: v["wall_s"]
                for k, v in summary.items()
                if isinstance(v, dict) and "wall_s" in v and k != "total"
            },
            "validated_best": float(np.nanmin(vali)),
        }
    target = info["surrogate"]["validated_best"]
    state = RunState(fits["simulator"])
    generation = np.asarray(state.load("search")["generation"])  # (K,) generation of each candidate
    vali = state.load("validation")["vali"][:, 2]
    stages = info["simulator"]["stages"]
    n_gen = int(generation.max())
    reach = None
    for g in range(1, n_gen + 1):
        upto = generation <= g
        if np.nanmin(np.where(upto, vali, np.inf)) <= target:
            reach = stages.get("search", 0.0) * g / n_gen + stages.get("validation", 0.0) * upto.mean()
            info["simulator"]["generation_reaching_surrogate_quality"] = g
            break
    info["simulator"]["wall_s_to_surrogate_quality"] = reach
    sur = info["surrogate"]["wall_s"]
    info["equal_quality_speedup"] = reach / sur if reach is not None else None
    info["surrogate_better"] = bool(target < info["simulator"]["validated_best"])
    info["whole_wall_ratio"] = info["simulator"]["wall_s"] / sur
    return info


def _ratio(row: dict, reference: dict) -> str:
    """'<network> <n>x': how many times less a surrogate pass takes than a reference candidate."""
    return (
        f"{row['what'].split()[1]} {reference['seconds_per_candidate'] / row['seconds_per_candidate']:,.0f}x"
    )


def _run_recovery(cfg: DictConfig, out_dir: Path) -> Path:
    """Run the parameter_recovery study (same data and device, its own protocol and simulator) into
    ``out_dir/recovery``."""
    recovery = sub_config("experiment", cfg, cfg.study.recovery, share=("data",))
    parameter_recovery.run(recovery, out_dir / "recovery")
    return out_dir / "recovery"


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Per-evaluation timings, whole-fit wall times, recorded GPU figures; the claim checked.

    1. Per evaluation (:func:`per_evaluation`, the full protocol extrapolated from ``study.steps``
       steps): the plain Euler path and, on CUDA, the compiled path and the fused kernel; the cost;
       the surrogates. A candidate costs R simulations plus R costs, a surrogate evaluation one pass.
    2. Whole fit (:func:`whole_fits`): the two fits of a parameter_recovery run (``study.fits_from``,
       or run here with ``study.recovery``), wall times with dataset generation, and the speedup at
       equal validated quality.
    3. The GPU figures recorded in ``study.gpu_record`` for ``study.gpu_device``, cited with their device.
    """
    s = cfg.study
    device = resolve_device(cfg.device)
    here = per_evaluation(cfg, device)
    gpu = recorded_gpu(Path(s.gpu_record), str(s.gpu_device), int(s.repeats))
    fits = whole_fits(cfg, out_dir) if s.whole_fit else None
    write_table(
        [{"source": "measured here", **r} for r in here]
        + [{"source": f"recorded ({r.pop('date')})", **r} for r in gpu],
        out_dir / "results.csv",
    )

    plain = next(r for r in here if r["what"].startswith("sim euler"))
    ratios = {
        r["what"]: plain["seconds_per_candidate"] / r["seconds_per_candidate"]
        for r in here
        if r["what"].startswith("surrogate")
    }
    conclusion = [
        f"On {plain['device']}: a candidate (R = {s.repeats} full-protocol simulations + costs) takes "
        f"{plain['seconds_per_candidate']:.3g} s on the plain Euler path at batch {plain['batch']}; "
        + "; ".join(
            f"{k.split('(')[0].strip()} {1 / r['seconds_per_candidate']:.3g} evaluations/s"
            for k, r in ((r["what"], r) for r in here if r["what"].startswith("surrogate"))
        )
        + ".",
        "Per candidate evaluation, surrogate vs plain simulation here: "
        + ", ".join(f"{k.split('(')[0].strip().split()[-1]} {v:,.0f}x" for k, v in ratios.items())
        + ".",
    ]
    gpu_sim = [r for r in gpu if r["what"].startswith("sim")]
    gpu_sur = [r for r in gpu if r["what"].startswith("surrogate")]
    if gpu_sim and gpu_sur:
        fastest = min(gpu_sim, key=lambda r: r["seconds_per_candidate"])
        slowest = max(gpu_sim, key=lambda r: r["seconds_per_candidate"])
        conclusion.append(
            f"Recorded on {fastest['device']} ({s.gpu_record}): plain Euler {slowest['per_s']:,.0f} sims/s, "
            f"fastest path {fastest['per_s']:,.0f} sims/s ({fastest['what']}); per candidate the surrogates "
            "are "
            + ", ".join(_ratio(r, fastest) for r in gpu_sur)
            + " faster than the fastest simulator path, and "
            + ", ".join(_ratio(r, slowest) for r in gpu_sur)
            + " faster than plain Euler."
        )
    conclusion.append(
        "The seed's 5,000x (surrogate evaluation vs Euler integration) is a per-evaluation ratio; ours "
        "depends on the network and the simulator path: see the ratios above, not a single number."
    )
    if fits:
        sim, sur = fits["simulator"], fits["surrogate"]
        where = f"the parameter_recovery run {s.fits_from}" if s.fits_from else plain["device"]
        conclusion.append(
            f"Whole fits ({where}): simulator strategy {sim['wall_s']:.0f} s, "
            f"{sim['simulations']} simulations, validated best {sim['validated_best']:.4f}; "
            f"surrogate strategy {sur['wall_s']:.0f} s with dataset generation, "
            f"{sur['simulations']} simulations, validated best {sur['validated_best']:.4f}."
        )
        if fits["equal_quality_speedup"] is not None:
            conclusion.append(
                f"At equal validated quality ({sur['validated_best']:.4f}): the simulator strategy reached "
                "it "
                f"at generation {sim['generation_reaching_surrogate_quality']} after "
                f"~{sim['wall_s_to_surrogate_quality']:.0f} s, "
                f"so the whole-fit speedup is {fits['equal_quality_speedup']:.2f}x "
                f"({'a speedup' if fits['equal_quality_speedup'] > 1 else 'a slowdown'})."
            )
        else:
            conclusion.append(
                "At equal validated quality: the simulator strategy never reached the surrogate fit's "
                f"quality within its budget; the whole-fit wall ratio is {fits['whole_wall_ratio']:.2f}x "
                "(a lower bound)."
            )
    if cfg.plot:
        plot(here, gpu, out_dir / "speedup.png")
    summary = {
        "study": "speedup",
        "repeats": int(s.repeats),
        "measured": here,
        "recorded_gpu": gpu,
        "surrogate_vs_plain_per_candidate": ratios,
        "whole_fit": fits,
        "provenance": provenance(device),
    }
    table = markdown_table(
        here, ["what", "batch", "per_s", "seconds_per_candidate", "speedup_vs_plain_candidate"]
    )
    return write_summary(out_dir, "Speedup", summary, conclusion, table)


def plot(here: list[dict], gpu: list[dict], path: Path) -> None:
    """Seconds per candidate evaluation, measured here and recorded on the GPU (log scale)."""

    rows = [r for r in here if np.isfinite(r["seconds_per_candidate"])]
    labels = [f"{r['what'].split('(')[0][:40]}\n[{r['device'][:18]}]" for r in rows + gpu]
    values = [r["seconds_per_candidate"] for r in rows + gpu]
    colors = ["C0"] * len(rows) + ["C1"] * len(gpu)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(values) + 1.5))
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("seconds per candidate evaluation (R simulations + costs, or one surrogate pass)")
    ax.set_title("measured here (blue), recorded on the GPU (orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
