"""From a composed config to the library's objects, and the errors every command reports alike.

The ``simulator``, ``protocol`` and ``search`` config groups are checked by Hydra against schemas
derived from :class:`pmfm.sim.simulator.Simulator`, :class:`pmfm.sim.protocol.SimProtocol` and
:class:`pmfm.search.runner.SearchSettings` (registered in
Hydra's ConfigStore when this module is imported), so a misspelt key or a value of the wrong type
stops the command before it starts, and each default is written once, in those classes.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from pmfm.cost import CostVariant, cost_variant
from pmfm.data import DataError, EmpiricalData, fcd_pair_count, load
from pmfm.datasets import DatasetError
from pmfm.params import ParamError
from pmfm.pipelines.fit.stages import FitError
from pmfm.pipelines.fit.state import StateError
from pmfm.search.runner import SearchSettings
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.simulator import Simulator


class ConfigError(ValueError):
    """Settings that cannot work together (named with the keys to change)."""


def schema(cls: type, exclude: tuple[str, ...] = ()) -> type:
    """A mutable dataclass with ``cls``'s fields, types and defaults, minus ``exclude``: what Hydra
    validates a config group against (frozen classes cannot take the YAML's values)."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = (
            dataclasses.field(default=f.default)
            if f.default is not dataclasses.MISSING
            else dataclasses.field(default_factory=f.default_factory)
        )
        fields.append((f.name, hints[f.name], default))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def register_schemas() -> None:
    """``<group>/schema`` for the simulator, protocol and search groups, the first entry of their files."""
    store = ConfigStore.instance()
    store.store(group="simulator", name="schema", node=schema(Simulator, exclude=("protocol", "device")))
    store.store(group="protocol", name="schema", node=schema(SimProtocol))
    store.store(group="search", name="schema", node=schema(SearchSettings))


register_schemas()

USER_ERRORS = (DataError, ParamError, DatasetError, ConfigError, StateError, FitError, FileNotFoundError)


def simulator_of(cfg: DictConfig) -> Simulator:
    """The run's simulator: the ``simulator`` group, the ``protocol`` group and ``device``."""
    settings: dict = OmegaConf.to_container(cfg.simulator, resolve=True)  # type: ignore[assignment]
    protocol = SimProtocol(**OmegaConf.to_container(cfg.protocol, resolve=True))  # type: ignore[arg-type]
    try:
        return Simulator(protocol=protocol, device=cfg.device, **settings)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def variant_of(cfg: DictConfig, simulator: Simulator) -> CostVariant:
    """The ``cost`` group's variant (``auto``: the circuit's own)."""
    try:
        return cost_variant(cfg.cost.name, simulator.circuit)
    except ValueError as err:
        raise ConfigError(f"cost={cfg.cost.name}: {err}") from None


def load_data(data_cfg: DictConfig, simulator: Simulator, variant: CostVariant, split=None) -> EmpiricalData:
    """The configured data split, validated against the protocol's TRs and the cost's FCD settings.

    ``data.fcd_n_tr``: the TRs the files' FCD CDF counts (the bundled HCP group: 1,200). Under a
    protocol that keeps another number of TRs (``protocol=short``) the CDF is rescaled to the
    protocol's window pairs: the same distribution, though a shorter run's FCD spreads more, so
    such costs compare only with each other (docs/protocol.md#shortened-protocols).
    """
    n_tr = simulator.protocol.n_tr
    source_tr = data_cfg.get("fcd_n_tr") or n_tr
    data = load(
        data_cfg.path, split or data_cfg.split, n_tr=source_tr, window=variant.window, n_bins=variant.n_bins
    )
    if source_tr == n_tr:
        return data
    cdf = np.asarray(data.fcd_cdf, dtype=np.float64)
    pairs = fcd_pair_count(n_tr, variant.window)
    return dataclasses.replace(data, fcd_cdf=np.rint(cdf / cdf[-1] * pairs).astype(np.int64))


def load_test(cfg: DictConfig, n_regions: int, simulator, variant):
    """The user's test split (covariates are never taken from it), or None when not named."""
    path = cfg.test.path
    if not path:
        return None
    data = load(path, "test", n_tr=simulator.protocol.n_tr, window=variant.window, n_bins=variant.n_bins)
    if data.n_regions != n_regions:
        raise DataError(
            Path(path), f"test split has {data.n_regions} regions", f"{n_regions}, as the training data"
        )
    return data


def fill_run_values(cfg: DictConfig, out_dir: Path) -> None:
    """The values known only at run time (``???`` in the configs): where loggers and checkpoints write."""
    with open_dict(cfg):
        for logger in (cfg.get("logger") or {}).values():
            logger.save_dir = str(out_dir)
        for callback in (cfg.get("callbacks") or {}).values():
            if "dirpath" in callback.keys():  # (a ??? value is "not in" the node itself)
                callback.dirpath = str(out_dir / "checkpoints")


def run_folder() -> Path:
    """The Hydra run folder of the command being run."""
    return Path(HydraConfig.get().runtime.output_dir)


def exit_on_user_error(job, *args):
    """``job(*args)``; bad input (a file, a field, a setting) prints ``error: ...`` and exits with 2."""
    try:
        return job(*args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
