"""``simulator=mfm_compiled``: the plain Euler step under torch.compile, a TR of steps in one CUDA graph.

The middle path between the readable loop (pmfm.sim.euler, dozens of small kernels per step) and the
fused kernel: the same functions of pmfm.physics.dynamics and pmfm.physics.balloon, compiled by TorchInductor
into a few kernels per step, with the noise drawn on the device from per-stream positions that
advance by a constant each step (the same SplitMix64 streams as pmfm.sim.noise, so the same runs as
the reference path to float32 rounding). On CUDA the steps of one TR are captured once in a CUDA
graph and replayed, so the Python loop runs once per BOLD sample instead of once per step.

Keyed noise only (independent or common streams); explicit noise runs the reference path.
"""

from __future__ import annotations

import torch

from pmfm.params import RegionalParams
from pmfm.physics import balloon, dynamics
from pmfm.sim.noise import Noise, box_muller, first_positions, position_increment, stream_bases
from pmfm.sim.protocol import SimProtocol


def _neural_step(s, position, jw, jg, i_ext, ct, scale, dt: float, increment: int):
    """(S, next positions) after one Euler-Maruyama step; noise of all regions from ``position``."""
    xi = box_muller(position, s.dtype).flatten(-2)[:, : s.shape[1]]  # (B, N)
    x = dynamics.synaptic_input(s, jw, jg, i_ext, ct, dynamics.matmul_coupling)
    s = torch.addcmul(torch.add(s, dynamics.neural_drift(s, x), alpha=dt), scale, xi)
    return s, position + increment


def _main_step(s, z, f, v, q, position, jw, jg, i_ext, ct, scale, dt: float, increment: int):
    """One main step: S first, then the Balloon from the new S (the reference order)."""
    s, position = _neural_step(s, position, jw, jg, i_ext, ct, scale, dt, increment)
    z, f, v, q = balloon.euler_step(s, z, f, v, q, dt)
    return s, z, f, v, q, position


class _Runner:
    """Advances static state tensors by blocks of steps: eager, compiled, or replayed CUDA graphs."""

    def __init__(self, state: dict, consts: dict, dt: float, increment: int, compile: bool):
        self.state, self.consts, self.dt, self.increment = state, consts, dt, increment
        self.neural = torch.compile(_neural_step, fullgraph=True, dynamic=False) if compile else _neural_step
        self.main = torch.compile(_main_step, fullgraph=True, dynamic=False) if compile else _main_step
        self.graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        self.use_graphs = compile and state["s"].device.type == "cuda"

    def _run(self, kind: str, n_steps: int) -> None:
        st, c = self.state, self.consts
        args = (c["jw"], c["jg"], c["i_ext"], c["ct"], c["scale"], self.dt, self.increment)
        if kind == "neural":
            s, pos = st["s"], st["position"]
            for _ in range(n_steps):
                s, pos = self.neural(s, pos, *args)
            st["s"].copy_(s)
            st["position"].copy_(pos)
            return
        s, z, f, v, q, pos = (st[k] for k in ("s", "z", "f", "v", "q", "position"))
        for _ in range(n_steps):
            s, z, f, v, q, pos = self.main(s, z, f, v, q, pos, *args)
        for key, value in zip(("s", "z", "f", "v", "q", "position"), (s, z, f, v, q, pos), strict=True):
            st[key].copy_(value)
        st["bold"].copy_(balloon.bold(st["v"], st["q"]))

    def advance(self, kind: str, n_steps: int) -> None:
        """``n_steps`` neural-only ("neural") or full ("main") steps; a graph per distinct block."""
        if n_steps <= 0:
            return
        if not self.use_graphs:
            self._run(kind, n_steps)
            return
        key = (kind, n_steps)
        if key not in self.graphs:
            saved = {k: v.clone() for k, v in self.state.items()}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._run(kind, n_steps)  # compiles (first time) and warms up outside the capture
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._run(kind, n_steps)
            for k, v in saved.items():  # capturing ran nothing: restore the pre-warm-up state
                self.state[k].copy_(v)
            self.graphs[key] = graph
        self.graphs[key].replay()


def integrate_compiled(
    params: RegionalParams,
    c: torch.Tensor,
    protocol: SimProtocol,
    noise: Noise,
    *,
    record_s: bool = False,
    compile: bool | None = None,
    warmup_block: int = 100,
) -> dict[str, torch.Tensor]:
    """Integrate a batch; returns ``bold`` (B, N, n_tr) (and ``s`` at the kept samples if asked).

    ``compile=False`` runs the same step functions eagerly (for CPU tests of the algorithm); None
    compiles on CUDA only.
    """
    if noise.mode == "explicit":
        raise ValueError("simulator=mfm_compiled draws keyed noise; explicit noise needs simulator=mfm_euler")
    bsz, n = params.w.shape
    dtype, device = params.w.dtype, params.w.device
    pairs = (n + 1) // 2
    bases = stream_bases(noise.seed, noise.resolved_keys(bsz)).to(device)
    z, f, v, q = balloon.rest_state((bsz, n), dtype, device)
    state = {
        "s": torch.full((bsz, n), dynamics.S0, dtype=dtype, device=device),  # (B, N)
        "z": z, "f": f, "v": v, "q": q,
        "position": first_positions(bases, pairs),  # (B, pairs) int64
        "bold": torch.zeros((bsz, n), dtype=dtype, device=device),
    }  # fmt: skip
    consts = {
        "jw": dynamics.J * params.w,  # (B, N)
        "jg": (dynamics.J * params.G)[:, None],  # (B, 1)
        "i_ext": params.I,  # (B, N)
        "ct": c.T.contiguous().to(dtype),  # (N, N)
        "scale": dynamics.noise_scale(params.sigma, protocol.dt),  # (B, N)
    }
    compile = device.type == "cuda" if compile is None else compile
    runner = _Runner(state, consts, protocol.dt, position_increment(pairs), compile)
    full, rest = divmod(protocol.warmup_steps, warmup_block)
    for _ in range(full):
        runner.advance("neural", warmup_block)
    runner.advance("neural", rest)

    out = torch.empty((bsz, n, protocol.n_tr), dtype=dtype, device=device)  # (B, N, T)
    out_s = torch.empty_like(out) if record_s else None
    steps = protocol.sample_steps().tolist()
    done = 0
    for k, step in enumerate(steps):
        runner.advance("main", step - done)
        done = step
        if k >= protocol.burn_in_samples:
            out[:, :, k - protocol.burn_in_samples] = state["bold"]
            if out_s is not None:
                out_s[:, :, k - protocol.burn_in_samples] = state["s"]
    result = {"bold": out}
    if out_s is not None:
        result["s"] = out_s
    return result
