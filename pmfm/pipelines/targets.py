"""Make fit targets (``python -m pmfm.targets``): from parcellated BOLD runs, or synthetic subjects
simulated from a known parameter set (docs/data.md#targets-from-bold).

Both forms compute each run's FC and FCD CDF with :func:`pmfm.cost.run_stats` and average a split's
runs with :func:`pmfm.cost.average_runs` (FC in Fisher z, the rounded mean of the count CDFs), then
write one target folder per subject (:func:`pmfm.data.write_target`): the data-folder files of each
split, the group's SC, the covariates and target.json.

Synthetic truths. Subject k's parameter set is drawn from its own generator (seed, k), so the same
seed gives the same subjects whatever their number. With ``synthetic_truth.from_dataset`` = p, subject
k is drawn near a dataset set when floor((k + 1) p) > floor(k p) (p = 0.5: the odd subjects): the
best valid set of CMA-ES run j (cycling over the runs, best run first) of the dataset (default: the
shipped HCP CMA-ES dataset), moved by a Gaussian step of standard deviation ``synthetic_truth.step``
in normalised coordinates, redrawn until feasible. The others are least-squares random starts
(:meth:`pmfm.params.ParamSpace.random_start`). Good fits of the pMFM sit close to a bifurcation,
so even small steps often leave a set whose FC is mostly noise: the summary reports each subject's
training-validation FC correlation, and ``synthetic_truth.min_reliability`` > 0 redraws truths below
it. A truth whose simulated runs are not all valid is drawn again too (at most
``synthetic_truth.max_draws`` draws a subject).

Synthetic noise. Run r of subject k is simulated with independent noise, stream k R + r
(R = runs per subject, :func:`pmfm.evaluate.repeat_noise`) under the seed ``NOISE_SEED_BASE + seed``:
far from every seed a fit draws its noise from, so a fit never simulates with its target's noise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pmfm.cost import CostVariant, average_runs, fcd_pair_count, run_stats
from pmfm.data import DataError, EmpiricalData, Subject, check_run, find_subjects, read_run, write_target
from pmfm.data.checks import check_sc
from pmfm.data.folder import SPLIT_PATTERN
from pmfm.data.readers import read_csv
from pmfm.datasets import BUNDLED_DATASETS, DatasetError, load_dataset
from pmfm.evaluate import repeat_noise
from pmfm.evaluate.costs import sims_per_chunk
from pmfm.params import ParamSpace
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.sim.simulate import simulate
from pmfm.sim.simulator import Simulator, resolve_device

log = logging.getLogger(__name__)
BUNDLED_DATASET = BUNDLED_DATASETS / "hcp_cmaes_pmfm_1200tr_r3"  # CMA-ES on the HCP group (pMFM)
NOISE_SEED_BASE = 2**62  # synthetic runs' noise seed = this + seed (fits use small seeds)
TRUTH_STREAM = 8_101  # tags the truths' generators: default_rng([seed, TRUTH_STREAM, k, draw])
RUNS_PER_STATS = 4  # runs whose FCD is computed at once (about 50 MB each at 68 regions, 1,200 TRs)
MAX_TRIES = 1000  # Gaussian steps tried for one feasible perturbation


@dataclass(frozen=True)
class MadeTarget:
    """What was written for one subject, for the printed summary."""

    name: str
    folder: Path
    runs: dict[str, int]  # runs averaged per split
    n_regions: int
    fc_mean: float  # mean off-diagonal FC of the first split
    fc_split_r: float  # Pearson r between the first two splits' FC upper triangles (NaN with one split)
    note: str = ""  # synthetic: how the truth was drawn


@dataclass(frozen=True)
class Truth:
    """A synthetic subject's parameter set and how it was drawn."""

    theta: np.ndarray  # (P,) raw parameters
    kind: str  # "dataset" or "random"
    note: str  # for people: "near CMA-ES run 4's best (total 1.178)"
    draw: int = 0  # 0 for the first draw, 1.. for redraws after invalid runs


def make_targets(cfg: DictConfig, run_dir: Path) -> list[MadeTarget]:
    """``python -m pmfm.targets``: BOLD targets (``bold=<folder>``) or synthetic subjects
    (``synthetic=<count>``) written to ``out`` (default: the run folder); prints a summary."""
    bold, count = cfg.get("bold"), int(cfg.get("synthetic") or 0)
    if bool(bold) == bool(count):
        raise ConfigError("give one of bold=<folder of subjects' runs> or synthetic=<number of subjects>")
    if count < 0:
        raise ConfigError(f"synthetic={count}: expected a number of subjects >= 1")
    out = Path(cfg.out).expanduser() if cfg.get("out") else run_dir
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)  # SC and covariates (the synthetic subjects' SC)
    if bold:
        sc, sc_source = group_sc(cfg.get("sc"), data)
        made = targets_from_bold(
            Path(bold).expanduser(),
            out,
            sc,
            data,
            n_tr=int(cfg.n_tr),
            tr_s=float(cfg.tr_s),
            splits=split_counts(cfg.splits, "splits"),
            variant=variant,
            rounded=bool(cfg.round_fcd),
            overwrite=bool(cfg.overwrite),
            sc_source=sc_source,
            device=str(cfg.device),
            progress=cfg.progress,
        )
        head = f"{len(made)} BOLD target(s) ({cfg.n_tr} TRs at {cfg.tr_s} s"
    else:
        settings = cfg.synthetic_truth
        made = synthetic_subjects(
            count,
            out,
            data,
            simulator,
            variant,
            runs=split_counts(cfg.synthetic_runs, "synthetic_runs", allow_rest=False),
            seed=int(cfg.seed),
            from_dataset=float(settings.from_dataset),
            dataset=settings.dataset,
            step=float(settings.step),
            max_draws=int(settings.max_draws),
            min_reliability=float(settings.min_reliability),
            rounded=bool(cfg.round_fcd),
            overwrite=bool(cfg.overwrite),
            progress=cfg.progress,
        )
        p = simulator.protocol
        head = f"{len(made)} synthetic subject(s) ({p.n_tr} TRs at {p.tr_s} s, {simulator.describe()}"
    print(f"targets: {head}, FCD window {variant.window}) in {out}")
    print(summary_table(made))
    return made


# -- shared ----------------------------------------------------------------------------------------
def split_counts(value, key: str, allow_rest: bool = True) -> dict[str, int | None]:
    """``{split: runs}`` from the config, checked: names of letters, digits and _, counts >= 0 (0: no
    such split, so ``splits.vali=0`` drops a default split) and, when ``allow_rest``, at most one null
    (the remaining runs). Splits of 0 runs are left out."""
    raw = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}={value}: expected a mapping split -> runs, e.g. {{train: 2, vali: 2}}")
    counts = {str(s): n for s, n in raw.items()}
    for split, n in counts.items():
        if not SPLIT_PATTERN.fullmatch(split):
            raise ConfigError(f"{key}.{split}: split names are letters, digits and _ only")
        ok = n is None and allow_rest or isinstance(n, int) and not isinstance(n, bool) and n >= 0
        if not ok:
            allowed = "a number of runs >= 0" + (" or null (the remaining runs)" if allow_rest else "")
            raise ConfigError(f"{key}.{split}={n}: expected {allowed}")
    kept = {s: n for s, n in counts.items() if n != 0}
    if not kept:
        raise ConfigError(f"{key}={value}: no split gets a run")
    rest = [s for s, n in kept.items() if n is None]
    if len(rest) > 1:
        raise ConfigError(f"{key}: only one split can take the remaining runs (null), got {rest}")
    return kept


def assign_runs(runs: Sequence, counts: dict[str, int | None], where: Path) -> tuple[dict[str, list], list]:
    """Consecutive runs to each split in order (a null count: what the others leave), and the unused."""
    fixed = sum(n for n in counts.values() if n is not None)
    rest = len(runs) - fixed
    if rest < (1 if None in counts.values() else 0):
        need = f"at least {fixed + (1 if None in counts.values() else 0)}"
        raise DataError(where, f"{len(runs)} run file(s)", f"{need} runs for the splits {counts}")
    out, start = {}, 0
    for split, n in counts.items():
        take = rest if n is None else n
        out[split] = list(runs[start : start + take])
        start += take
    return out, list(runs[start:])


def refuse_existing(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """Stop before any work when a target folder to be written exists (unless ``overwrite``)."""
    if overwrite:
        return
    existing = [n for n in names if (out / n).exists()]
    if existing:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ConfigError(f"{out}: target folder(s) {shown} exist already; overwrite=true replaces them")


def group_sc(path, data: EmpiricalData) -> tuple[np.ndarray, str]:
    """The SC every subject gets: the csv ``path`` (checked) or the data config's SC."""
    if not path:
        return np.asarray(data.sc), str(data.source / f"sc_{data.split}.csv")
    sc_file = Path(path).expanduser().resolve()
    if not sc_file.is_file():
        raise DataError(sc_file, "SC file not found", "an N x N comma-separated SC")
    sc = check_sc(read_csv(sc_file), sc_file)
    if len(sc) != data.n_regions:
        raise DataError(
            sc_file,
            f"SC has {len(sc)} regions but the covariates of {data.source} have {data.n_regions}",
            f"{data.n_regions} regions, or data=folder data.path=<a folder with covariates for {len(sc)}>",
        )
    return sc, str(sc_file)


def split_stats(
    bold: torch.Tensor, variant: CostVariant, paths: Sequence, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`run_stats` of (K, N, T) runs, ``RUNS_PER_STATS`` at a time on ``device``; a run whose
    FCD misses window pairs (a region constant within a window) stops with a DataError on its path."""
    fcs, cdfs = [], []
    for start in range(0, len(bold), RUNS_PER_STATS):
        fc, cdf = run_stats(bold[start : start + RUNS_PER_STATS].to(device), variant)
        fcs.append(fc)
        cdfs.append(cdf)
    fc, cdf = np.concatenate(fcs), np.concatenate(cdfs)
    total = fcd_pair_count(bold.shape[-1], variant.window)
    for path, row in zip(paths, cdf, strict=True):
        if row[-1] != total:
            raise DataError(
                path,
                f"the run's FCD counts {int(row[-1])} of {total} window pairs (a region constant within "
                f"a window, or correlations below {variant.hist_min})",
                "every window pair counted",
            )
    return fc, cdf


def summary_table(made: Sequence[MadeTarget]) -> str:
    """One line per target: runs per split, regions, mean FC of the first split, the correlation of
    the first two splits' FC (how much of a target is signal rather than noise), the truth."""
    if not made:
        return "(no targets)"
    splits = list(made[0].runs)
    width = max(len("target"), *(len(m.name) for m in made))
    head = f" {'target':<{width}} " + " ".join(f"{s:>6}" for s in splits)
    head += f" {'regions':>8} {'mean FC':>8} {'FC r':>6}"
    has_note = any(m.note for m in made)
    lines = [head + ("  truth" if has_note else "")]
    for m in made:
        line = f" {m.name:<{width}} " + " ".join(f"{m.runs.get(s, 0):>6}" for s in splits)
        line += f" {m.n_regions:>8} {m.fc_mean:>8.4f} {m.fc_split_r:>6.3f}"
        lines.append(line + (f"  {m.note}" if has_note else ""))
    return "\n".join(lines)


def fc_summary(written: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Mean off-diagonal FC of the first split and Pearson r between the first two splits' FC."""
    fcs = [fc for fc, _ in written.values()]
    iu = np.triu_indices(len(fcs[0]), 1)
    r = float(np.corrcoef(fcs[0][iu], fcs[1][iu])[0, 1]) if len(fcs) > 1 else float("nan")
    return float(fcs[0][iu].mean()), r


# -- from BOLD -------------------------------------------------------------------------------------
def targets_from_bold(
    bold: Path,
    out: Path,
    sc: np.ndarray,
    covariates: EmpiricalData,
    *,
    n_tr: int,
    tr_s: float,
    splits: dict[str, int | None],
    variant: CostVariant,
    rounded: bool = True,
    overwrite: bool = False,
    sc_source: str = "",
    device: str = "auto",
    progress: bool = True,
) -> list[MadeTarget]:
    """One target per subject of the cohort folder ``bold`` (:func:`pmfm.data.find_subjects`).

    A subject's run files (regions x TRs, each ``n_tr`` TRs at ``tr_s`` s) go to the splits in
    file-name order (``splits``: runs per split, null = the rest; runs left over are listed in
    target.json as unused); each split's FC and FCD CDF are the average of its runs
    (:func:`pmfm.cost.average_runs`, ``rounded`` CDF). Every run is checked
    (:func:`pmfm.data.check_run`): a bad file stops with a DataError naming it.
    """
    if n_tr < variant.window:
        raise ConfigError(f"n_tr={n_tr} is shorter than the FCD window ({variant.window} TRs)")
    if not tr_s > 0:
        raise ConfigError(f"tr_s={tr_s}: expected the runs' TR in seconds, > 0")
    subjects = find_subjects(bold)
    plan = {s.name: assign_runs(s.runs, splits, s.folder) for s in subjects}
    refuse_existing(out, [s.name for s in subjects], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    made = []
    n_runs = sum(len(r) for runs, _ in plan.values() for r in runs.values())
    with progress_bar(n_runs, "targets", unit="run", enabled=progress) as bar:
        for subject in subjects:
            made.append(
                _bold_subject(
                    subject, plan[subject.name], out, sc, covariates, n_tr, tr_s, variant, rounded,
                    sc_source, torch_device, bar.update,
                )
            )  # fmt: skip
    return made


def _bold_subject(
    subject: Subject,
    plan: tuple[dict[str, list], list],
    out: Path,
    sc: np.ndarray,
    covariates: EmpiricalData,
    n_tr: int,
    tr_s: float,
    variant: CostVariant,
    rounded: bool,
    sc_source: str,
    device: torch.device,
    progress: Callable[[float], object],
) -> MadeTarget:
    by_split, unused = plan
    if unused:
        log.warning("%s: %d run(s) not used by any split: %s", subject.folder, len(unused),
                    ", ".join(p.name for p in unused))  # fmt: skip
    regions_from = f"the SC ({sc_source or 'the group SC'}) and the subject's other runs"
    written = {}
    for split, paths in by_split.items():
        runs = []
        for path in paths:
            runs.append(check_run(read_run(path), path, n_tr=n_tr, window=variant.window,
                                  n_regions=len(sc), regions_from=regions_from))  # fmt: skip
        fc, cdf = split_stats(torch.from_numpy(np.stack(runs)), variant, paths, device)
        written[split] = average_runs(fc, cdf, rounded)
        progress(len(paths))
    info = {
        "source": "bold",
        "tr_s": tr_s,
        "n_tr": n_tr,
        "runs": {split: [p.name for p in paths] for split, paths in by_split.items()},
        "unused_runs": [p.name for p in unused],
        "bold_folder": str(subject.folder),
        "sc": sc_source,
        "covariates": str(covariates.source),
        "fcd_rounded": rounded,
        **variant.fcd_settings,
        "fc_split_r": None,
        "made_by": "python -m pmfm.targets",
    }
    fc_mean, fc_r = fc_summary(written)
    info["fc_split_r"] = None if np.isnan(fc_r) else fc_r
    folder = write_target(out / subject.name, written, sc, covariates, info)
    n_runs = {s: len(p) for s, p in by_split.items()}
    return MadeTarget(subject.name, folder, n_runs, len(sc), fc_mean, fc_r)


# -- synthetic subjects ----------------------------------------------------------------------------
def dataset_bases(space: ParamSpace, dataset: str | Path | None, circuit: str = "pmfm") -> list[tuple]:
    """The sets synthetic truths are drawn near: the best valid set of each CMA-ES run of the dataset
    (every repeat valid; a sampler dataset: its 8 best valid sets), best first, as
    (theta (P,), description). Checked to be feasible on ``space``."""
    if dataset is None and circuit != "pmfm":
        raise ConfigError(
            f"the shipped dataset holds pMFM sets; for the {circuit} circuit give synthetic_truth.dataset="
            "<a dataset of that circuit> or synthetic_truth.from_dataset=0"
        )
    folder = Path(dataset).expanduser() if dataset else BUNDLED_DATASET
    try:
        rows = load_dataset(folder)
    except DatasetError as err:
        raise ConfigError(f"synthetic_truth.dataset: {err}") from None
    if rows["theta"].shape[1] != space.dim:
        raise ConfigError(
            f"{folder}: sets of {rows['theta'].shape[1]} values, the parameter space has {space.dim}"
        )
    valid = (rows["n_valid_fc"] == rows["repeats"]) & (rows["n_valid_fcd"] == rows["repeats"])
    valid &= np.isfinite(rows["total"])
    if not valid.any():
        raise ConfigError(f"{folder}: no set with every repeat valid to draw truths near")
    picks = []
    for start in np.unique(rows["start"][valid]):
        if start < 0:
            continue
        idx = np.flatnonzero(valid & (rows["start"] == start))
        best = idx[np.argmin(rows["total"][idx])]
        picks.append((best, f"near CMA-ES run {int(start)}'s best (total {rows['total'][best]:.3f})"))
    if not picks:  # a sampler's dataset: its best rows
        idx = np.flatnonzero(valid)
        picks = [
            (i, f"near dataset row {int(i)} (total {rows['total'][i]:.3f})")
            for i in idx[np.argsort(rows["total"][idx])[:8]]
        ]
    picks.sort(key=lambda p: rows["total"][p[0]])
    theta = torch.as_tensor(rows["theta"][[i for i, _ in picks]], dtype=torch.float64)
    if not bool(space.is_feasible(theta).all()):
        raise ConfigError(
            f"{folder}: its sets are not feasible on this data's basis ({space.n_regions} regions): give "
            "synthetic_truth.dataset=<a dataset made on this data> or synthetic_truth.from_dataset=0"
        )
    return [(theta[j].numpy(), note) for j, (_, note) in enumerate(picks)]


def near_dataset(k: int, share: float) -> int | None:
    """Subject k's place among the subjects drawn near a dataset set (0, 1, ...), or None when its
    truth is a random start: with share p, subject k is one when floor((k + 1) p) > floor(k p)."""
    j = math.floor((k + 1) * share + 1e-9)
    return j - 1 if j > math.floor(k * share + 1e-9) else None


def draw_truth(
    k: int, space: ParamSpace, seed: int, bases: list[tuple], share: float, step: float, draw: int = 0
) -> Truth:
    """Subject k's truth (see the module docstring), from its own generator (seed, k, draw)."""
    rng = np.random.default_rng([seed, TRUTH_STREAM, k, draw])
    j = near_dataset(k, share)
    if j is None:
        return Truth(space.random_start(1, rng)[0].numpy(), "random", "least-squares random start", draw)
    base, note = bases[j % len(bases)]
    u = space.normalise(torch.as_tensor(base)[None])  # (1, P)
    for _ in range(MAX_TRIES):
        theta = space.denormalise(u + step * torch.as_tensor(rng.standard_normal(u.shape)))
        if bool(space.is_feasible(theta)[0]):
            return Truth(theta[0].numpy(), "dataset", f"{note}, step {step:g}", draw)
    raise ConfigError(
        f"no feasible set within {MAX_TRIES} Gaussian steps of {step:g} from the dataset set {note}: "
        "lower synthetic_truth.step"
    )


def synthetic_subjects(
    count: int,
    out: Path,
    data: EmpiricalData,
    simulator: Simulator,
    variant: CostVariant,
    *,
    runs: dict[str, int | None],
    seed: int = 1,
    from_dataset: float = 0.5,
    dataset: str | Path | None = None,
    step: float = 0.002,
    max_draws: int = 10,
    min_reliability: float = 0.0,
    rounded: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    skip: Sequence[str] = (),
) -> list[MadeTarget]:
    """``count`` synthetic subjects ``synthetic_000``, ... in ``out`` (see the module docstring),
    but for those named in ``skip`` (made already: subject k depends only on ``seed`` and k).

    Each is simulated on ``data``'s SC with ``simulator`` (its protocol: TR and TRs of every run),
    ``runs[split]`` runs a split, and averaged as BOLD runs are; the folder gets the truth
    (truth.csv, truth_maps.csv) and target.json with source "synthetic". A truth is drawn again
    (at most ``max_draws`` in all) when a run is invalid or, with ``min_reliability`` > 0, when the
    first two splits' FC correlate below it (a subject whose FC is mostly noise).
    """
    if not 0.0 <= from_dataset <= 1.0:
        raise ConfigError(f"synthetic_truth.from_dataset={from_dataset}: expected a share in [0, 1]")
    if not step > 0:
        raise ConfigError(f"synthetic_truth.step={step}: expected a positive step")
    if simulator.protocol.n_tr < variant.window:
        raise ConfigError(f"the protocol keeps {simulator.protocol.n_tr} TRs, fewer than the FCD window")
    counts: dict[str, int] = {s: int(n) for s, n in runs.items() if n is not None}
    n_runs = sum(counts.values())
    width = max(3, len(str(count - 1)))
    names = [f"synthetic_{k:0{width}d}" for k in range(count)]
    todo = [k for k in range(count) if names[k] not in set(skip)]
    refuse_existing(out, [names[k] for k in todo], overwrite)
    space = simulator.param_space(data)
    needed = any(near_dataset(k, from_dataset) is not None for k in todo)
    bases = dataset_bases(space, dataset, simulator.circuit) if needed else []
    truths = {k: draw_truth(k, space, seed, bases, from_dataset, step) for k in todo}
    noise_seed = NOISE_SEED_BASE + seed
    per_chunk = max(1, sims_per_chunk(simulator, space.n_regions, variant.n_bins) // n_runs)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[int, MadeTarget] = {}
    pending = list(todo)
    with progress_bar(len(todo) * n_runs, "synthetic", enabled=progress) as bar:
        while pending:
            chunk, pending = pending[:per_chunk], pending[per_chunk:]
            theta = torch.as_tensor(np.stack([truths[k].theta for k in chunk]))  # (C, P)
            noise = repeat_noise(len(chunk), n_runs, noise_seed, sample_ids=chunk)  # keys k R + r
            result = simulate(theta.repeat_interleave(n_runs, 0), space, data.sc, simulator, noise,
                              progress=bar.update)  # fmt: skip
            for i, k in enumerate(chunk):
                rows = slice(i * n_runs, (i + 1) * n_runs)
                outcome = _synthetic_subject(
                    k, names[k], truths[k], result.bold[rows], result.valid[rows], out, data, space,
                    simulator, variant, counts, noise_seed, rounded, min_reliability,
                )  # fmt: skip
                if isinstance(outcome, MadeTarget):
                    made[k] = outcome
                    continue
                if truths[k].draw + 1 >= max_draws:
                    raise ConfigError(
                        f"{names[k]}: {max_draws} truths in a row were refused (the last: {outcome}); raise "
                        "synthetic_truth.max_draws or lower synthetic_truth.min_reliability"
                    )
                log.info("%s: %s; drawing another truth", names[k], outcome)
                truths[k] = draw_truth(k, space, seed, bases, from_dataset, step, truths[k].draw + 1)
                bar.total += n_runs
                pending.append(k)
    return [made[k] for k in todo]


def _synthetic_subject(
    k: int,
    name: str,
    truth: Truth,
    bold: torch.Tensor,
    valid: torch.Tensor,
    out: Path,
    data: EmpiricalData,
    space: ParamSpace,
    simulator: Simulator,
    variant: CostVariant,
    counts: dict[str, int],
    noise_seed: int,
    rounded: bool,
    min_reliability: float,
) -> MadeTarget | str:
    """Average and write subject k's runs (R, N, T), or say why its truth is refused (a run invalid,
    or the first two splits' FC correlating below ``min_reliability``)."""
    if not bool(valid.all()):
        return f"{int((~valid).sum())} invalid run(s)"
    n_runs = sum(counts.values())
    keys = [k * n_runs + r for r in range(n_runs)]
    try:
        fc, cdf = split_stats(
            bold, variant, [f"{name} run {r}" for r in range(n_runs)], simulator.torch_device
        )
    except DataError as err:
        return err.problem
    written, by_split, start = {}, {}, 0
    for split, n in counts.items():
        written[split] = average_runs(fc[start : start + n], cdf[start : start + n], rounded)
        by_split[split] = keys[start : start + n]
        start += n
    fc_mean, fc_r = fc_summary(written)
    if min_reliability > 0 and not fc_r >= min_reliability:
        return f"its splits' FC correlate at r = {fc_r:.3f} < {min_reliability:g}"
    p = simulator.protocol
    info = {
        "source": "synthetic",
        "tr_s": p.tr_s,
        "n_tr": p.n_tr,
        "runs": by_split,
        "noise": {"seed": noise_seed, "mode": "independent", "note": "run r of subject k: stream k R + r"},
        "truth": {"kind": truth.kind, "note": truth.note, "draw": truth.draw, "file": "truth.csv"},
        "circuit": simulator.circuit,
        "protocol": dataclasses.asdict(p),
        "simulator": simulator.describe(),
        "sc": str(data.source / f"sc_{data.split}.csv"),
        "covariates": str(data.source),
        "fcd_rounded": rounded,
        **variant.fcd_settings,
        "fc_split_r": None if np.isnan(fc_r) else fc_r,
        "made_by": "python -m pmfm.targets",
    }
    regional = space.regional(torch.as_tensor(truth.theta)[None])
    maps = {space.labels[m]: getattr(regional, m)[0].numpy() for m in ("w", "I", "sigma")}
    truth_row = (space.names, truth.theta)
    folder = write_target(out / name, written, np.asarray(data.sc), data, info, truth_row, maps)
    return MadeTarget(name, folder, dict(counts), space.n_regions, fc_mean, fc_r, truth.note)
