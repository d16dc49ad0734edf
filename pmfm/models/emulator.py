"""An emulator of simulated statistics: what a set's simulations would store, from its parameters.

Where a surrogate learns one target's cost, the emulator learns the target-free statistics a bank
keeps (pmfm.cost.stats.SetStats): the mean FC as Fisher z, the FCD CDF's 1,000 quantile levels and
whether any repeat was valid. Its cost against any target then follows by the one cost path,
``cost_from_stats`` (docs/emulator.md). Built from primitive hyperparameters; the FC basis is a
buffer filled from the training rows (:meth:`EmulatorModule.set_fc_basis`) and saved with the
weights, so ``EmulatorModule.load_from_checkpoint(path)`` works without Hydra.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from pmfm.cost import CostVariant
from pmfm.cost.repeats import Costs
from pmfm.cost.stats import FC_Z_DTYPE, N_LEVELS, SetStats, cost_from_stats
from pmfm.cost.variants import KONG2021
from pmfm.models.networks import build_network


def fc_basis(fc_z: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, E) Fisher-z FCs -> their mean (E,), ``rank`` principal directions (K, E), orthonormal rows,
    and each direction's coefficient sd (K,) over the rows (fewer rows than ``rank``: zero-padded)."""
    fc_z = fc_z.double()
    mean = fc_z.mean(0)
    _, s, vh = torch.linalg.svd(fc_z - mean, full_matrices=False)  # (min(n, E),), (min(n, E), E)
    k = min(rank, len(s))
    basis = torch.zeros(rank, fc_z.shape[1], dtype=torch.float64)
    scale = torch.ones(rank, dtype=torch.float64)
    basis[:k] = vh[:k]
    scale[:k] = (s[:k] / max(len(fc_z) - 1, 1) ** 0.5).clamp(min=1e-6)
    return mean.float(), basis.float(), scale.float()


def monotone_levels(raw: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """Raw outputs (B, 2 + J) -> (B, n_levels) non-decreasing levels in [0, 1], by construction.

    raw[:, 0] sets the first knot (sigmoid), raw[:, 1] the last knot's share of what is left above
    it (sigmoid), raw[:, 2:] the split of the span between knots (softmax, J increments); the J + 1
    knots sit evenly over the levels' quantiles (l + 1/2) / L and are interpolated linearly.
    """
    first = torch.sigmoid(raw[:, 0:1])  # (B, 1)
    span = (1 - first) * torch.sigmoid(raw[:, 1:2])  # (B, 1)
    steps = torch.softmax(raw[:, 2:], dim=1)  # (B, J) shares of the span, >= 0, summing to 1
    knots = torch.cat([first, first + span * steps.cumsum(1)], 1).clamp(0, 1)  # (B, J + 1)
    n_knots = knots.shape[1]
    where = torch.linspace(0, n_knots - 1, n_levels, device=raw.device, dtype=raw.dtype)  # (L,)
    left = where.floor().long().clamp(max=n_knots - 2)  # (L,)
    frac = where - left  # (L,) in [0, 1]
    low = knots[:, left]
    levels = low + (knots[:, left + 1] - low) * frac  # (B, L)
    return levels.cummax(1).values  # exact ties across knots: no rounding step down


class EmulatorModule(L.LightningModule):
    """Normalised parameters u (B, P) -> fc_z (B, E), FCD levels (B, L) and two validity logits.

    Args:
        n_params: P, the normalised parameters' dimension.
        n_edges: E, the FC's upper-triangle entries (N (N - 1) / 2).
        rank: K, principal directions of the training FC the network predicts coefficients of.
        n_knots: J, increments of the monotone FCD head (J + 1 knots).
        n_bins: the FCD histogram's bins (a level is a bin index; normalised by n_bins - 1).
        fcd_total: window pairs of a valid repeat's FCD (SetStats.fcd_total).
        repeats: R of the bank (a set predicted valid counts R valid repeats).
        box: (P, 2) [low, high] of the normalised box, to read raw coefficients.
        network: the trunk, a name of ``pmfm.models.networks`` ("mlp" on u, "mlp_lna" on the
            linearised model's summaries, which need the bank's ``basis`` (N, 3) and ``sc`` (N, N)).
        network_hparams: further keyword arguments of the trunk (primitives).
        basis, sc: the bank's parameter basis and SC (default: a one-region placeholder, enough for
            "mlp", which reads u alone).
        hidden, depth: the trunk's width and number of hidden layers.
        fc_weight, fcd_weight, validity_weight: weights of the three losses.
        lr, weight_decay, max_epochs_hint: AdamW and its cosine schedule.
    """

    fc_mean: Tensor  # (E,) mean training fc_z (buffer)
    fc_dirs: Tensor  # (K, E) orthonormal principal directions (buffer)
    fc_scale: Tensor  # (K,) training sd of each direction's coefficient (buffer)
    box: Tensor  # (P, 2) float64 [low, high] of the normalised box (buffer, rebuilt from hparams)
    fc_var: Tensor  # () training variance of fc_z about its mean, per edge: the FC loss's unit (buffer)

    def __init__(
        self,
        n_params: int,
        n_edges: int,
        rank: int = 32,
        n_knots: int = 48,
        n_bins: int = 10_000,
        fcd_total: int = 624_403,
        repeats: int = 3,
        box: Sequence[Sequence[float]] | None = None,
        network: str = "mlp",
        network_hparams: dict | None = None,
        basis: Sequence[Sequence[float]] | None = None,
        sc: Sequence[Sequence[float]] | None = None,
        hidden: int = 256,
        depth: int = 3,
        fc_weight: float = 1.0,
        fcd_weight: float = 10.0,
        validity_weight: float = 1.0,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        max_epochs_hint: int = 300,
    ):
        super().__init__()
        box = [[0.0, 1.0]] * n_params if box is None else [[float(a), float(b)] for a, b in box]
        self.save_hyperparameters(logger=False)
        self.register_buffer("fc_mean", torch.zeros(n_edges))
        self.register_buffer("fc_dirs", torch.zeros(rank, n_edges))
        self.register_buffer("fc_scale", torch.ones(rank))
        self.register_buffer("fc_var", torch.ones(()))
        self.register_buffer("box", torch.tensor(box, dtype=torch.float64), persistent=False)
        geometry: dict[str, list[list[float]]] = {
            "box": [list(row) for row in box],
            "basis": [[1.0, 0.0, 0.0]] if basis is None else [[float(v) for v in row] for row in basis],
            "sc": [[0.0]] if sc is None else [[float(v) for v in row] for row in sc],
        }
        n_outputs = rank + 2 + n_knots + 2  # FC coefficients, FCD head, two validity logits
        self.net = build_network(
            network, n_outputs=n_outputs, **geometry, hidden=hidden, depth=depth,
            **(network_hparams or {}),
        )  # fmt: skip

    def set_input_statistics(self, u: Tensor) -> None:
        """z-score the trunk's inputs by the training rows' (feasible sets fill a sliver of the box)."""
        with torch.no_grad():
            x = self.net.features(torch.as_tensor(u).float())  # type: ignore[operator]  # (n, F)
        self.net.input_mean.copy_(x.mean(0))  # type: ignore[operator]
        self.net.input_std.copy_(x.std(0).clamp_min(1e-8))  # type: ignore[operator]

    def set_fc_basis(self, fc_z: Tensor) -> None:
        """Fill the low-rank FC head from training rows' fc_z (n, E) (FC-valid rows only)."""
        fc_z = torch.as_tensor(fc_z).float()
        mean, dirs, scale = fc_basis(fc_z, self.hparams["rank"])
        self.fc_var.copy_(((fc_z - mean) ** 2).mean().clamp(min=1e-8))
        self.fc_mean.copy_(mean)
        self.fc_dirs.copy_(dirs)
        self.fc_scale.copy_(scale)

    # -- outputs --------------------------------------------------------------------------------
    def fc_from_coefficients(self, coef: Tensor) -> Tensor:
        """(B, K) coefficients in sd units -> (B, E) fc_z."""
        return self.fc_mean + (coef * self.fc_scale) @ self.fc_dirs

    def coefficients(self, fc_z: Tensor) -> Tensor:
        """(B, E) fc_z -> (B, K) its coefficients in sd units (the projection on the basis)."""
        return ((fc_z.float() - self.fc_mean) @ self.fc_dirs.T) / self.fc_scale

    def forward(self, u: Tensor) -> dict[str, Tensor]:
        """u (B, P) -> fc_z (B, E), levels (B, L) in [0, 1] non-decreasing, logit_fc and logit_fcd (B,)."""
        z = self.net(u)
        k = self.hparams["rank"]
        return {
            "fc_z": self.fc_from_coefficients(z[:, :k]),
            "levels": monotone_levels(z[:, k:-2], N_LEVELS),
            "logit_fc": z[:, -2],
            "logit_fcd": z[:, -1],
        }

    def normalised(self, x, normalised: bool = True) -> Tensor:
        """(B, P) inputs as normalised float32 on the module's device; raw coefficients read by ``box``."""
        x = torch.as_tensor(x)
        x = x[None] if x.ndim == 1 else x
        if not normalised:
            box = self.box.to(x.device)
            x = (x.double() - box[:, 0]) / (box[:, 1] - box[:, 0])
        return x.to(device=self.device, dtype=torch.float32)

    def stats_from(self, fc_z: Tensor, levels: Tensor, p_fc: Tensor, p_fcd: Tensor) -> SetStats:
        """Predicted fc_z (B, E), normalised levels (B, L) and validity probabilities (B,) -> SetStats:
        levels rounded to bins, a set with p > 1/2 counted as R valid repeats (else none, fc_z 0)."""
        repeats, n_bins = self.hparams["repeats"], self.hparams["n_bins"]
        n_fc = torch.where(p_fc.cpu() > 0.5, repeats, 0).long()
        n_fcd = torch.where(p_fcd.cpu() > 0.5, repeats, 0).long()
        fc_z = torch.where((n_fc > 0)[:, None], fc_z.detach().cpu().float(), 0.0)
        bins = (levels.detach().cpu().double() * (n_bins - 1)).round().clamp(0, n_bins - 1).to(torch.int32)
        return SetStats(fc_z.to(FC_Z_DTYPE), bins, n_fc, n_fcd, int(self.hparams["fcd_total"]), repeats)

    @torch.no_grad()
    def predict_stats(self, x, normalised: bool = True) -> SetStats:
        """Emulated statistics of parameter sets x (B, P): normalised u, or raw coefficients."""
        was_training = self.training
        self.eval()
        try:
            out = self(self.normalised(x, normalised))
        finally:
            self.train(was_training)
        return self.stats_from(
            out["fc_z"], out["levels"], torch.sigmoid(out["logit_fc"]), torch.sigmoid(out["logit_fcd"])
        )

    # -- loss -----------------------------------------------------------------------------------
    def losses(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """MSE of fc_z over FC-valid rows (in units of the training rows' variance), MSE of normalised
        levels over FCD-valid rows, BCE of each validity."""
        valid_fc, valid_fcd = batch["valid_fc"].bool(), batch["valid_fcd"].bool()
        sq_fc = ((out["fc_z"] - batch["fc_z"]) ** 2).mean(1) / self.fc_var  # (B,)
        sq_fcd = ((out["levels"] - batch["levels"]) ** 2).mean(1)  # (B,)
        loss_fc = (sq_fc * valid_fc).sum() / valid_fc.sum().clamp(min=1)
        loss_fcd = (sq_fcd * valid_fcd).sum() / valid_fcd.sum().clamp(min=1)
        loss_valid = F.binary_cross_entropy_with_logits(
            out["logit_fc"], valid_fc.float()
        ) + F.binary_cross_entropy_with_logits(out["logit_fcd"], valid_fcd.float())
        hp = self.hparams
        loss = hp["fc_weight"] * loss_fc + hp["fcd_weight"] * loss_fcd + hp["validity_weight"] * loss_valid
        return {"loss": loss, "loss_fc": loss_fc, "loss_fcd": loss_fcd, "loss_valid": loss_valid}

    def _step(self, batch, stage: str) -> Tensor:
        losses = self.losses(self(batch["x"]), batch)
        n = len(batch["x"])
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", on_epoch=True, batch_size=n)
        return losses["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        try:
            epochs = self.trainer.max_epochs
        except RuntimeError:  # not attached to a Trainer
            epochs = None
        epochs = epochs if epochs is not None and epochs > 0 else self.hparams["max_epochs_hint"]
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(epochs)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def emulated_costs(
    module: EmulatorModule,
    u,
    emp_fc,
    emp_cdf,
    variant: CostVariant = KONG2021,
    stage: str = "fit",
    normalised: bool = True,
) -> Costs:
    """The cost of parameter sets u (B, P) against one target, from their emulated statistics, by
    the same path as a bank's stored ones (:func:`pmfm.cost.stats.cost_from_stats`)."""
    return cost_from_stats(module.predict_stats(u, normalised), emp_fc, emp_cdf, variant, stage)


def fine_tune(
    module: EmulatorModule,
    batch: dict[str, Tensor],
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
) -> None:
    """Train ``module`` further on ``batch`` (the columns of BankDataModule.encode): ``epochs``
    passes in an order fixed by ``seed``, so a rerun gives the same weights."""
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=module.hparams["weight_decay"])
    module.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(batch["x"]), generator=generator).split(batch_size):
            part = {k: v[rows] for k, v in batch.items()}
            loss = module.losses(module(part["x"]), part)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.eval()


@torch.no_grad()
def statistics_metric(module: EmulatorModule, u: Tensor, step: float = 5e-3) -> Tensor:
    """(B, P, P) Gauss-Newton metric of the emulated statistics at normalised u (B, P), in the
    training loss's units: d^T M d is about the FC and FCD loss between the statistics at u and at
    u + d. Central differences of ``step`` (the trunk need not be differentiable)."""
    u = module.normalised(u)
    n, p = u.shape
    shift = torch.eye(p, device=u.device) * step  # (P, P)
    x = torch.cat([u[:, None] + shift, u[:, None] - shift], 1).reshape(-1, p)  # (B 2P, P)
    was_training = module.training
    module.eval()
    try:
        out = module(x)
    finally:
        module.train(was_training)
    hp = module.hparams
    fc = out["fc_z"].reshape(n, 2, p, -1).double()  # (B, 2, P, E)
    levels = out["levels"].reshape(n, 2, p, -1).double()  # (B, 2, P, L)
    j_fc = (fc[:, 0] - fc[:, 1]) / (2 * step)  # (B, P, E)
    j_levels = (levels[:, 0] - levels[:, 1]) / (2 * step)  # (B, P, L)
    w_fc = hp["fc_weight"] / (j_fc.shape[-1] * float(module.fc_var))
    w_fcd = hp["fcd_weight"] / j_levels.shape[-1]
    metric = w_fc * j_fc @ j_fc.transpose(1, 2) + w_fcd * j_levels @ j_levels.transpose(1, 2)
    return metric.cpu()


@torch.no_grad()
def mean_loss(module: EmulatorModule, batch: dict[str, Tensor]) -> float:
    """The emulator's training loss over a whole ``batch`` (eval mode)."""
    module.eval()
    return float(module.losses(module(batch["x"]), batch)["loss"])
