"""``strategy=amortised``: a bank and its emulator fit every further target with a few simulations.

Per target: the bank's best diverse rows by cost from their stored statistics (no simulation);
CMA-ES against the emulator from the best ``n_starts`` of them (no simulation); a short
simulator-in-the-loop CMA-ES polish from the refined points, the emulator choosing which candidates
are simulated, all targets in one batch a generation. The bank's rows and the polish's candidates go
to the usual validation stage. The emulator is a checkpoint (``strategy.emulator``) or is trained
here on the bank and saved in the run folder, so a resumed run uses the same one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.cost import fcd_pair_count
from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.models.emulator import EmulatorModule
from pmfm.pipelines.config import ConfigError
from pmfm.pipelines.emulator import train_on_bank
from pmfm.pipelines.fit import stages
from pmfm.pipelines.fit.state import RunState
from pmfm.pipelines.folders import dataset_folder
from pmfm.search.cmaes import CMAESSettings
from pmfm.search.emulated import EmulatorObjective


def amortised_candidates(cfg: DictConfig, state: RunState, out_dir: Path, fits: list, simulator, variant):
    """Each target's candidates for validation (bank rows, then the polish's); the training R."""
    s, first = cfg.strategy, fits[0]
    folder = dataset_folder(cfg, simulator)
    bank = Bank(folder)
    rows = bank.load()
    for f in fits:
        bank.check(fingerprint(f.train, f.simulator, variant), f"target {f.target.folder}")
    fcd_total = fcd_pair_count(first.simulator.protocol.n_tr, variant.window)
    stats = bank_stats(rows, fcd_total)
    if stats.repeats != s.repeats:
        raise ConfigError(f"strategy.repeats={s.repeats}: the polish costs at the bank's R = {stats.repeats}")
    ranked = [
        stages.bank_stage(f.state, rows, stats, f.space, f.train, variant, top_k=s.top_k,
                          diversity=cfg.validation.diversity)
        for f in fits
    ]  # fmt: skip
    if any(len(r.theta) < s.n_starts for r in ranked):
        raise ConfigError(f"strategy.n_starts={s.n_starts}: a target has fewer diverse usable bank rows")
    emulator = _emulator(cfg, state, out_dir, folder, first, variant, fcd_total)
    n_targets, n_starts = len(fits), int(s.n_starts)
    trains = [f.train for f in fits]

    def target_of(popsize: int):
        return lambda keys: (keys // popsize) % (n_targets * n_starts) // n_starts

    starts = torch.cat([r.theta[:n_starts] for r in ranked])  # (T n, P) the best rows, best first
    refine = CMAESSettings(**{str(k): v for k, v in s.refine.items()})
    objective = EmulatorObjective(first.space, emulator, trains, variant, target_of(refine.popsize))
    refined = stages.refine_stage(state, objective, starts, refine, seed=int(cfg.seed))
    polish = CMAESSettings(**{str(k): v for k, v in s.cmaes.items()})
    prescreen = EmulatorObjective(first.space, emulator, trains, variant, target_of(polish.popsize))
    polished = stages.targets_search(
        state, first.space, trains, first.simulator, variant, n_starts=n_starts, repeats=int(s.repeats),
        settings=polish, seed=int(cfg.seed), prescreen=prescreen, simulate_top=int(s.simulate_top),
        progress=cfg.progress, starts=refined, name="polish",
    )  # fmt: skip
    return [_joined(a, b) for a, b in zip(ranked, polished, strict=True)], stats.repeats


def _emulator(cfg, state: RunState, out_dir: Path, folder: Path, first, variant, fcd_total) -> EmulatorModule:
    """The configured checkpoint, or one trained on the bank (once: saved as <run>/emulator.ckpt)."""
    s = cfg.strategy
    path = Path(s.emulator) if s.emulator else out_dir / "emulator.ckpt"
    if s.emulator and not path.is_file():
        raise ConfigError(f"strategy.emulator={path}: no such checkpoint")
    if path.is_file():
        return EmulatorModule.load_from_checkpoint(path, map_location="cpu").eval()
    tic = time.perf_counter()
    train_on_bank(
        folder, first.space, first.train, variant, fcd_total, cfg.model,
        epochs=int(s.train_epochs), seed=int(cfg.seed), save_to=path, progress=cfg.progress,
    )  # fmt: skip
    state.record(
        "emulator", wall_s=time.perf_counter() - tic, note=f"trained on the bank, {s.train_epochs} epochs"
    )
    return EmulatorModule.load_from_checkpoint(path, map_location="cpu").eval()


def _joined(bank: stages.Candidates, polish: stages.Candidates) -> stages.Candidates:
    """The bank's candidates then the polish's (starts of the polish numbered after the bank's)."""
    label = f"polish: {polish.per_generation_label}"
    return stages.Candidates(
        theta=torch.cat([bank.theta, polish.theta]),
        start=np.concatenate([bank.start, polish.start + int(bank.start.max(initial=0))]),
        generation=np.concatenate([bank.generation, polish.generation]),
        train=np.concatenate([bank.train, polish.train]),
        per_generation=polish.per_generation,
        per_generation_label=label,
        train_valid=np.concatenate([_valid(bank), _valid(polish)]),
    )


def _valid(c: stages.Candidates) -> np.ndarray:
    return np.zeros(len(c.theta)) if c.train_valid is None else np.asarray(c.train_valid)
