"""Leave-one-CMA-ES-run-out for the emulator: how well does it cost runs of a bank it never saw?

Each CMA-ES part of a bank is held out in turn; ``study.members`` emulators (seeds ``seed``,
``seed + 1``, ...) are trained as a fit trains one (pmfm.pipelines.emulator.train_on_bank) on every
other row, and their mean prediction of the held-out rows' statistics is costed against every
target (the bank's own subjects, plus ``study.targets``), beside the cost from the rows' stored
statistics. Per target: the Spearman of the two totals within each held-out run and pooled over
all held-out rows; for a run against its own target, the case a fit's search meets. Checkpoints are
kept per run and member, so a killed study resumes (docs/emulator.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.cost import fcd_pair_count
from pmfm.cost.stats import cost_from_stats
from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.datasets.bank_datamodule import BankDataModule
from pmfm.datasets.store import BUNDLED_DATASETS
from pmfm.models.emulator import EmulatorModule
from pmfm.models.metrics import spearman
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.emulator import checked_targets, train_on_bank
from pmfm.pipelines.progress import progress_bar
from pmfm.studies.report import markdown_table, provenance, write_json, write_summary, write_table

SHIPPED_BANK = BUNDLED_DATASETS / "bank_pmfm_1200tr_r3"
GOAL = 0.9  # Spearman asked of the emulator on held-out runs


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Hold out every CMA-ES part of the bank in turn; per target, within-run and pooled Spearman."""
    s = cfg.study
    torch.set_num_threads(1)  # as surrogate_cv: one thread is fastest for these small networks
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    folder = Path(s.bank) if s.bank else SHIPPED_BANK
    bank = Bank(folder)
    bank.check(fingerprint(data, simulator, variant), "this study's simulator and data")
    names = [p.name for p in bank.parts() if not p.name.startswith("polish_")]
    rows = bank.load(names)
    held_parts = [i for i, name in enumerate(names) if name.startswith("cmaes_")]
    if len(held_parts) < 2:
        raise ConfigError(f"{folder}: {len(held_parts)} CMA-ES part(s); holding one out needs at least 2")
    fcd_total = fcd_pair_count(simulator.protocol.n_tr, variant.window)
    own = {f"bank/{t.name}": t for t in checked_targets(None, folder)}  # the bank's CMA-ES subjects
    other = {t.name: t for t in checked_targets(s.targets, folder)} if s.targets else {}
    emp = {
        label: t.load("train", window=variant.window, n_bins=variant.n_bins)
        for label, t in (own | other).items()
    }
    u = BankDataModule(space, rows=rows, n_bins=variant.n_bins).encode(rows)["x"]  # (n, P)
    members = int(s.members)
    pred = {}  # part -> SetStats of its rows, emulated by the members trained without it
    with progress_bar(len(held_parts) * members, "emulator_cv", unit="emulator", enabled=cfg.progress) as bar:
        for part in held_parts:
            held = rows["part"] == part
            rest = {k: v[~held] for k, v in rows.items()}
            modules = []
            for k in range(members):
                ckpt = out_dir / "members" / f"{names[part]}_seed{int(cfg.seed) + k}.ckpt"
                if not ckpt.is_file():
                    ckpt.parent.mkdir(parents=True, exist_ok=True)
                    train_on_bank(
                        rest, space, data, variant, fcd_total, cfg.model, epochs=int(s.epochs),
                        seed=int(cfg.seed) + k, save_to=ckpt, batch_size=int(s.batch_size), progress=False,
                    )  # fmt: skip
                modules.append(EmulatorModule.load_from_checkpoint(ckpt, map_location="cpu").eval())
                bar.update(1)
            pred[part] = mean_prediction(modules, u[torch.from_numpy(held)])
    stored = bank_stats(rows, fcd_total)
    held_rows = np.isin(rows["part"], held_parts)
    table: list[dict] = []
    per_run: list[dict] = []
    at_own: list[float] = []  # within a run, against the run's own target
    for name, e in emp.items():
        if e.n_regions * (e.n_regions - 1) // 2 != stored.fc_z.shape[1]:
            raise ConfigError(f"target {name}: {e.n_regions} regions, not the bank's")
        true = cost_from_stats(stored, e.fc, e.fcd_cdf, variant, "fit").total  # (n,)
        emulated = torch.full_like(true, float("nan"))
        for part, stats in pred.items():
            m = torch.from_numpy(rows["part"] == part)
            emulated[m] = cost_from_stats(stats, e.fc, e.fcd_cdf, variant, "fit").total
        within = []
        for part in held_parts:
            m = torch.from_numpy(rows["part"] == part)
            rho = spearman(emulated[m], true[m])
            mine = name in own and names[part].startswith(f"cmaes_{own[name].name}_")
            per_run.append({"target": name, "run": names[part], "own_target": mine, "spearman": rho})
            within.append(rho)
            at_own += [rho] if mine else []
        m = torch.from_numpy(held_rows)
        table.append({
            "target": name,
            "pooled": spearman(emulated[m], true[m]),
            "within_run_mean": float(np.mean(within)),
            "within_run_min": float(np.min(within)),
            f"runs_at_{GOAL}": f"{sum(v >= GOAL for v in within)}/{len(within)}",
        })  # fmt: skip
    write_table(table, out_dir / "results.csv")
    write_table(per_run, out_dir / "per_run.csv")
    pooled = [float(r["pooled"]) for r in table]
    conclusion = [
        f"{len(held_parts)} CMA-ES runs of {folder.name} held out in turn ({int(held_rows.sum())} rows), "
        f"{members} emulator(s) a run, {s.epochs} epochs; {len(rows['theta'])} rows in all",
        f"pooled over the held-out rows: Spearman >= {GOAL} on {sum(v >= GOAL for v in pooled)} of "
        f"{len(pooled)} targets (median {np.median(pooled):.3f})",
        f"within a run, against the run's own target: mean {np.mean(at_own):.3f} "
        f"(min {np.min(at_own):.3f}, >= {GOAL} on {sum(v >= GOAL for v in at_own)} of {len(at_own)})"
        if at_own
        else "no run's own target among the targets",
        f"within a run, every run x target: mean {np.mean([r['spearman'] for r in per_run]):.3f}",
    ]
    summary = {"bank": str(folder), "members": members, "epochs": int(s.epochs), "targets": table,
               "per_run": per_run, "provenance": provenance("cpu")}  # fmt: skip
    write_json(summary, out_dir / "emulator_cv.json", s.out)
    if cfg.plot:
        plot(table, per_run, out_dir / "emulator_cv.png")
    write_summary(out_dir, "Emulator: held-out CMA-ES runs", summary, conclusion, markdown_table(table))
    return summary


@torch.no_grad()
def mean_prediction(modules: list[EmulatorModule], u: torch.Tensor):
    """The members' mean fc_z, FCD levels and validity probabilities of sets u (B, P) as SetStats."""
    outs = [m(m.normalised(u)) for m in modules]
    fc_z = torch.stack([o["fc_z"] for o in outs]).mean(0)  # (B, E)
    levels = torch.stack([o["levels"] for o in outs]).mean(0)  # (B, L), a mean of non-decreasing rows
    p_fc = torch.stack([torch.sigmoid(o["logit_fc"]) for o in outs]).mean(0)  # (B,)
    p_fcd = torch.stack([torch.sigmoid(o["logit_fcd"]) for o in outs]).mean(0)
    return modules[0].stats_from(fc_z, levels, p_fc, p_fcd)


def plot(table: list[dict], per_run: list[dict], path: Path) -> None:
    """Per target: each held-out run's Spearman (dots; own target ringed) and the pooled one (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["target"] for r in table]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), [r["pooled"] for r in table], color="0.8", label="pooled over held-out rows")
    for i, name in enumerate(names):
        runs = [r for r in per_run if r["target"] == name]
        ax.scatter([i] * len(runs), [r["spearman"] for r in runs], s=12, color="C0", zorder=3)
        own = [r["spearman"] for r in runs if r["own_target"]]
        ax.scatter([i] * len(own), own, s=60, facecolors="none", edgecolors="C3", zorder=4)
    ax.scatter([], [], s=12, color="C0", label="within one held-out run")
    ax.scatter([], [], s=60, facecolors="none", edgecolors="C3", label="the run's own target")
    ax.axhline(GOAL, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Spearman, emulated vs stored total")
    ax.set_ylim(min(0.0, min(r["spearman"] for r in per_run) - 0.05), 1.0)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
