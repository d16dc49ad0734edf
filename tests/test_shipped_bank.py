"""The bank and emulator shipped in the package: they serve the bundled data, and a fit starts from a
copy of the bank (a bank grows), never from the package's files."""

import shutil

import torch
from conftest import compose_config

from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.datasets.store import BUNDLED_DATASETS, load_dataset, rows_checksum

SHIPPED = BUNDLED_DATASETS / "bank_pmfm_1200tr_r3"


def test_the_shipped_bank_serves_the_bundled_group_and_its_emulator_ranks_its_rows():
    from pmfm.cost import KONG2021, fcd_pair_count
    from pmfm.cost.stats import cost_from_stats
    from pmfm.data import load
    from pmfm.models.emulator import EmulatorModule, emulated_costs
    from pmfm.models.metrics import spearman
    from pmfm.sim.simulator import Simulator

    simulator, data = Simulator(), load(None, "train")
    Bank(SHIPPED).check(fingerprint(data, simulator, KONG2021), "the bundled HCP group")  # raises if not
    rows = Bank(SHIPPED).load()
    assert len(rows["theta"]) == 1152 and (rows["repeats"] == 3).all()  # 256 Sobol, 512 starts, 4 x 96 CMA-ES
    assert sum(p.name.startswith("cmaes_synthetic_") for p in Bank(SHIPPED).parts()) == 4  # never the group
    stats = bank_stats(rows, fcd_pair_count(simulator.protocol.n_tr, KONG2021.window))
    stored = cost_from_stats(stats, data.fc, data.fcd_cdf).total
    emulator = EmulatorModule.load_from_checkpoint(SHIPPED / "emulator.ckpt", map_location="cpu")
    space = simulator.param_space(data)
    emulated = emulated_costs(
        emulator, space.normalise(torch.as_tensor(rows["theta"])), data.fc, data.fcd_cdf
    )
    assert spearman(emulated.total, stored) > 0.7  # trained on these rows (measured 0.75): it is this bank's


def test_a_missing_bank_starts_as_a_copy_of_the_shipped_one(tmp_path, monkeypatch):
    import pmfm.pipelines.folders as folders

    shipped = tmp_path / "package" / "bank_pmfm_1200tr_r3"
    shutil.copytree(SHIPPED, shipped, ignore=shutil.ignore_patterns("s*_*", "targets", "*.ckpt"))
    monkeypatch.setattr(folders, "BUNDLED_DATASETS", shipped.parent)
    before = {p.name: rows_checksum(load_dataset(p)) for p in Bank(shipped).parts()}
    cfg = compose_config("fit", ["strategy=amortised", f"paths.datasets={tmp_path / 'datasets'}"])
    folder = folders.dataset_folder(cfg)
    assert folder == tmp_path / "datasets" / "bank_pmfm_1200tr_r3"
    assert {p.name: rows_checksum(load_dataset(p)) for p in Bank(folder).parts()} == before
    assert not list(folder.parent.glob(".*tmp*"))  # copied aside, then renamed into place
    shutil.rmtree(next(iter(Bank(folder).parts())))  # the user's bank changes; the next run keeps it
    assert folders.dataset_folder(cfg) == folder and len(Bank(folder).parts()) == len(before) - 1
    assert {p.name: rows_checksum(load_dataset(p)) for p in Bank(shipped).parts()} == before
