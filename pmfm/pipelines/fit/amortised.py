"""``strategy=amortised``: a bank and its emulator fit every further target with a few simulations.

Per target: the bank's best diverse rows by cost from their stored statistics (no simulation);
CMA-ES against the emulator from the best ``n_starts`` of them (no simulation); a short
simulator-in-the-loop CMA-ES polish from the refined points, the emulator choosing which candidates
are simulated, all targets in one batch a generation. After each polish generation its simulations
join the bank (a part of this run's own, ``polish_<hash>``) and fine-tune the emulator on the bank
and every polish row so far, so the next generation's choice learns from them. The bank's rows and
the polish's candidates go to the usual validation stage. The emulator is a checkpoint
(``strategy.emulator``) or is trained here on the bank and saved in the run folder; the bank parts
a run started with are recorded, so a resumed run ranks, trains and fine-tunes on the same rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pmfm.cost import Costs, fcd_pair_count
from pmfm.datasets.bank import Bank, array_digest, bank_stats, fingerprint
from pmfm.datasets.bank_datamodule import BankDataModule
from pmfm.datasets.store import ShardStore, concat_rows, rows_from
from pmfm.models.emulator import EmulatorModule, fine_tune, mean_loss
from pmfm.pipelines.config import ConfigError
from pmfm.pipelines.emulator import train_on_bank
from pmfm.pipelines.fit import stages
from pmfm.pipelines.fit.state import RunState
from pmfm.pipelines.folders import dataset_folder
from pmfm.pipelines.generation import config_hash, package_versions
from pmfm.search.cmaes import CMAESSettings, GenerationResult, kong_stds
from pmfm.search.emulated import EmulatorObjective, shaped_covariances

log = logging.getLogger(__name__)
EMULATOR_FILE = "emulator.ckpt"  # a bank's own emulator, in its folder (the shipped bank has one)


def amortised_candidates(cfg: DictConfig, state: RunState, out_dir: Path, fits: list, simulator, variant):
    """Each target's candidates for validation (bank rows, then the polish's); the training R."""
    s, first = cfg.strategy, fits[0]
    folder = dataset_folder(cfg, simulator)
    bank = Bank(folder)
    if not state.has("bank_parts"):  # the parts as they are now: later ones (this run's own) stay out
        state.save("bank_parts", [p.name for p in bank.parts()])
    names = state.load("bank_parts")
    rows = bank.load(names)
    for f in fits:
        bank.check(fingerprint(f.train, f.simulator, variant), f"target {f.target.folder}")
    fcd_total = fcd_pair_count(first.simulator.protocol.n_tr, variant.window)
    stats = bank_stats(rows, fcd_total, first.simulator.torch_device)
    if stats.repeats != s.repeats:
        raise ConfigError(f"strategy.repeats={s.repeats}: the polish costs at the bank's R = {stats.repeats}")
    ranked = [
        stages.bank_stage(f.state, rows, stats, f.space, f.train, variant, top_k=s.top_k,
                          diversity=cfg.validation.diversity)
        for f in fits
    ]  # fmt: skip
    if any(len(r.theta) < s.n_starts for r in ranked):
        raise ConfigError(f"strategy.n_starts={s.n_starts}: a target has fewer diverse usable bank rows")
    emulator = _emulator(cfg, state, out_dir, folder, rows, first, variant, fcd_total)
    n_targets, n_starts = len(fits), int(s.n_starts)
    trains = [f.train for f in fits]

    def target_of(popsize: int):
        return lambda keys: (keys // popsize) % (n_targets * n_starts) // n_starts

    starts = torch.cat([r.theta[:n_starts] for r in ranked])  # (T n, P) the best rows, best first
    refine = CMAESSettings(**{str(k): v for k, v in s.refine.items()})
    objective = EmulatorObjective(first.space, emulator, trains, variant, target_of(refine.popsize))
    step = s.get("shape_step")
    shaped = _shaped(first.space, emulator, starts, refine, step)
    refined = stages.refine_stage(state, objective, starts, refine, seed=int(cfg.seed), covariances=shaped)
    polish = CMAESSettings(**{str(k): v for k, v in s.cmaes.items()})
    prescreen = EmulatorObjective(first.space, emulator, trains, variant, target_of(polish.popsize))
    part = _polish_part(cfg, folder, names, fits, polish) if s.join_bank else None
    encode = BankDataModule(first.space, rows=rows, n_bins=variant.n_bins).encode
    learner = PolishLearner(
        emulator, encode, encode(_replayed(rows, int(s.fine_tune.bank_rows), int(cfg.seed))), part,
        popsize=polish.popsize, starts=n_targets * n_starts,
        generations=polish.max_generations, repeats=stats.repeats, epochs=int(s.fine_tune.epochs),
        lr=float(s.fine_tune.lr), seed=int(cfg.seed),
    )  # fmt: skip
    polished = stages.targets_search(
        state, first.space, trains, first.simulator, variant, n_starts=n_starts, repeats=int(s.repeats),
        settings=polish, seed=int(cfg.seed), prescreen=prescreen, simulate_top=int(s.simulate_top),
        progress=cfg.progress, starts=refined, name="polish", learner=learner,
        covariances=_shaped(first.space, emulator, refined, polish, step),
    )  # fmt: skip
    for r in learner.report:
        log.info("polish generation %d: emulator loss on its %d new rows %.3f -> %.3f (fine-tuned)", *r)
    return [_joined(a, b) for a, b in zip(ranked, polished, strict=True)], stats.repeats


def _shaped(space, emulator: EmulatorModule, starts: torch.Tensor, settings: CMAESSettings, step):
    """(S, P, P) initial covariances of CMA-ES at ``starts`` shaped by the emulator's statistics metric
    (``strategy.shape_step``; None: Kong's diagonal), no direction stepping further than the median
    of Kong's steps (``sigma0`` x his standard deviations, in normalised units)."""
    if step is None:
        return None
    box = torch.as_tensor(space.box, dtype=torch.float64)
    width = box[:, 1] - box[:, 0]  # (P,)
    kong = torch.from_numpy(np.stack([kong_stds(t) for t in starts.numpy()])) / width  # (S, P) normalised
    cap = settings.sigma0 * kong.median(dim=1).values
    return shaped_covariances(space, emulator, starts, step=float(step), cap=cap) / settings.sigma0**2


def _polish_part(cfg, folder: Path, names: list[str], fits: list, polish: CMAESSettings) -> ShardStore:
    """The bank part this run's polish joins: named by the parts it started from, the seed, the
    strategy and the targets, so a resumed run finds its own and another run makes another."""
    identity = {
        "parts": names,
        "seed": int(cfg.seed),
        "strategy": OmegaConf.to_container(cfg.strategy, resolve=True),
        "targets": [[f.target.name, array_digest(f.train.fc)] for f in fits],
    }
    made = {
        "dataset": {"name": "polish", "num_shards": polish.max_generations},
        "dim": fits[0].space.dim,
        "polish": identity,
    }
    part = ShardStore(folder / f"polish_{config_hash(made)[:8]}")
    part.claim(made, config_hash(made), package_versions())
    return part


def _emulator(
    cfg, state: RunState, out_dir: Path, folder: Path, rows, first, variant, fcd_total
) -> EmulatorModule:
    """The configured checkpoint, else the bank's own (``<bank>/emulator.ckpt``, as the shipped bank
    has), else one trained on the bank's rows (once: saved as <run>/emulator.ckpt)."""
    s = cfg.strategy
    if s.emulator and not Path(s.emulator).is_file():
        raise ConfigError(f"strategy.emulator={s.emulator}: no such checkpoint")
    path = Path(s.emulator) if s.emulator else folder / EMULATOR_FILE
    path = path if path.is_file() else out_dir / EMULATOR_FILE
    if path.is_file():
        log.info("emulator: %s", path)
        return EmulatorModule.load_from_checkpoint(path, map_location="cpu").eval()
    tic = time.perf_counter()
    train_on_bank(
        rows, first.space, first.train, variant, fcd_total, cfg.model,
        epochs=int(s.train_epochs), seed=int(cfg.seed), save_to=path, batch_size=int(s.train_batch_size),
        progress=cfg.progress,
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


def _replayed(rows: dict[str, np.ndarray], n: int, seed: int) -> dict[str, np.ndarray]:
    """At most ``n`` of the bank's rows, drawn by ``seed``: what fine-tuning replays beside the polish's."""
    if len(rows["theta"]) <= n:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows["theta"]), n, replace=False))
    return {k: v[keep] for k, v in rows.items()}


def _valid(c: stages.Candidates) -> np.ndarray:
    return np.zeros(len(c.theta)) if c.train_valid is None else np.asarray(c.train_valid)


class PolishLearner:
    """Each polish generation's simulated sets: written as a shard of the bank part ``part`` (None:
    kept out of the bank), then ``epochs`` passes of fine-tuning the emulator on bank rows
    (``bank``, encoded) and every polish row so far, in an order fixed by the seed and generation."""

    def __init__(self, emulator: EmulatorModule, encode, bank: dict, part: ShardStore | None, *,
                 popsize: int, starts: int, generations: int, repeats: int, epochs: int, lr: float,
                 seed: int):  # fmt: skip
        self.emulator, self.encode, self.bank, self.part = emulator, encode, bank, part
        self.popsize, self.starts, self.generations, self.repeats = popsize, starts, generations, repeats
        self.epochs, self.lr, self.seed = epochs, lr, seed
        self.rows: list[dict[str, np.ndarray]] = []  # a generation's simulated sets each
        self.report: list[tuple] = []  # (generation, new rows, loss on them before, after) each

    def after(self, result: GenerationResult) -> None:
        new = self._rows(result)
        self.rows.append(new)
        if self.part is not None:
            self.part.write_shard(result.generation - 1, new, {"generation": result.generation})
            self.part.update_manifest(self.generations)
        if not self.epochs or not len(new["theta"]):
            return
        fresh = self.encode(new)
        before = mean_loss(self.emulator, fresh)
        seen = concat_rows(self.rows, new["theta"].shape[1])
        batch = {k: torch.cat([self.bank[k], v]) for k, v in self.encode(seen).items()}
        seed = int(np.random.SeedSequence([self.seed, result.generation]).generate_state(1)[0])
        fine_tune(self.emulator, batch, epochs=self.epochs, lr=self.lr, seed=seed)
        self.report.append((result.generation, len(fresh["x"]), before, mean_loss(self.emulator, fresh)))

    def _rows(self, result: GenerationResult) -> dict[str, np.ndarray]:
        """The generation's simulated sets as bank rows (sample ids: the search's own)."""
        per_start = []
        for sg in result.starts:
            if not len(sg.candidates):
                continue
            chosen = np.flatnonzero(sg.terms.get("simulated", torch.ones(len(sg.total), dtype=torch.bool)))
            t = {k: v[chosen] for k, v in sg.terms.items()}
            costs = Costs(
                t["fc_cost"], t["fc_l1"], t["ks"], sg.total[chosen], t["n_valid_fc"], t["n_valid_fcd"],
                repeats=self.repeats, mean_rate=t.get("mean_rate"), n_valid_rate=t.get("n_valid_rate"),
            )  # fmt: skip
            keys = ((result.generation - 1) * self.starts + sg.start) * self.popsize + chosen
            per_start.append(rows_from(
                sg.candidates[chosen], costs, t, sample_id=keys, shard=result.generation - 1,
                start=sg.start, generation=result.generation - 1,
            ))  # fmt: skip
        return concat_rows(per_start, self.emulator.hparams["n_params"])

    def state_dict(self) -> dict:
        return {
            "emulator": {k: v.clone() for k, v in self.emulator.state_dict().items()},
            "rows": self.rows,
            "report": self.report,
        }

    def load_state_dict(self, state: dict) -> None:
        self.emulator.load_state_dict(state["emulator"])
        self.rows, self.report = list(state["rows"]), list(state["report"])
