"""Hydra overrides that carry an experiment's data, protocol and device into the configs of the
entry points a study calls (``pmfm.train``, ``pmfm.fit``), so every stage sees the same data."""

from __future__ import annotations

from omegaconf import DictConfig


def shared_overrides(
    cfg: DictConfig, data_path=None, split: str | None = None, simulator: bool = True
) -> list[str]:
    """``data=...``, ``data.path``, ``data.split``, ``device`` and (with ``simulator``) every
    ``simulator.protocol.*`` value and the dtype.

    ``data_path`` replaces the data folder (then ``data=folder``); ``split`` the data split.
    """
    path = data_path if data_path is not None else cfg.data.path
    out = [f"data={'folder' if data_path is not None else cfg.data.name}"]
    if path is not None:
        out.append(f"data.path={path}")
    out.append(f"data.split={split or cfg.data.split}")
    if simulator:
        out += [f"simulator.protocol.{k}={v}" for k, v in cfg.simulator.protocol.items()]
        out.append(f"simulator.dtype={cfg.simulator.dtype}")
    return [*out, f"device={cfg.device}"]
