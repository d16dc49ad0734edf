"""Does filtering the linearised FC through the haemodynamics rank the best sets' FC cost better?

The linearised MLP (``model=mlp``) matches the FC patterns of the linearised model (of S, and of its
zero-frequency spectrum) to the empirical FC; among the best 10% of the shipped dataset the FC cost
is the term it ranks worst. Here the pattern of the linearised BOLD covariance (:func:`bold_covariance`)
is scored like the other features: its Spearman with the simulated FC cost and total, over all
samples and within the best 10% by total (linearised_bold_fc.json).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.datasets import load_dataset
from pmfm.models.metrics import spearman
from pmfm.physics import linearized as lna
from pmfm.physics.balloon import ALPHA, GAMMA_H, K1, K2, K3, KAPPA, RHO, TAU
from pmfm.physics.dynamics import SC_SCALE
from pmfm.pipelines.config import load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.studies.report import write_json
from pmfm.studies.sets import dataset_or_shipped

OMEGA = torch.cat([torch.zeros(1), torch.logspace(-3, 2.5, 220, dtype=torch.float64)])  # rad/s


def trapezoid_weights(x: torch.Tensor) -> torch.Tensor:
    step = x[1:] - x[:-1]
    weights = torch.zeros_like(x)
    weights[1:] += step / 2
    weights[:-1] += step / 2
    return weights


def balloon_transfer(s: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """dBOLD/dS (B, N, F) complex at frequencies omega (F,), Balloon linearised at the steady state
    that a constant input s (B, N) holds: z = 0, f = 1 + s / gamma_h, v = f^alpha,
    q = f E(f) / (rho v^(1/alpha - 1)), E(f) = 1 - (1 - rho)^(1/f). Unscaled (BOLD_SCALE cancels in
    correlations)."""
    f = 1 + s / GAMMA_H
    v = f**ALPHA
    extraction = 1 - (1 - RHO) ** (1 / f)
    v_term = v ** (1 / ALPHA - 1)
    q = f * extraction / (RHO * v_term)
    d_extraction = math.log(1 - RHO) / f**2 * (1 - RHO) ** (1 / f)
    m = torch.zeros(*s.shape, 4, 4, dtype=torch.float64)  # d(z, f, v, q)/dt by (z, f, v, q)
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0] = -KAPPA, -GAMMA_H, 1.0
    m[..., 2, 1], m[..., 2, 2] = 1 / TAU, -v_term / (ALPHA * TAU)
    m[..., 3, 1] = (extraction + f * d_extraction) / (RHO * TAU)
    m[..., 3, 2] = -q * (1 / ALPHA - 1) * v ** (1 / ALPHA - 2) / TAU
    m[..., 3, 3] = -v_term / TAU
    readout = torch.zeros(*s.shape, 4, dtype=torch.float64)  # dBOLD/d(z, f, v, q)
    readout[..., 2], readout[..., 3] = K2 * q / v**2 - K3, -K1 - K2 / v
    eye = torch.eye(4, dtype=torch.complex128)
    system = 1j * omega.to(torch.complex128)[:, None, None] * eye - m[:, :, None].to(torch.complex128)
    drive = torch.zeros(4, dtype=torch.complex128)
    drive[0] = 1.0  # S enters dz
    response = torch.linalg.solve(system, drive.expand(system.shape[:-1]))  # (B, N, F, 4)
    return (response * readout[:, :, None].to(torch.complex128)).sum(-1)


def bold_covariance(lin: lna.Linearization) -> torch.Tensor:
    """(B, N, N) BOLD covariance of B linearised parameter sets (``pmfm.physics.linearized``, float64).

    With the Balloon-Windkessel model (docs/haemodynamics.md) linearised per region at its steady
    state (driven by S*)::

        cov_BOLD = (1 / pi) int_0^inf Re[ Hd(w) T U R(w) Q' R(w)^H U^T T Hd(w)^H ] dw

    Hd(w) = diag of each region's transfer dBOLD/dS at frequency w (:func:`balloon_transfer`),
    A = T U diag(l) U^T T^-1 the Jacobian, R(w) = diag(1 / (i w - l)) and Q' the noise in that
    eigenbasis; the integral on ``OMEGA`` (0 and 1e-3 .. 300 rad/s, log-spaced), trapezoid rule.
    """
    lam = lin.eigenvalues.clamp(max=lna.MAX_EIGENVALUE)  # as the Lyapunov covariance does
    modes, noise = lin.modes.to(torch.complex128), lin.mode_noise.to(torch.complex128)
    transfer = balloon_transfer(lin.s, OMEGA)  # (B, N, F)
    resolvent = 1 / (1j * OMEGA[None, :, None] - lam[:, None, :])  # (B, F, N)
    cov = torch.zeros_like(lin.covariance)
    for k, weight in enumerate(trapezoid_weights(OMEGA)):
        gain = transfer[:, :, k, None] * modes * resolvent[:, k, None, :]  # (B, N, N)
        cov += weight * (gain @ noise @ gain.conj().transpose(1, 2)).real
    return cov / math.pi


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Every dataset row linearised; the Spearman of each feature with the FC cost and the total."""
    s = cfg.study
    torch.set_num_threads(1)  # as the recorded run (~2.5 min on one CPU thread)
    simulator = simulator_of(cfg)
    data = load_data(cfg.data, simulator, variant_of(cfg, simulator))
    rows = load_dataset(dataset_or_shipped(s.dataset))
    basis = torch.as_tensor(data.basis(), dtype=torch.float64)  # (N, 3)
    theta = torch.as_tensor(rows["theta"], dtype=torch.float64)  # (S, 10)
    w, I, sigma = theta[:, 0:3] @ basis.T, theta[:, 3:6] @ basis.T, theta[:, 7:10] @ basis.T
    G = theta[:, 6]
    sc = torch.as_tensor(np.array(data.sc), dtype=torch.float64)
    coupling = sc / sc.max() * SC_SCALE
    target_fc = torch.as_tensor(np.array(data.fc), dtype=torch.float64)

    bold_match, summaries = [], []
    with progress_bar(len(theta), "linearised_bold_fc", unit="set", enabled=cfg.progress) as bar:
        for i in torch.arange(len(theta)).split(int(s.chunk)):
            lin = lna.linearize(w[i], I[i], G[i], sigma[i], coupling)
            bold_match.append(lna.pattern_match(lna.fisher_edges(bold_covariance(lin)), target_fc))
            summaries.append(lna.summary(lin, target_fc))
            bar.update(len(i))
    features = {"bold_fc_match": torch.cat(bold_match)}
    names = lna.SUMMARY_NAMES + lna.TARGET_NAMES
    features |= {name: column for name, column in zip(names, torch.cat(summaries).T, strict=True)}

    fc_cost, total = torch.as_tensor(rows["fc_cost"]), torch.as_tensor(rows["total"])
    ok = torch.isfinite(total)
    best = ok & (total <= torch.quantile(total[ok], 0.10))
    result = {}
    print(f"{'feature':15s} {'fc_cost':>8s} {'total':>8s} {'best 10%: fc_cost':>18s} {'total':>8s}")
    for name, value in features.items():  # higher match = lower cost: rank -value
        rho = [spearman(-value[m], y[m]) for m in (ok, best) for y in (fc_cost, total)]
        result[name] = dict(zip(("fc_cost", "total", "fc_cost_best10", "total_best10"), rho, strict=True))
        print(f"{name:15s} {rho[0]:8.3f} {rho[1]:8.3f} {rho[2]:18.3f} {rho[3]:8.3f}")
    summary = {"samples": int(ok.sum()), "best10": int(best.sum()), "spearman": result}
    write_json(summary, out_dir / "linearised_bold_fc.json", s.out)
    return summary
