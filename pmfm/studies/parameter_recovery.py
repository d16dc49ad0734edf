"""Parameter recovery: fit synthetic "empirical" data made by simulating known parameters, with both
strategies, and see how close the fits come to the truth (its cost, its maps, each coefficient).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from scipy.io import savemat

from pmfm.data import bundled_path, fcd_pair_count, load
from pmfm.evaluate import evaluate_params, grouped_costs, map_correlations, mean_and_se
from pmfm.params import COEFFICIENT_NAMES, ParamSpace, read_params_csv
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.fit.run import fit
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.results import read_results
from pmfm.plots import plt
from pmfm.studies.configs import sub_config
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table


def truth_set(source: str, index: int, space: ParamSpace, seed: int) -> torch.Tensor:
    """(1, P) the known parameters: Kong2021 example set ``index`` (1-5) or random draw ``index``."""
    if source == "example":
        return read_params_csv(bundled_path().parent / "kong2021_example.csv", space)[index - 1 : index]
    if source == "random":
        return space.random_start(1, np.random.default_rng([seed, 17, index]))
    raise ConfigError(f"study.truth={source!r}; expected 'example' or 'random'")


def mean_targets(
    theta, space, data, simulator, variant, repeats: int, seed: int, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) mean FC (diagonal 1) and (bins,) mean FCD CDF in counts of ``repeats`` simulations."""
    stats = evaluate_params(theta, space, data, simulator, repeats=repeats, seed=seed, variant=variant,
                            keep_stats=True, progress=progress).stats  # fmt: skip
    assert stats is not None
    fc_ok, fcd_ok = stats.fc_valid.numpy(), stats.fcd_valid.numpy()
    if not fc_ok.any() or not fcd_ok.any():
        raise ValueError("the true parameters gave no valid simulation: pick another truth")
    n = space.n_regions
    upper = stats.fc.double().numpy()[fc_ok].mean(0)  # (E,)
    fc = np.eye(n)
    fc[np.triu_indices(n, 1)] = upper
    fc = np.triu(fc, 1) + np.triu(fc, 1).T + np.eye(n)
    cdf = np.rint(stats.cdf.double().numpy()[fcd_ok].mean(0)).astype(np.int64)  # (bins,) counts
    return fc, cdf


def write_targets(folder: Path, source, fc_cdf: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A CBIG-format folder: sc_/fc_/fcd_<split> for each split (the source's SC), covariates."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (fc, cdf) in fc_cdf.items():
        np.savetxt(folder / f"sc_{split}.csv", source.sc, delimiter=",")
        np.savetxt(folder / f"fc_{split}.csv", fc, delimiter=",")
        savemat(folder / f"fcd_{split}.mat", {f"{split}_aveM": cdf[:, None]})
    np.savetxt(folder / "myelin.csv", source.myelin)
    np.savetxt(folder / "rsfc_gradient.csv", source.gradient)
    return folder


def run_fit(cfg: DictConfig, strategy: str, targets: Path, out_dir: Path) -> Path:
    """pmfm.fit's pipeline, ``strategy=<strategy>``, on the synthetic targets, in ``out_dir/fit_<strategy>``
    (its datasets in ``out_dir/datasets``)."""
    fits = cfg.study.fits
    values = {
        "data": {"path": str(targets), "split": "train", "fcd_n_tr": None},  # made at the protocol's TRs
        "paths": {"datasets": str(out_dir / "datasets")},
    }
    fit_cfg = sub_config(
        "fit", cfg, fits.get("common"), fits.get(strategy), groups={"strategy": strategy}, values=values
    )
    folder = out_dir / f"fit_{strategy}"
    fit(fit_cfg, folder)
    return folder


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Targets from the truth, a fit per strategy, fresh-noise costs and parameter errors.

    1. Truth: the Kong2021 example set ``study.truth_index`` (or a random feasible set).
    2. Targets: the truth simulated ``study.target_repeats`` times on the data's SC; the mean FC and
       FCD CDF (rounded to counts) are the training split, an independent draw the validation split,
       written as a CBIG folder (``targets/``) with the data's covariates.
    3. pmfm.fit's pipeline per strategy of ``study.strategies`` on it (``fit_<strategy>/``, settings
       ``study.fits.common`` and ``study.fits.<strategy>``; the surrogate strategy's dataset is made
       on the targets and counted in its summary).
    4. Fresh-noise costs of the truth and each fit's best (``study.noise_groups`` groups at the
       validation R, mean +- SE), map correlations, per-coefficient errors in normalised units, and
       each coefficient's spread over the chosen sets within noise (2 sd) of the best.
    """
    s = cfg.study
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    source = load_data(cfg.data, simulator, variant)  # its SC and covariates only
    space = simulator.param_space(source)
    truth = truth_set(s.truth, int(s.truth_index), space, int(cfg.seed))
    n_tr = simulator.protocol.n_tr
    split = {"n_tr": n_tr, "window": variant.window, "n_bins": variant.n_bins}
    on_sc = _with_targets(source, n_tr, variant)
    with progress_bar(2 * int(s.target_repeats), "targets", enabled=cfg.progress) as bar:
        # the targets' noise is their own: a fit's validation stage (validation.seed) must never
        # simulate with the noise that made its target
        made = {
            split: mean_targets(
                truth, space, on_sc, simulator, variant, int(s.target_repeats), seed, bar.update
            )
            for split, seed in (("train", int(s.target_seed)), ("vali", int(s.target_seed) + 1))
        }
    targets = write_targets(out_dir / "targets", source, made)
    fits = {strategy: run_fit(cfg, strategy, targets, out_dir) for strategy in s.strategies}

    vali = load(targets, "vali", **split)
    results = {k: read_results(f / "results.csv", space) for k, f in fits.items()}
    baseline = space.random_start(1, np.random.default_rng([int(cfg.seed), 23]))  # a random feasible set
    sets = torch.cat([truth, *[r.theta[:1] for r in results.values()], baseline])  # (S + 2, P)
    n_sims = len(sets) * int(s.noise_groups) * int(s.vali_repeats)
    with progress_bar(n_sims, "fresh-noise costs", enabled=cfg.progress) as bar:
        groups = grouped_costs(
            sets,
            space,
            vali,
            simulator,
            group_size=int(s.vali_repeats),
            n_groups=int(s.noise_groups),
            seed=int(cfg.seed) + 100,
            variant=variant,
            stage="fit",
            progress=bar.update,
        )["total"]
    fresh = [mean_and_se(g) for g in groups]
    noise_sd = float(np.nanstd(groups[0], ddof=1))  # sd of one validation-R cost of the truth
    box = space.box[:, 1] - space.box[:, 0]

    rows, costs_rows = [], []
    costs_rows.append(
        {
            "who": "truth",
            "fresh_mean": fresh[0][0],
            "fresh_se": fresh[0][1],
            "selection_vali": np.nan,
            "simulations": 0,
            "wall_s": 0.0,
            "map_corr_w": 1.0,
            "map_corr_I": 1.0,
            "map_corr_sigma": 1.0,
        }
    )
    costs_rows.append(
        {
            "who": "random feasible set",
            "fresh_mean": fresh[-1][0],
            "fresh_se": fresh[-1][1],
            "selection_vali": np.nan,
            "simulations": 0,
            "wall_s": 0.0,
            **dict(
                zip(
                    ("map_corr_w", "map_corr_I", "map_corr_sigma"),
                    map_correlations(space, baseline[0], truth[0]),
                    strict=True,
                )
            ),
        }
    )
    per_strategy = {}
    for i, (name, res) in enumerate(results.items(), start=1):
        best = res.theta[0]
        vali_total = res.costs["vali"][:, 2]
        equivalent = np.isfinite(vali_total) & (vali_total <= vali_total[0] + 2 * noise_sd)
        spread = (
            (res.theta[equivalent].numpy().std(0) / box)
            if equivalent.sum() > 1
            else np.full(len(box), np.nan)
        )
        err = np.abs(best.numpy() - truth[0].numpy()) / box
        corr = map_correlations(space, best, truth[0])
        summary_json = json.loads((fits[name] / "summary.json").read_text())
        diff = fresh[i][0] - fresh[0][0]
        se_diff = math.hypot(fresh[i][1], fresh[0][1])
        per_strategy[name] = {
            "fresh_mean": fresh[i][0],
            "fresh_se": fresh[i][1],
            "minus_truth": diff,
            "minus_truth_in_se": diff / se_diff if se_diff > 0 else np.nan,
            "no_worse_within_noise": bool(diff <= 2 * se_diff),
            "simulations": summary_json["total"]["simulations"],
            "wall_s": summary_json["total"]["wall_s"],
            "map_corr": corr.tolist(),
            "n_equivalent": int(equivalent.sum()),
            "median_coef_error": float(np.median(err)),
        }
        costs_rows.append(
            {
                "who": f"fit {name}",
                "fresh_mean": fresh[i][0],
                "fresh_se": fresh[i][1],
                "selection_vali": float(vali_total[0]),
                "simulations": summary_json["total"]["simulations"],
                "wall_s": summary_json["total"]["wall_s"],
                "map_corr_w": corr[0],
                "map_corr_I": corr[1],
                "map_corr_sigma": corr[2],
            }
        )
        for j, coef in enumerate(COEFFICIENT_NAMES[: space.dim]):
            rows.append(
                {
                    "strategy": name,
                    "coefficient": coef,
                    "truth": float(truth[0, j]),
                    "recovered": float(best[j]),
                    "abs_error_normalised": float(err[j]),
                    "spread_normalised": float(spread[j]),
                    "n_equivalent": int(equivalent.sum()),
                }
            )
    write_table(rows, out_dir / "results.csv")
    write_table(costs_rows, out_dir / "costs.csv")
    if cfg.plot:
        plot(rows, costs_rows, out_dir / "recovery.png", int(s.vali_repeats))

    conclusion = [
        f"Truth: {s.truth} set {s.truth_index}; targets = mean of {s.target_repeats} simulations on the "
        f"data's SC ({n_tr} TRs); fresh-noise costs: {s.noise_groups} groups of R = {s.vali_repeats} on the "
        f"validation targets. The truth itself costs {fresh[0][0]:.4f} +- {fresh[0][1]:.4f} (SE), a random "
        f"feasible set {fresh[-1][0]:.4f} +- {fresh[-1][1]:.4f}.",
    ]
    for name, p in per_strategy.items():
        worst = max(
            ((r["coefficient"], r["abs_error_normalised"]) for r in rows if r["strategy"] == name),
            key=lambda t: t[1],
        )
        conclusion.append(
            f"{name} strategy ({p['simulations']} simulations, {p['wall_s']:.0f} s): best set costs "
            f"{p['fresh_mean']:.4f} +- {p['fresh_se']:.4f}, {p['minus_truth']:+.4f} vs the truth "
            f"({p['minus_truth_in_se']:+.1f} SE: "
            + ("no worse within noise" if p["no_worse_within_noise"] else "worse")
            + "); map correlations w/I/sigma "
            + "/".join(f"{c:.2f}" for c in p["map_corr"])
            + f"; median coefficient error {p['median_coef_error']:.3f} of its range, "
            f"worst {worst[0]} {worst[1]:.3f}."
        )
    summary = {
        "study": "parameter_recovery",
        "truth": truth[0].tolist(),
        "n_tr": n_tr,
        "truth_fresh_mean": fresh[0][0],
        "truth_fresh_se": fresh[0][1],
        "random_fresh_mean": fresh[-1][0],
        "random_fresh_se": fresh[-1][1],
        "noise_sd": noise_sd,
        "strategies": per_strategy,
        "fit_folders": {k: str(v) for k, v in fits.items()},
        "provenance": provenance(simulator.device),
    }
    return write_summary(out_dir, "Parameter recovery", summary, conclusion, markdown_table(rows))


def _with_targets(source, n_tr: int, variant):
    """The source data with placeholder targets fitting ``n_tr`` (only its SC is simulated on)."""
    cdf = np.zeros(variant.n_bins, dtype=np.int64)
    cdf[-1] = fcd_pair_count(n_tr, variant.window)
    return dataclasses.replace(source, fcd_cdf=cdf)


def plot(rows: list[dict], costs_rows: list[dict], path: Path, repeats: int) -> None:
    """Per-coefficient normalised error per strategy; fresh-noise cost of the truth and each fit."""

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2.2, 1]})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    coefs = list(dict.fromkeys(r["coefficient"] for r in rows))
    width = 0.8 / max(len(strategies), 1)
    for i, name in enumerate(strategies):
        mine = [r for r in rows if r["strategy"] == name]
        x = np.arange(len(coefs)) + i * width
        a.bar(x, [r["abs_error_normalised"] for r in mine], width, label=f"{name}: |error|", color=f"C{i}")
        a.scatter(x, [r["spread_normalised"] for r in mine], color="k", marker="_", s=80, zorder=3)
    a.set_xticks(np.arange(len(coefs)) + 0.4 - width / 2, coefs)
    a.set_ylabel("fraction of the coefficient's range")
    a.set_title("recovered - true (bars); spread over equally good sets (-)")
    a.legend(fontsize=8)
    b.errorbar(
        range(len(costs_rows)),
        [r["fresh_mean"] for r in costs_rows],
        yerr=[r["fresh_se"] for r in costs_rows],
        fmt="o",
        capsize=4,
    )
    b.set_xticks(range(len(costs_rows)), [r["who"] for r in costs_rows], rotation=15)
    b.set_ylabel(f"total, fresh noise (R = {repeats}), mean +- SE")
    b.set_title("cost vs the truth's own")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
