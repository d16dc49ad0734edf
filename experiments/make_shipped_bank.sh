#!/usr/bin/env bash
# How the shipped bank and its emulator (pmfm/datasets/bundled/bank_pmfm_1200tr_r3) are made: the bank
# of simulated statistics on the bundled HCP group's SC, covariates and protocol, then the emulator
# trained on all its rows, then both copied into the package (where dataset=bank finds them: a fit
# copies the shipped bank to paths.datasets before adding to it, and uses its emulator.ckpt).
#   CPU (the shipped one): 3,456 simulations, 37 min, then 50 s of training, 2-core AMD EPYC.
#   GPU: DATASET=bank_gpu bash experiments/make_shipped_bank.sh (a larger bank, the same steps).
# Usage: bash experiments/make_shipped_bank.sh   (from the repository root, the package installed)
set -eu
DATASET=${DATASET:-bank}
BANK=${BANK:-outputs/datasets/shipped_bank}
RUN=${RUN:-outputs/train/shipped_emulator}
SHIPPED=pmfm/datasets/bundled/bank_pmfm_1200tr_r3
python -m pmfm.generate dataset="$DATASET" dataset.folder="$BANK"
python -m pmfm.train model=emulator dataset="$DATASET" dataset.folder="$BANK" "datamodule.split=[1.0,0.0,0.0]" \
  trainer.max_epochs=300 seed=1 logger=csv +trainer.enable_progress_bar=false hydra.run.dir="$RUN"
cp "$RUN/checkpoints/last.ckpt" "$BANK/emulator.ckpt"
rm -rf "$SHIPPED" && cp -r "$BANK" "$SHIPPED"
# the synthetic subjects' notes name the files they were made from: relative to the repository
sed -i "s|\"$PWD/|\"|g" "$SHIPPED"/targets/*/*/target.json
du -sh "$SHIPPED"
