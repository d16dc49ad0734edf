"""Multi-start CMA-ES with Kong2021's settings (docs/fitting.md), on pycma.

Kong et al. 2021 fit the pMFM with CMA-ES over the 10 coefficients: population 500, 40 parents with
log-rank weights ``log(mu + 1/2) - log(i)``, sigma0 = 0.15 capped at 0.15 after every update, an
initial diagonal covariance with standard deviations ``[w0/2]*3, [I0/2]*3, 0.4, [0.0005]*3``,
infeasible samples redrawn, Hansen's standard constants, C eigendecomposed every generation, the mean
never evaluated. A start stops once 5 generations (not necessarily consecutive) had a best cost below
0.3 with ``||p_sigma|| < 11``, or when sigma < 0.001, or after 500 generations.

:class:`MultiStartCMAES` runs several such starts in lockstep and scores the populations of all
active starts in one objective call per generation (the simulator is fastest on big batches).

How pycma is configured, and why (pycma 4.x, ``cma.CMAOptions``):

- ``popsize``, ``CMA_mu``: pycma's weights for ``CMA_mu = mu`` are ``log((2 mu + 1) / 2) - log(i)``
  = ``log(mu + 1/2) - log(i)``, Kong's, followed by zeros; ``CMA_active=False`` zeroes the negative
  weights (standard, not active, CMA).
- ``CMA_teststds``: the initial covariance is ``diag(stds^2)`` in raw coordinates, as Kong's
  ``C = B diag(D^2) B'`` with ``D = stds``. pycma's production option ``CMA_stds`` instead keeps the
  stds outside C (``m + sigma * stds * N(0, C)``, C starting at I); that is not the same algorithm,
  because the sigma path uses the symmetric root ``C^-1/2`` and ``(S C S)^-1/2 != S^-1 C^-1/2`` once C
  has correlations (``||p_sigma||`` drifted by ~1% within 40 generations in a check against Kong's
  update). pycma tilts its initial variances by ``exp(1e-4 / N * i)`` to break ties; the stds passed
  are divided by the square root of that tilt, so C starts at ``diag(stds^2)`` to rounding.
- Hansen's constants. pycma's c1 and cc are Hansen's (``2 / ((N + 1.3)^2 + mueff)``,
  ``(4 + mueff/N) / (N + 4 + 2 mueff/N)``); its c_mu has an extra 0.25 in the numerator, so
  ``CMA_rankmu`` (a multiplier of c_mu) is set to Kong's / pycma's c_mu. pycma's step-size
  adaptation uses other c_sigma, d_sigma, hsig threshold and clips log-sigma changes at 1, so
  ``AdaptSigma`` is :class:`KongCSA`, a subclass of pycma's CSA with Kong's
  ``c_sigma = (mueff + 2) / (N + mueff + 5)``, ``d_sigma = 1 + 2 max(0, sqrt((mueff-1)/(N+1)) - 1) +
  c_sigma``, ``hsig = ||p_sigma|| / sqrt(1 - (1 - c_sigma)^(2 g)) / chi_N < 1.4 + 2 / (N + 1)``, no
  clipping, and chi_N either the standard ``sqrt(N) (1 - 1/(4N) + 1/(21 N^2))`` = 3.0847 (N = 10) or,
  with ``chi_n_quirk``, the released code's ``1/(21*N ^ 2)`` (Python XOR: ``(21 N) ^ 2``) = 3.0984.
  The constructor checks pycma's mueff, c1, cc and initial variances against Kong's values;
  tests/test_search.py checks mean, sigma, p_sigma and C against Kong's update, generation by
  generation, to rounding.
- ``updatecovwait=0``: the sampler eigendecomposes C before every sampling that follows an update,
  i.e. every generation (Kong: ``if 1 > 1/(c1+cmu)/N/10`` is always true).
- ``CMA_diagonal=False``, ``CMA_mirrors=0``, ``conditioncov_alleviate=False`` (no rescaling of C into
  the coordinate scaling when it gets ill-conditioned): plain full-covariance CMA-ES.
- No ``bounds``: feasibility is checked here against ``objective.space.is_feasible`` and infeasible
  samples are redrawn from the same distribution, candidate by candidate (Kong's loop), at most
  ``max_redraws`` times each.
- ``randn``: a picklable :class:`KeyedRandn` holding a numpy Generator; ``seed=nan`` keeps pycma
  off numpy's global RNG. Before a generation's first draw the generator is reset to
  ``SeedSequence([seed, start, generation])``, so samples do not depend on earlier redraws, other
  starts or global state, and a pickled strategy resumes bitwise.
- ``verbose=-9``, ``verb_disp=0``, ``verb_log=0``: silent, no files. pycma's own termination
  criteria (``tolfun``, ``tolx``, ``maxiter``, ...) only act through ``es.stop()``, which is never
  called: Kong's rules alone decide (see :meth:`MultiStartCMAES.step`).
- ``||p_sigma||`` is the norm of ``es.adapt_sigma.ps``, the conjugate evolution path after the
  generation's update (as Kong's ``ps_norm``); sigma is ``es.sigma`` after the cap.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cma
import numpy as np
import torch
from cma.sigma_adaptation import CMAAdaptSigmaCSA

from pmfm.evaluate.objective import Evaluated, Objective

STATE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Settings and Kong's constants (docs/fitting.md)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CMAESSettings:
    """CMA-ES settings; the defaults are Kong2021's (docs/fitting.md)."""

    popsize: int = 500  # lambda, candidates per generation and start
    mu: int = 40  # parents, log-rank weights log(mu + 1/2) - log(i)
    sigma0: float = 0.15  # initial step size (multiplies the per-coordinate stds)
    sigma_cap: float = 0.15  # sigma = min(sigma, sigma_cap) after every update
    max_generations: int = 500
    stop_cost: float = 0.3  # a generation "counts" when its best total is below this ...
    stop_psigma: float = 11.0  # ... and ||p_sigma|| is below this
    stop_count: int = 5  # stop after this many counting generations (not necessarily consecutive)
    stop_sigma: float = 1e-3  # stop when sigma falls below this
    active: bool = False  # standard (not active) CMA, as Kong2021
    chi_n_quirk: bool = False  # the released code's chi_N (N ^ 2 as XOR): 3.0984 instead of 3.0847 at N = 10
    max_redraws: int = 1000  # infeasible samples are redrawn up to this many times each

    def __post_init__(self):
        if self.popsize < 2 or not 1 <= self.mu <= self.popsize:
            raise ValueError(f"need popsize >= 2 and 1 <= mu <= popsize, got {self.popsize}, {self.mu}")
        if self.sigma0 <= 0 or self.sigma_cap <= 0:
            raise ValueError(f"sigma0 and sigma_cap must be positive, got {self.sigma0}, {self.sigma_cap}")
        if self.max_generations < 1 or self.stop_count < 1 or self.max_redraws < 0:
            raise ValueError("max_generations and stop_count must be >= 1, max_redraws >= 0")


def chi_n(n: int, quirk: bool = False) -> float:
    """E||N(0, I_n)||, Hansen's approximation ``sqrt(n) (1 - 1/(4n) + 1/(21 n^2))``.

    ``quirk=True`` reproduces the released Kong2021 code, which wrote ``1 / (21 * N ^ 2)``: in Python
    ``^`` is XOR and binds after ``*``, so the last term is ``1 / ((21 n) XOR 2)`` (3.0984 at n = 10
    instead of 3.0847).
    """
    last = 1.0 / ((21 * n) ^ 2) if quirk else 1.0 / (21.0 * n**2)
    return n**0.5 * (1.0 - 1.0 / (4.0 * n) + last)


def kong_constants(n: int, mu: int, chi_n_quirk: bool = False) -> dict[str, float]:
    """Kong2021's (Hansen's purecmaes) strategy constants for dimension n and mu parents."""
    weights = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    weights = weights / weights.sum()
    mueff = 1.0 / float(np.sum(weights**2))
    c1 = 2.0 / ((n + 1.3) ** 2 + mueff)
    cs = (mueff + 2.0) / (n + mueff + 5.0)
    return {
        "mueff": mueff,
        "cc": (4.0 + mueff / n) / (n + 4.0 + 2.0 * mueff / n),
        "cs": cs,
        "c1": c1,
        "cmu": min(1.0 - c1, 2.0 * (mueff - 2.0 + 1.0 / mueff) / ((n + 2.0) ** 2 + mueff)),
        "damps": 1.0 + 2.0 * max(0.0, math.sqrt((mueff - 1.0) / (n + 1.0)) - 1.0) + cs,
        "chi_n": chi_n(n, chi_n_quirk),
    }


def kong_stds(theta0) -> np.ndarray:
    """Initial standard deviations of Kong2021 for a start ``theta0`` (10 coefficients), (10,) float64.

    ``[|w0|/2]*3, [|I0|/2]*3, 0.4, [0.0005]*3`` (docs/fitting.md): the start's intercepts w0 and I0
    set the scale of the w and I coefficients, G gets 0.4 and the sigma coefficients 0.001 / 2.
    """
    theta0 = np.asarray(theta0, dtype=np.float64).reshape(-1)
    if theta0.shape != (10,):
        raise ValueError(f"kong_stds needs the 10 coefficients of one start, got shape {theta0.shape}")
    w0, i0 = abs(theta0[0]), abs(theta0[3])
    return np.array([w0 / 2] * 3 + [i0 / 2] * 3 + [0.4] + [0.0005] * 3, dtype=np.float64)


def _pycma_initial_tilt(n: int) -> np.ndarray:
    """(n,) factors pycma's full sampler multiplies its initial variances by (tie-breaking)."""
    return np.diag(cma.sampler.GaussFullSampler(np.ones(n)).C).copy()


class KongCSA(CMAAdaptSigmaCSA):
    """pycma's cumulative step-size adaptation with Kong2021's constants (Hansen's purecmaes).

    ``p_sigma <- (1 - c_s) p_sigma + sqrt(c_s (2 - c_s) mueff) C^-1/2 (m - m_old) / sigma``;
    ``sigma <- sigma exp(c_s / d_s (||p_sigma|| / chi_N - 1))`` without clipping; hsig as in Kong's
    code. Passed to pycma as the ``AdaptSigma`` class; :class:`KongCSAQuirk` uses the released
    code's chi_N.
    """

    chi_n_quirk = False

    def initialize_settings(self, es, reset=False):
        constants = kong_constants(es.N, es.sp.weights.mu, self.chi_n_quirk)
        self._es_opts = es.opts
        self.cs = constants["cs"]
        self.damps = constants["damps"]
        self.chi_n = constants["chi_n"]
        self.dampdown_fac = 1.0
        self.max_delta_log_sigma = math.inf

    def _update_ps(self, es):
        if not self.is_initialized:
            self.initialize(es)
        if self._ps_updated_iteration == es.countiter:
            return  # once per generation (hsig and update2 both ask for it)
        # isotropic_mean_shift = sqrt(mueff) C^-1/2 (m - m_old) / sigma, with C before its update
        self.ps = (1 - self.cs) * self.ps + math.sqrt(self.cs * (2 - self.cs)) * es.isotropic_mean_shift
        self._ps_updated_iteration = es.countiter

    def hsig(self, es):
        self._update_ps(es)
        length = np.linalg.norm(self.ps) / math.sqrt(1 - (1 - self.cs) ** (2 * es.countiter)) / self.chi_n
        return bool(length < 1.4 + 2.0 / (es.N + 1))

    def update2(self, es, **kwargs):
        self._update_ps(es)
        self._last_multiplier = math.exp(self.cs / self.damps * (np.linalg.norm(self.ps) / self.chi_n - 1))
        self.delta *= self._last_multiplier
        return self._last_multiplier


class KongCSAQuirk(KongCSA):
    """:class:`KongCSA` with the released code's chi_N (``N ^ 2`` read as XOR)."""

    chi_n_quirk = True


class KeyedRandn:
    """Standard normals for pycma's ``randn`` option, from a numpy Generator that can be re-keyed.

    Picklable (the Generator's state travels with it), so a pickled strategy resumes bitwise.
    """

    def __init__(self, entropy=(0,)):
        self.reset(entropy)

    def reset(self, entropy) -> None:
        """Restart the stream at ``SeedSequence(entropy)``."""
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))

    def __call__(self, *shape) -> np.ndarray:
        return self.rng.standard_normal(shape)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartGeneration:
    """One generation of one start: what was sampled, how it scored, the state after the update."""

    start: int  # start index
    generation: int  # 1-based generation of this start
    candidates: torch.Tensor  # (popsize, P) float64 raw parameters (all feasible); (0, P) if none drawn
    total: torch.Tensor  # (popsize,) float64
    valid: torch.Tensor  # (popsize,) bool
    terms: dict[str, torch.Tensor]  # name -> (popsize,)
    best: int  # index of the lowest total (-1 if nothing was evaluated)
    sigma: float  # step size after the update and the cap
    ps_norm: float  # ||p_sigma|| after the update
    stop_count: int  # generations so far with best < stop_cost and ||p_sigma|| < stop_psigma
    stopped: bool  # the start stopped after this generation
    stop_reason: str | None  # "converged", "sigma", "max_generations", "max_redraws" or None
    redraws: int  # infeasible samples redrawn in this generation


@dataclass(frozen=True)
class GenerationResult:
    """One step of the multi-start search: every start that was still running."""

    generation: int  # 1-based
    starts: tuple[StartGeneration, ...]
    batch_size: int  # sets scored in the generation's single objective call (0: no call)


@dataclass(frozen=True)
class BestOfGeneration:
    """The best candidate of one generation of one start (Kong keeps these; docs/fitting.md)."""

    start: int
    generation: int
    theta: torch.Tensor  # (P,) float64 raw parameters
    total: float
    valid: bool
    terms: dict[str, float]


# --------------------------------------------------------------------------------------------
# The searcher
# --------------------------------------------------------------------------------------------


class MultiStartCMAES:
    """Kong2021's CMA-ES from several starts, all active populations scored in one call per generation.

    Args:
        objective: scores (B, P) raw parameters; its ``space`` gives ``dim`` and ``is_feasible``.
        starts: (S, P) raw starting means (float64).
        settings: CMA-ES settings (Kong2021 defaults).
        seed: drives the CMA samples: generation g of start s samples from
            ``SeedSequence([seed, s, g])``.
        stds: (S, P) initial standard deviations per start (multiplied by sigma0), or None for
            :func:`kong_stds` of each start.
        start_ids: the starts' labels in a larger run (default 0..S-1): start ``start_ids[s]``
            samples from ``SeedSequence([seed, start_ids[s], g])``, so a start's search does not
            depend on which other starts share its batch.
        covariances: (S, P, P) initial covariance matrices per start (multiplied by sigma0**2), in
            place of ``stds`` (their diagonal's root is checked as ``stds`` are), or None.

    The search runs in raw coordinates, as Kong's code. Normalised [0, 1] coordinates would be a
    diagonal change of variables, under which CSA's path is not exactly invariant (see the
    ``CMA_teststds`` note in the module docstring), so they would not reproduce Kong's runs.

    Sample ids passed to the objective as ``keys`` are ``((g - 1) * S + s) * popsize + i`` for
    candidate i of start s in generation g: unique over the run and independent of which starts are
    still running. ``generation=g`` is passed for the common random numbers.
    """

    def __init__(
        self,
        objective: Objective,
        starts,
        settings: CMAESSettings | None = None,
        seed: int = 0,
        stds=None,
        start_ids=None,
        covariances=None,
    ):
        self.objective = objective
        self.settings = settings if settings is not None else CMAESSettings()
        self.seed = int(seed)
        starts = torch.as_tensor(starts, dtype=torch.float64)
        starts = starts[None] if starts.ndim == 1 else starts
        dim = int(objective.space.dim)
        if starts.ndim != 2 or starts.shape[1] != dim or not torch.isfinite(starts).all():
            raise ValueError(f"starts must be finite (S, {dim}), got shape {tuple(starts.shape)}")
        if covariances is not None:
            covariances = np.broadcast_to(np.asarray(covariances, dtype=np.float64), (*starts.shape, dim))
            stds = np.sqrt(np.diagonal(covariances, axis1=1, axis2=2))
        if stds is None:
            stds = np.stack([kong_stds(s) for s in starts.numpy()])
        stds = np.asarray(stds, dtype=np.float64)
        stds = np.broadcast_to(stds, starts.shape).copy()
        if not (np.isfinite(stds).all() and (stds > 0).all()):
            raise ValueError("initial standard deviations must be finite and positive (a zero intercept?)")
        self.start_ids = list(range(len(starts))) if start_ids is None else [int(i) for i in start_ids]
        if len(self.start_ids) != len(starts):
            raise ValueError(f"{len(self.start_ids)} start_ids for {len(starts)} starts")
        self.starts = starts.clone()  # (S, P)
        self.stds = stds  # (S, P)
        self._es = [
            self._new_strategy(starts[s].numpy(), stds[s], None if covariances is None else covariances[s])
            for s in range(len(starts))
        ]
        self.generation = 0  # completed generations
        self.stop_counts = [0] * len(starts)
        self.stop_reasons: list[str | None] = [None] * len(starts)
        self.history: list[list[BestOfGeneration]] = [[] for _ in range(len(starts))]

    # -- pycma --------------------------------------------------------------------------------
    def _new_strategy(self, x0: np.ndarray, stds: np.ndarray, cov=None) -> cma.CMAEvolutionStrategy:
        st = self.settings
        opts = {
            "popsize": st.popsize,
            "CMA_mu": st.mu,
            "CMA_active": st.active,
            "CMA_teststds": stds / np.sqrt(_pycma_initial_tilt(len(stds))),  # C0 = diag(stds^2)
            "CMA_diagonal": False,
            "CMA_mirrors": 0,
            "conditioncov_alleviate": False,
            "updatecovwait": 0,
            "AdaptSigma": KongCSAQuirk if st.chi_n_quirk else KongCSA,
            "randn": KeyedRandn(),
            "seed": np.nan,
            "maxiter": np.inf,
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma's chatter about options is not for our users
            es = cma.CMAEvolutionStrategy(x0, st.sigma0, opts)
        # Hansen's c_mu (no 0.25 offset): CMA_rankmu multiplies pycma's c_mu in every tell
        kong = kong_constants(len(x0), st.mu, st.chi_n_quirk)
        params = es.sm.parameters(mueff=es.sp.weights.mueff, lam=es.sp.weights.lambda_)
        es.opts["CMA_rankmu"] = kong["cmu"] / params["cmu"]
        checks = [("mueff", es.sp.weights.mueff), ("c1", params["c1"]), ("cc", es.sp.cc)]
        checks += [(f"initial variance {i}", v) for i, v in enumerate(np.diag(es.sm.C))]
        kong.update({f"initial variance {i}": v for i, v in enumerate(stds**2)})
        for name, value in checks:
            if not math.isclose(value, kong[name], rel_tol=1e-12):
                raise RuntimeError(f"pycma {cma.__version__}: {name} = {value}, Kong2021 uses {kong[name]}")
        if cov is not None:  # the full initial covariance (its diagonal checked above)
            es.sm.C = np.array(cov, dtype=np.float64)
            es.sm.update_now(-1)  # eigendecomposition of the new C
        return es

    # -- state --------------------------------------------------------------------------------
    @property
    def n_starts(self) -> int:
        return len(self._es)

    @property
    def active(self) -> list[int]:
        """Indices of the starts that have not stopped."""
        return [s for s, reason in enumerate(self.stop_reasons) if reason is None]

    @property
    def done(self) -> bool:
        """True once every start has stopped."""
        return not self.active

    def sigma(self, start: int) -> float:
        return float(self._es[start].sigma)

    def mean(self, start: int) -> torch.Tensor:
        """(P,) current mean of a start (never evaluated, docs/fitting.md#training-cma-es)."""
        return torch.as_tensor(np.array(self._es[start].mean, dtype=np.float64))

    # -- one generation -----------------------------------------------------------------------
    def _sample(self, s: int, generation: int) -> tuple[np.ndarray | None, int]:
        """popsize feasible candidates (pop, P) of start s, redrawing infeasible ones; None if stuck."""
        es, space, st = self._es[s], self.objective.space, self.settings
        es.sm.randn.reset([self.seed, self.start_ids[s], generation])
        x = np.array(es.ask(), dtype=np.float64)  # (pop, P)
        draws = np.zeros(len(x), dtype=np.int64)  # redraws per candidate
        bad = ~space.is_feasible(torch.from_numpy(x)).cpu().numpy()
        while bad.any():
            idx = np.flatnonzero(bad)
            if (draws[idx] >= st.max_redraws).any():
                return None, int(draws.sum())
            x[idx] = np.array(es.ask(len(idx)), dtype=np.float64)
            draws[idx] += 1
            bad[idx] = ~space.is_feasible(torch.from_numpy(x[idx])).cpu().numpy()
        return x, int(draws.sum())

    def step(self) -> GenerationResult:
        """Run one generation of every active start (docs/fitting.md).

        Ask each start's population (infeasible samples redrawn), score all of them in one objective
        call, tell pycma, cap sigma, then apply Kong's stopping rules: a generation with best total <
        ``stop_cost`` and ``||p_sigma|| < stop_psigma`` counts; stop at ``stop_count`` counting
        generations (over the run, not necessarily consecutive), or when sigma < ``stop_sigma``, or
        after ``max_generations``.
        """
        if self.done:
            raise RuntimeError("every start has stopped; nothing to step")
        st, n_starts = self.settings, self.n_starts
        generation = self.generation + 1
        sampled: dict[int, np.ndarray] = {}
        redraws: dict[int, int] = {}
        for s in self.active:
            x, redraws[s] = self._sample(s, generation)
            if x is not None:
                sampled[s] = x
        order = list(sampled)
        results = {}
        batch = 0
        if order:
            theta = torch.from_numpy(np.concatenate([sampled[s] for s in order]))  # (B, P)
            keys = torch.cat(
                [((generation - 1) * n_starts + s) * st.popsize + torch.arange(st.popsize) for s in order]
            )  # (B,) sample ids
            batch = theta.shape[0]
            evaluated = self.objective(theta, keys=keys, generation=generation)
            if len(evaluated) != batch or not torch.isfinite(evaluated.total).all():
                raise ValueError("the objective must return one finite total per parameter set")
            for k, s in enumerate(order):
                rows = slice(k * st.popsize, (k + 1) * st.popsize)
                results[s] = self._tell(s, generation, theta[rows], evaluated.select(rows), redraws[s])
        for s in self.active:
            if s not in sampled:  # no feasible population within max_redraws: give up on this start
                self.stop_reasons[s] = "max_redraws"
                results[s] = self._empty_result(s, generation, redraws[s])
        self.generation = generation
        return GenerationResult(generation, tuple(results[s] for s in sorted(results)), batch)

    def _tell(self, s: int, generation: int, theta, ev: Evaluated, redraws: int) -> StartGeneration:
        st, es = self.settings, self._es[s]
        totals = ev.total.numpy().astype(np.float64)
        es.tell(list(theta.numpy()), totals.tolist())
        es.sigma = min(es.sigma, st.sigma_cap)
        ps_norm = float(np.linalg.norm(es.adapt_sigma.ps))
        best = int(np.argmin(totals))
        if totals[best] < st.stop_cost and ps_norm < st.stop_psigma:
            self.stop_counts[s] += 1
        if self.stop_counts[s] >= st.stop_count:
            self.stop_reasons[s] = "converged"
        elif es.sigma < st.stop_sigma:
            self.stop_reasons[s] = "sigma"
        elif generation >= st.max_generations:
            self.stop_reasons[s] = "max_generations"
        self.history[s].append(
            BestOfGeneration(
                start=s,
                generation=generation,
                theta=theta[best].clone(),
                total=float(totals[best]),
                valid=bool(ev.valid[best]),
                terms={k: float(v[best]) for k, v in ev.terms.items() if v.ndim == 1},
            )
        )
        return StartGeneration(
            start=s,
            generation=generation,
            candidates=theta.clone(),
            total=ev.total.clone(),
            valid=ev.valid.clone(),
            terms={k: v.clone() for k, v in ev.terms.items()},
            best=best,
            sigma=float(es.sigma),
            ps_norm=ps_norm,
            stop_count=self.stop_counts[s],
            stopped=self.stop_reasons[s] is not None,
            stop_reason=self.stop_reasons[s],
            redraws=redraws,
        )

    def _empty_result(self, s: int, generation: int, redraws: int) -> StartGeneration:
        dim = self.starts.shape[1]
        return StartGeneration(
            start=s,
            generation=generation,
            candidates=torch.empty(0, dim, dtype=torch.float64),
            total=torch.empty(0, dtype=torch.float64),
            valid=torch.empty(0, dtype=torch.bool),
            terms={},
            best=-1,
            sigma=self.sigma(s),
            ps_norm=float(np.linalg.norm(self._es[s].adapt_sigma.ps)),
            stop_count=self.stop_counts[s],
            stopped=True,
            stop_reason=self.stop_reasons[s],
            redraws=redraws,
        )

    def run(self, callback: Callable[[GenerationResult], None] | None = None) -> list[list[BestOfGeneration]]:
        """Step until every start has stopped; ``callback(result)`` after each generation.

        Returns the best candidate of every generation, per start (``history``).
        """
        while not self.done:
            result = self.step()
            if callback is not None:
                callback(result)
        return self.history

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume after the last completed generation, bitwise identically.

        The pycma strategies are pickled (their ``KeyedRandn`` travels with them); the objective is
        not part of the state.
        """
        return {
            "version": STATE_VERSION,
            "settings": dataclasses.asdict(self.settings),
            "seed": self.seed,
            "starts": self.starts.clone(),
            "stds": self.stds.copy(),
            "generation": self.generation,
            "stop_counts": list(self.stop_counts),
            "stop_reasons": list(self.stop_reasons),
            "history": [[dataclasses.asdict(b) for b in per_start] for per_start in self.history],
            "strategies": [pickle.dumps(es) for es in self._es],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; settings, seed and starts must match this searcher's.

        Only ``max_generations`` may differ (a budget changed on resume): starts stopped by the old
        budget run on under a larger one, and running starts stop once the new budget is reached.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r}, expected {STATE_VERSION}")
        ours = dataclasses.asdict(self.settings)
        saved = dict(state["settings"], max_generations=ours["max_generations"])
        if saved != ours or state["seed"] != self.seed:
            raise ValueError("the state was saved with other settings or another seed")
        if not torch.equal(torch.as_tensor(state["starts"]), self.starts):
            raise ValueError("the state was saved with other starts")
        self.stds = np.asarray(state["stds"], dtype=np.float64).copy()
        self.generation = int(state["generation"])
        self.stop_counts = [int(c) for c in state["stop_counts"]]
        self.stop_reasons = list(state["stop_reasons"])
        self.history = [[BestOfGeneration(**b) for b in per_start] for per_start in state["history"]]
        self._es = [pickle.loads(blob) for blob in state["strategies"]]
        budget = self.settings.max_generations
        for s, reason in enumerate(self.stop_reasons):
            if reason == "max_generations" and self.generation < budget:
                self.stop_reasons[s] = None  # a larger budget: run on
            elif reason is None and self.generation >= budget:
                self.stop_reasons[s] = "max_generations"
