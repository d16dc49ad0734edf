"""The surrogate as a LightningModule: a thin system around a plain network (docs/surrogates.md).

The network maps normalised parameters u (B, P) in [0, 1] to raw outputs z (B, 1 + T): z[:, 0] is
the validity logit, z[:, 1 + i] the unbounded score of cost term ``terms[i]``, bounded by a scaled
sigmoid to its range (``COST_RANGES``) so that search cannot drive a prediction outside the costs
the simulator can produce. An ensemble returns (K, B, 1 + T); its members are trained jointly on
the same batches (summed losses) and predict a mean and a spread.

Loss: binary cross-entropy on validity over every row, plus the MSE of each bounded cost term over
the valid rows only (invalid rows hold a placeholder cost such as 10, or NaN).

Validation and test metrics (``pmfm.models.metrics``) are those of the whole split: under DDP each
process's predictions are gathered, and rows the sampler repeated to even out the processes are
counted once (by the batches' ``index``), so the figures do not depend on the number of processes.

Built from primitive hyperparameters only (lists, not arrays), so
``SurrogateModule.load_from_checkpoint(path)`` works without Hydra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.utilities.distributed import gather_all_tensors

from pmfm.data import load_bundled
from pmfm.models.metrics import surrogate_report
from pmfm.models.networks import build_network
from pmfm.params import Bounds, ParamSpace

COST_RANGES = {  # bounds of each predicted cost term (scaled sigmoid: lo + (hi - lo) * sigmoid(z))
    "fc_cost": (0.0, 2.0),  # 1 - correlation of Fisher-z FC, in [0, 2]
    "ks": (0.0, 1.0),  # KS distance between FCD CDFs, in [0, 1]
    "fc_l1": (0.0, 2.0),  # |mean sim FC - mean emp FC|, FC in [-1, 1]
}
REQUIRED_TERMS = ("fc_cost", "ks")  # the total always includes these two


class SurrogateModule(L.LightningModule):
    """Predicts validity and cost terms of simulations from normalised parameters.

    Args:
        network: a name known to ``pmfm.models.networks.build_network``.
        network_hparams: keyword arguments of that network (primitives).
        terms: cost terms to predict, a subset of ``COST_RANGES`` holding fc_cost and ks.
        output_names: the columns of the batches' ``y`` (the DataModule's outputs), to find each term.
        target_names: the name of ``output_names`` in checkpoints that predate it.
        box: (P, 2) [low, high] of the normalised box (``ParamSpace.box``); default: the bundled data's.
        basis: (N, 3) parameter basis [1, myelin, gradient]; default: the bundled data's.
        sc: (N, N) structural connectivity for networks that use it; default: the bundled train SC.
        use_l1_in_total: the total adds fc_l1 (the DELSSOME cost variant; needs "fc_l1" in terms).
        lr, weight_decay: AdamW settings.
        validity_weight: weight of the validity loss beside the cost loss.
        max_epochs_hint: cosine schedule length when the trainer does not give max_epochs.
        circuit: the circuit model the parameters belong to ("pmfm" or "fic", docs/fic.md).
        bounds: the regional bounds of the parameter space (``dataclasses.asdict(Bounds)``); None:
            the circuit's defaults. With ``basis`` and ``circuit`` they rebuild the space the
            surrogate was trained on (:meth:`param_space`), so coefficients are never misread.
    """

    cost_lo: torch.Tensor  # (T,) lower bound of each term (buffer)
    cost_span: torch.Tensor  # (T,) hi - lo of each term (buffer)

    def __init__(
        self,
        network: str = "mlp",
        network_hparams: dict | None = None,
        terms: Sequence[str] = REQUIRED_TERMS,
        output_names: Sequence[str] = ("valid", *REQUIRED_TERMS),
        box: Sequence[Sequence[float]] | None = None,
        basis: Sequence[Sequence[float]] | None = None,
        sc: Sequence[Sequence[float]] | None = None,
        use_l1_in_total: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validity_weight: float = 1.0,
        max_epochs_hint: int = 100,
        circuit: str = "pmfm",
        bounds: Mapping[str, Sequence[float]] | None = None,
        target_names: Sequence[str] | None = None,
    ):
        super().__init__()
        output_names = output_names if target_names is None else target_names
        terms, output_names = [str(t) for t in terms], [str(t) for t in output_names]
        _check_terms(terms, output_names, use_l1_in_total)
        if box is None or basis is None or sc is None:
            bundled = bundled_geometry()
            basis = bundled["basis"] if basis is None else basis
            box = ParamSpace(np.asarray(basis, dtype=np.float64)).box.tolist() if box is None else box
            sc = bundled["sc"] if sc is None else sc
        # primitives only (plain lists and dicts, never arrays or DictConfigs), so that checkpoints load
        # anywhere; not sent to loggers (the training script logs its config; sc would swamp it)
        network_hparams = _plain(network_hparams or {})
        box, basis, sc = _plain(box), _plain(basis), _plain(sc)
        bounds = None if bounds is None else _plain(bounds)
        self.save_hyperparameters(logger=False)
        self.terms = tuple(terms)
        self.term_columns = [output_names.index(t) for t in terms]  # column of each term in y
        self.valid_column = output_names.index("valid") if "valid" in output_names else None
        self.total_terms = tuple(
            t for t in terms if t in REQUIRED_TERMS or (t == "fc_l1" and use_l1_in_total)
        )
        ranges = torch.tensor([COST_RANGES[t] for t in terms], dtype=torch.float32)  # (T, 2)
        self.register_buffer("cost_lo", ranges[:, 0], persistent=False)
        self.register_buffer("cost_span", ranges[:, 1] - ranges[:, 0], persistent=False)
        self.box = torch.tensor(box, dtype=torch.float64)  # (P, 2), normalises raw parameters in predict()

        geometry: dict[str, Any] = {"box": box, "basis": basis, "sc": sc}  # plain nested lists
        self.net = build_network(
            network,
            n_outputs=1 + len(terms),
            **geometry,
            **network_hparams,
        )
        self.is_ensemble = bool(getattr(self.net, "is_ensemble", False))
        # (pred, true, valid) of the last eval epoch, the whole split (every process's rows, each once)
        self.last_eval: tuple[dict, dict, torch.Tensor] | None = None
        self._eval_batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # (index, columns) per batch
        self._eval_rows = 0  # rows seen this eval epoch (the index of batches without one)

    def param_space(self):
        """The parameter space the surrogate was trained on (circuit, basis and bounds of training)."""
        bounds = self.hparams.get("bounds")
        bounds = None if bounds is None else Bounds(**{k: tuple(v) for k, v in bounds.items()})
        basis = np.asarray(self.hparams["basis"], dtype=np.float64)
        return ParamSpace(basis, bounds=bounds, circuit=self.hparams.get("circuit", "pmfm"))

    # -- outputs --------------------------------------------------------------------------------
    def heads(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs (..., B, 1 + T) -> bounded terms, total, p_valid and valid_logit, each (..., B)."""
        bounded = self.bound(z[..., 1:])  # (..., B, T)
        out = {t: bounded[..., i] for i, t in enumerate(self.terms)}
        out["total"] = self.total(out)
        out["p_valid"] = torch.sigmoid(z[..., 0])
        out["valid_logit"] = z[..., 0]
        return out

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        """Unbounded cost scores (..., T) -> costs in their ranges: lo + (hi - lo) * sigmoid(score)."""
        return self.cost_lo + self.cost_span * torch.sigmoid(scores)

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """fc_cost + ks (+ fc_l1 with use_l1_in_total), elementwise."""
        return torch.stack([terms[t] for t in self.total_terms]).sum(0)

    @property
    def conditioned(self) -> bool:
        """Whether the network reads a subject's or group's condition (``model=transformer_cond``)."""
        hp = self.hparams["network_hparams"]
        return hp.get("condition") is not None or hp.get("cond_dim", 0) > 0

    def forward(self, u: torch.Tensor, condition: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Normalised parameters (B, P) -> dict of (B,) predictions.

        Keys: each term, "total", "p_valid", "valid_logit"; for an ensemble the mean over members
        (the total summed per member first) and "<key>_std", the members' spread (population std),
        for each term, the total and p_valid. ``condition`` ((C,) or (B, C)): the subject or group
        to score against, for a conditioned network (``model=transformer_cond``); None: the one
        it was trained on.
        """
        if condition is None:
            z = self.net(u)
        elif self.conditioned:
            z = self.net(u, torch.as_tensor(condition, device=u.device))
        else:
            raise ValueError(
                f"condition given, but this {self.hparams['network']} surrogate is not conditioned "
                "(train one with model=transformer_cond)"
            )
        out = self.heads(z)
        return self._ensemble_summary(out) if self.is_ensemble else out

    def predict_normalised(self, u, grad: bool = False, condition=None) -> dict[str, torch.Tensor]:
        """Predictions (eval mode) for normalised parameters (B, P) on any device.

        Returns each term, "total", "p_valid" (and "<key>_std" for ensembles), each (B,) on u's
        device. With ``grad=True`` the graph is kept, so the predictions can be differentiated with
        respect to u (gradient-based search). ``condition``: as in :meth:`forward`.
        """
        u = torch.as_tensor(u)
        device = u.device
        dtype = next(self.parameters()).dtype
        was_training = self.training
        self.eval()
        try:
            with torch.set_grad_enabled(grad):
                out = self(u.to(device=self.device, dtype=dtype), condition)
        finally:
            self.train(was_training)
        return {k: v.to(device) for k, v in out.items() if k != "valid_logit"}

    @torch.no_grad()
    def predict(self, params, condition=None) -> dict[str, torch.Tensor]:
        """Predictions for RAW parameters (B, P) (in docs/parameters.md order), normalised by the stored box.

        ``condition``: for a conditioned surrogate (``model=transformer_cond``), the subject or group
        to score against, :func:`pmfm.models.conditioning.empirical_condition` of its data, (C,) or
        (B, C); None scores against the training data.
        """
        theta = torch.as_tensor(params)
        theta = theta[None] if theta.ndim == 1 else theta
        if theta.ndim != 2 or theta.shape[1] != len(self.box):
            raise ValueError(
                f"expected raw parameters of shape (B, {len(self.box)}), got {tuple(theta.shape)}"
            )
        box = self.box.to(theta.device)
        u = (theta.to(torch.float64) - box[:, 0]) / (box[:, 1] - box[:, 0])  # as ParamSpace.normalise
        return self.predict_normalised(u, condition=condition)

    # -- loss -----------------------------------------------------------------------------------
    def valid_target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B,) bool validity of each row: the batch's "valid", else the "valid" column of y."""
        if "valid" in batch:
            return batch["valid"].bool()
        if self.valid_column is None:
            raise KeyError('batch has no "valid" and output_names no "valid" column')
        return batch["y"][:, self.valid_column] > 0.5

    def losses(self, z: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss of raw outputs z (B, 1 + T), or (K, B, 1 + T) for an ensemble (members summed).

        loss_valid: BCE-with-logits of validity over all rows; loss_cost: sum over terms of the MSE of
        the bounded prediction over the valid rows with a finite target (0 when there are none);
        loss = validity_weight * loss_valid + loss_cost.
        """
        valid = self.valid_target(batch)  # (B,)
        target = batch["y"][:, self.term_columns].to(z.dtype)  # (B, T)
        mask = valid[:, None] & torch.isfinite(target)  # (B, T)
        target = torch.where(mask, target, torch.zeros_like(target))  # no NaN reaches the gradient
        bounded = self.bound(z[..., 1:])  # (..., B, T)
        sq = (bounded - target) ** 2 * mask  # (..., B, T)
        loss_cost = (sq.sum(-2) / mask.sum(0).clamp(min=1)).sum(-1)  # (...,): summed over terms
        logits = z[..., 0]
        loss_valid = F.binary_cross_entropy_with_logits(
            logits, valid.to(z.dtype).expand_as(logits), reduction="none"
        ).mean(-1)  # (...,)
        loss_valid, loss_cost = loss_valid.sum(), loss_cost.sum()  # members summed (ensembles)
        loss = self.hparams["validity_weight"] * loss_valid + loss_cost
        return {"loss": loss, "loss_valid": loss_valid, "loss_cost": loss_cost}

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        losses = self.losses(self.net(batch["x"]), batch)
        for name, value in losses.items():
            self.log(
                f"train/{name}", value, prog_bar=name == "loss", on_epoch=True, batch_size=len(batch["x"])
            )
        return losses["loss"]

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch["x"] if isinstance(batch, Mapping) else batch)

    def on_validation_epoch_start(self):
        self._eval_batches, self._eval_rows = [], 0

    def on_test_epoch_start(self):
        self._eval_batches, self._eval_rows = [], 0

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def _eval_step(self, batch, stage: str) -> None:
        z = self.net(batch["x"])
        loss = self.losses(z, batch)["loss"].detach()
        n = len(batch["x"])
        pred = self.heads(z.detach())
        if self.is_ensemble:
            pred = self._ensemble_summary(pred)
        index = batch.get("index")
        if index is None:  # a loader of one's own: rows in the order seen, each (padding too) counted
            trainer = self._trainer
            world, rank = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
            index = (self._eval_rows + torch.arange(n, device=z.device)) * world + rank
        self._eval_rows += n
        # per row: validity, the batch's loss, the predictions, the simulated terms
        columns = [self.valid_target(batch), loss.expand(n), *(pred[k] for k in self._eval_keys())]
        columns += [batch["y"][:, c] for c in self.term_columns]
        self._eval_batches.append((index.reshape(-1).long(), torch.stack([c.float() for c in columns], 1)))

    def _eval_keys(self) -> list[str]:
        """The predictions an eval epoch keeps: the outputs of :meth:`forward`, in a fixed order."""
        keys = [*self.terms, "total", "p_valid", "valid_logit"]
        return keys + [f"{k}_std" for k in (*self.terms, "total", "p_valid")] if self.is_ensemble else keys

    def _ensemble_summary(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Members' outputs (K, B) -> their mean (B,) and, for terms, total and p_valid, spread (B,)."""
        mean = {k: v.mean(0) for k, v in out.items()}
        for key in (*self.terms, "total", "p_valid"):
            mean[f"{key}_std"] = out[key].std(0, correction=0)
        return mean

    def _eval_epoch_end(self, stage: str) -> None:
        """The epoch's metrics over the whole split: every process's rows, each row once.

        ``<stage>/loss`` is the mean over rows of their batch's loss (the batch-size weighted mean of
        the batch losses); the others come from :func:`pmfm.models.metrics.surrogate_report`.
        """
        batches, self._eval_batches = self._eval_batches, []
        keys = self._eval_keys()
        width = 2 + len(keys) + len(self.terms)
        index = torch.cat([b[0] for b in batches]) if batches else torch.zeros(0, dtype=torch.long)
        rows = torch.cat([b[1] for b in batches]) if batches else torch.zeros(0, width)
        index, rows = self._gather(index.to(self.device), rows.to(self.device))
        if not len(index):
            return
        order = torch.argsort(index, stable=True)  # by dataset row: independent of the process count
        index, rows = index[order], rows[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]  # a row the sampler repeated (padding) counts once
        rows = rows[first]
        valid = rows[:, 0].bool()
        pred = {k: rows[:, 2 + i] for i, k in enumerate(keys)}
        true = {t: rows[:, 2 + len(keys) + i] for i, t in enumerate(self.terms)}
        true["total"] = self.total(true)
        self.last_eval = (pred, true, valid)
        metrics = {"loss": float(rows[:, 1].double().mean())} | surrogate_report(pred, true, valid)
        for name, value in metrics.items():
            if name == "auroc_valid" and np.isnan(value):
                continue  # one class only: undefined
            # every process holds the same whole-split value: "max" passes it on unchanged (a mean
            # might move it by a rounding error) and keeps Lightning's sync_dist advice quiet
            bar = name == "loss" and stage == "val"
            self.log(f"{stage}/{name}", value, prog_bar=bar, sync_dist=True, reduce_fx="max")

    def _gather(self, index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's rows, or under DDP every process's (on the CPU)."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            index, rows = (torch.cat(gather_all_tensors(t)) for t in (index, rows))
        return index.cpu(), rows.cpu()

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        epochs = self.hparams["max_epochs_hint"]
        try:
            max_epochs = self.trainer.max_epochs  # -1 or None when the trainer counts steps
        except RuntimeError:  # not attached to a Trainer
            max_epochs = None
        if max_epochs is not None and max_epochs > 0:
            epochs = max_epochs
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(epochs)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _check_terms(terms: list[str], output_names: list[str], use_l1_in_total: bool) -> None:
    unknown = [t for t in terms if t not in COST_RANGES]
    missing = [t for t in REQUIRED_TERMS if t not in terms]
    if unknown or missing or len(set(terms)) != len(terms):
        raise ValueError(
            f"terms={terms}; expected distinct terms from {tuple(COST_RANGES)} including fc_cost, ks"
        )
    if use_l1_in_total and "fc_l1" not in terms:
        raise ValueError('use_l1_in_total=True needs "fc_l1" in terms')
    absent = [t for t in terms if t not in output_names]
    if absent:
        raise ValueError(f"terms {absent} are not among output_names={output_names} (the batches' y columns)")


def bundled_geometry() -> dict[str, list]:
    """The bundled HCP Desikan-68 ``box``, ``basis`` and train ``sc`` as nested lists."""
    data = load_bundled()
    basis = data.basis()
    return {"box": ParamSpace(basis).box.tolist(), "basis": basis.tolist(), "sc": data.sc.tolist()}


def _plain(value) -> Any:
    """Nested lists/dicts of Python scalars from arrays, tensors, tuples, DictConfigs."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
    ):
        return [_plain(v) for v in value]
    return value
