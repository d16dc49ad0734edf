"""The configs of the pipeline runs a study makes (a surrogate's training, a fit, another study).

A study names such a run with a node ``{groups: {group: choice}, values: {...}}``: the group choices
become the overrides the command's config is composed with, the values are merged into it (typed,
checked against its keys), and the study's data, protocol, simulator, cost and device are passed on,
so every stage sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pmfm.pipelines.config import ConfigError

SHARED = ("data", "protocol", "simulator", "cost")  # what a sub-run takes from the study by default
RUN_KEYS = ("device", "seed", "plot", "progress")  # passed on where the command's config has them


def plain(node) -> dict:
    """A config node (or None) as a plain dict, interpolations resolved."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        out = OmegaConf.to_container(node, resolve=True)
        assert isinstance(out, dict)
        return out
    return dict(node)


def sub_config(
    command: str,
    cfg: DictConfig,
    *nodes: Mapping | None,
    share: tuple[str, ...] = SHARED,
    groups: Mapping | None = None,
    values: Mapping | None = None,
) -> DictConfig:
    """The config of ``command`` (``train``, ``fit``, ``experiment``) for a run of the study ``cfg``.

    Composed with the group choices of ``nodes`` (later ones win) and ``groups``; then the study's
    ``share`` nodes and run keys are merged in, then the values of ``nodes`` and ``values``.
    """
    choices: dict = {}
    for node in nodes:
        choices |= plain((node or {}).get("groups"))
    choices |= dict(groups or {})
    try:
        sub = compose(command, overrides=[f"{k}={v}" for k, v in choices.items()])
        passed = {k: cfg[k] for k in share} | {k: cfg[k] for k in RUN_KEYS if k in sub and k in cfg}
        for part in (passed, *(plain((n or {}).get("values")) for n in nodes), plain(values)):
            sub = OmegaConf.merge(sub, part)  # type: ignore[assignment]
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"the {command} config of study {cfg.study.name}: {err}") from None
    assert isinstance(sub, DictConfig)
    return sub


def overrides_of(groups: Mapping, values: Mapping, prefix: str = "") -> list[str]:
    """``group=choice`` and dotted ``key=value`` strings: how a run's settings read on a command line."""
    out = [f"{k}={v}" for k, v in groups.items()]
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += overrides_of({}, value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out
