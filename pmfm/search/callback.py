"""Search against the surrogate while it trains, every candidate re-simulated (a Lightning callback).

After training (and, with ``every_n_epochs``, after every n-th validation epoch) the callback runs the
configured search (``search=cmaes`` or ``search=adam``) against the module being trained, re-simulates
its top-k candidates with the real simulator under the settings the surrogate's dataset was made
with (same data split, protocol, cost variant and R), and logs:

- ``search/pred_best``: predicted total of the best predicted candidate;
- ``search/sim_best``: the lowest re-simulated total among the candidates (at the dataset's R);
- ``search/sim_of_pred_best``: the re-simulated total of the best predicted candidate;
- a predicted-vs-simulated table (``search/candidates_final.csv`` in the run folder,
  ``candidates_epochNNN.csv`` for periodic searches, and a logger table where the logger has one)
  and a convergence figure (``search/convergence_final.png``).

The values also go to ``trainer.callback_metrics`` so the training script's metrics.json has them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pmfm.cost import KONG2021, CostVariant, cost_variant
from pmfm.data import load
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamSpace
from pmfm.plots import plot_search
from pmfm.search.runner import SearchSettings, surrogate_search
from pmfm.sim.protocol import SimProtocol

log = logging.getLogger(__name__)
TABLE_COLUMNS = (
    "candidate",
    "start",
    "step",
    "pred_total",
    "pred_p_valid",
    "sim_fc_cost",
    "sim_ks",
    "sim_total",
)


class SurrogateSearchCallback(L.Callback):
    """Search the surrogate, re-simulate the top-k, log predicted vs simulated.

    Args:
        space: the parameter space (the training data's basis).
        data: the empirical split the dataset was costed against.
        simulator: the simulator the dataset was made with (protocol, precision, device).
        settings: the search (``SearchSettings``).
        repeats: R of the re-simulations (the dataset's R).
        variant: the dataset's cost variant.
        n_starts, top_k, seed: search starts, candidates re-simulated, seed of starts, search and noise.
        every_n_epochs: also search after every n-th validation epoch (0: only after training).
        out_dir: where tables and figures go (default: the trainer's default_root_dir).
    """

    def __init__(
        self,
        space: ParamSpace,
        data,
        simulator,
        settings: SearchSettings,
        *,
        repeats: int = 3,
        variant: CostVariant = KONG2021,
        n_starts: int = 8,
        top_k: int = 3,
        seed: int = 0,
        every_n_epochs: int = 0,
        out_dir: str | Path | None = None,
    ):
        super().__init__()
        if top_k < 1 or n_starts < 1 or repeats < 1 or every_n_epochs < 0:
            raise ValueError("need top_k, n_starts, repeats >= 1 and every_n_epochs >= 0")
        self.space, self.data, self.simulator, self.variant = space, data, simulator, variant
        self.settings = settings
        self.repeats, self.n_starts, self.top_k, self.seed = repeats, n_starts, top_k, seed
        self.every_n_epochs = every_n_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.last: dict | None = None  # metrics, table and paths of the last search
        self.simulations = 0  # re-simulations run by this callback
        self.evaluations = 0  # surrogate evaluations run by this callback

    @classmethod
    def for_dataset(
        cls,
        folder,
        data_path,
        simulator,
        space: ParamSpace,
        settings: SearchSettings,
        *,
        variant: CostVariant = KONG2021,
        split: str = "train",
        repeats: int = 3,
        **kwargs,
    ):
        """A callback that re-simulates as the dataset in ``folder`` was made: its data split, protocol,
        precision, cost variant and R, read from its manifest.json. Entries the manifest lacks come
        from ``simulator``, ``variant``, ``split`` and ``repeats``; ``kwargs`` go to the constructor."""
        manifest = Path(folder) / "manifest.json"
        made = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
        sim = made.get("simulator", {})
        protocol = SimProtocol(
            **{
                f.name: sim.get(f.name, getattr(simulator.protocol, f.name))
                for f in dataclasses.fields(SimProtocol)
            }
        )
        dtype = sim.get("dtype", simulator.dtype)
        simulator = dataclasses.replace(simulator, protocol=protocol, dtype=dtype, noise="independent")
        variant = cost_variant(made.get("cost", {}).get("variant", variant.name))
        split = made.get("data", {}).get("split", split)
        data = load(data_path, split, n_tr=protocol.n_tr, window=variant.window, n_bins=variant.n_bins)
        repeats = int(made.get("dataset", {}).get("repeats", repeats))
        return cls(space, data, simulator, settings, repeats=repeats, variant=variant, **kwargs)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.every_n_epochs or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.search(trainer, pl_module, f"epoch{trainer.current_epoch:03d}")

    def on_train_end(self, trainer, pl_module):
        self.search(trainer, pl_module, "final")

    def search(self, trainer, pl_module, tag: str = "final") -> dict | None:
        """Search, re-simulate, log; returns the logged metrics (None off the global-zero rank)."""
        if not trainer.is_global_zero:
            return None
        outcome = surrogate_search(
            pl_module, self.space, self.settings, n_starts=self.n_starts, top_k=self.top_k, seed=self.seed
        )
        costs = evaluate_params(
            outcome.theta,
            self.space,
            self.data,
            self.simulator,
            repeats=self.repeats,
            seed=self.seed,
            variant=self.variant,
        ).costs
        self.simulations += len(outcome.theta) * self.repeats
        self.evaluations += outcome.evaluations
        sim_total = costs.total.numpy()  # (K,)
        metrics = {
            "search/pred_best": float(outcome.predicted["total"][0]),
            "search/sim_best": float(np.min(sim_total)),
            "search/sim_of_pred_best": float(sim_total[0]),
            "search/simulations": float(len(outcome.theta) * self.repeats),
            "search/evaluations": float(outcome.evaluations),
        }
        table = [
            [
                k + 1,
                int(outcome.start[k]) + 1,
                int(outcome.step[k]),
                float(outcome.predicted["total"][k]),
                float(outcome.predicted["p_valid"][k]),
                float(costs.fc_cost[k]),
                float(costs.ks[k]),
                float(sim_total[k]),
            ]
            for k in range(len(sim_total))
        ]
        paths = self._write(trainer, outcome, table, sim_total, tag)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if hasattr(logger, "log_table"):
                logger.log_table(key="search/candidates", columns=list(TABLE_COLUMNS), data=table)
            if hasattr(logger, "log_image"):
                logger.log_image(key="search/convergence", images=[str(paths["figure"])])
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        log.info(
            "surrogate search (%s, R = %d): predicted best %.4f, re-simulated best %.4f",
            self.settings.name,
            self.repeats,
            metrics["search/pred_best"],
            metrics["search/sim_best"],
        )
        self.last = {"metrics": metrics, "table": table, "theta": outcome.theta, **paths}
        return metrics

    def _write(self, trainer, outcome, table, sim_total, tag: str) -> dict[str, Path]:
        folder = (self.out_dir or Path(trainer.default_root_dir)) / "search"
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"candidates_{tag}.csv"
        header = ",".join((*TABLE_COLUMNS, *self.space.names))
        lines = [header] + [
            ",".join(
                [
                    *(f"{v:.8g}" if isinstance(v, float) else str(v) for v in row),
                    *(f"{x:.17g}" for x in theta),
                ]
            )
            for row, theta in zip(table, outcome.theta.tolist(), strict=True)
        ]
        csv.write_text("\n".join(lines) + "\n")
        figure = plot_search(
            outcome.history,
            outcome.predicted["total"],
            sim_total,
            folder / f"convergence_{tag}.png",
            f"{self.settings.name} against the surrogate, {self.n_starts} starts; "
            f"re-simulated at R = {self.repeats}",
        )
        return {"table_path": csv, "figure": figure}
