"""The integration protocol: step size, warm-up, BOLD sampling, burn-in (docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimProtocol:
    """Euler-Maruyama protocol of Kong et al. 2021; every number configurable.

    The released code loops over the grid 0, dt, ..., duration (98,401 main steps at the defaults)
    after ``warmup_steps`` steps of the neural equation alone. BOLD is point-sampled after every
    ``tr_s / dt``-th main step and once more after the last one; the first ``burn_in_samples``
    samples are dropped. Defaults keep samples 167..1366 of 1,367: exactly 1,200 TRs at
    120.96 s .. 983.52 s every 0.72 s, plus 984.01 s.
    """

    dt: float = 0.01  # s, Euler step
    warmup_steps: int = 1000  # neural-only steps, discarded
    duration_s: float = 984.0  # s, main loop over the grid 0..duration inclusive
    tr_s: float = 0.72  # s, BOLD sampling interval (repetition time)
    burn_in_samples: int = 167  # BOLD samples dropped at the start

    def __post_init__(self):
        if self.dt <= 0 or self.duration_s <= 0 or self.tr_s <= 0:
            raise ValueError(f"dt, duration_s and tr_s must be positive, got {self}")
        ratio = self.tr_s / self.dt
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"tr_s / dt must be a whole number of steps, got {self.tr_s} / {self.dt} = {ratio}"
            )
        if self.warmup_steps < 0 or self.burn_in_samples < 0:
            raise ValueError("warmup_steps and burn_in_samples must be >= 0")
        if self.n_tr < 1:
            raise ValueError(
                f"the protocol keeps no TR: {self.n_samples} samples, "
                f"{self.burn_in_samples} dropped as burn-in"
            )

    @property
    def main_steps(self) -> int:
        """Steps of neural + Balloon after the warm-up: one per grid point 0, dt, ..., duration."""
        return int(round(self.duration_s / self.dt)) + 1

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.main_steps

    @property
    def tr_steps(self) -> int:
        return int(round(self.tr_s / self.dt))

    @property
    def n_samples(self) -> int:
        """BOLD samples taken: after every tr_steps-th main step, plus one after the last step."""
        full, rest = divmod(self.main_steps, self.tr_steps)
        return full + (1 if rest else 0)

    @property
    def n_tr(self) -> int:
        """Kept samples (TRs), 1,200 at the defaults."""
        return self.n_samples - self.burn_in_samples

    def sample_steps(self) -> np.ndarray:
        """(n_samples,) main-step counts after which BOLD is sampled (1-based, the last = main_steps)."""
        steps = np.arange(1, self.main_steps // self.tr_steps + 1) * self.tr_steps
        if self.main_steps % self.tr_steps:
            steps = np.append(steps, self.main_steps)
        return steps

    def kept_times_s(self) -> np.ndarray:
        """(n_tr,) times in seconds of the kept samples, measured from the start of the main loop."""
        return self.sample_steps()[self.burn_in_samples :] * self.dt

    def at_dt(self, dt: float) -> SimProtocol:
        """The same protocol at step ``dt``: the same warm-up steps, TR, samples and burn-in.

        The duration is set so that the last BOLD sample falls on the last main step, as at the
        FIC model's dt = 0.006 s (training) and 0.0005 s (validation and test), docs/fic.md.
        """
        tr_steps = int(round(self.tr_s / dt))
        duration_s = (self.n_samples * tr_steps - 1) * dt
        return SimProtocol(dt, self.warmup_steps, duration_s, self.tr_s, self.burn_in_samples)

    @classmethod
    def shortened(cls, n_tr: int, burn_in_samples: int = 2, **kw) -> SimProtocol:
        """A protocol that keeps ``n_tr`` TRs after a short burn-in (for tests and quick looks).

        Fewer TRs means fewer FCD windows: costs from it are not comparable to the full protocol.
        """
        dt = kw.pop("dt", cls.dt)
        tr_s = kw.pop("tr_s", cls.tr_s)
        tr_steps = int(round(tr_s / dt))
        n_samples = n_tr + burn_in_samples
        duration_s = (n_samples * tr_steps - 1) * dt  # the last grid point is the last sample's step
        return cls(dt=dt, tr_s=tr_s, duration_s=duration_s, burn_in_samples=burn_in_samples, **kw)


def protocol_for_run(n_tr: int, tr_s: float, reference: SimProtocol | None = None) -> SimProtocol:
    """The protocol of a run of ``n_tr`` TRs at a TR of ``tr_s`` seconds (docs/protocol.md).

    Simulated and empirical FCD totals match only when a simulation keeps as many TRs, as far apart,
    as the runs its target was made from. The result keeps ``reference``'s step and warm-up
    (default: Kong et al.'s full protocol, ``SimProtocol()``), drops about as many seconds of burn-in
    (``round(reference.burn_in_samples * reference.tr_s / tr_s)`` samples: 167 of 0.72 s are
    120.2 s) and keeps exactly ``n_tr`` samples, the last one on the last step of the main loop (as
    :meth:`SimProtocol.shortened`). A reference that already keeps ``n_tr`` TRs of ``tr_s`` is
    returned unchanged, so (1200, 0.72) gives the full protocol with its irregular last sample.

    Raises:
        ValueError: ``n_tr`` < 1, ``tr_s`` <= 0, or ``tr_s`` not a whole number of steps of dt.
    """
    reference = SimProtocol() if reference is None else reference
    if int(n_tr) != n_tr or n_tr < 1:
        raise ValueError(f"a run needs a whole number of TRs >= 1, got n_tr={n_tr}")
    if not tr_s > 0:
        raise ValueError(f"the TR must be positive, got tr_s={tr_s}")
    n_tr, dt = int(n_tr), reference.dt
    ratio = tr_s / dt
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ValueError(
            f"a TR of {tr_s} s is not a whole number of simulation steps of dt = {dt} s ({ratio:.6g} "
            f"steps): choose a dt that divides the TR (protocol.dt)"
        )
    if reference.n_tr == n_tr and abs(reference.tr_s - tr_s) <= 1e-9 * tr_s:
        return reference
    burn_in = int(round(reference.burn_in_samples * reference.tr_s / tr_s))
    tr_steps = int(round(ratio))
    duration_s = round(((n_tr + burn_in) * tr_steps - 1) * dt, 12)  # the last sample on the last step
    protocol = SimProtocol(dt, reference.warmup_steps, duration_s, float(tr_s), burn_in)
    assert protocol.n_tr == n_tr and protocol.tr_steps == tr_steps, protocol
    return protocol
