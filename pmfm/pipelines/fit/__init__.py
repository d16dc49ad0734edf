"""Fitting: Kong2021's protocol (search, validation, test) as resumable stages, for every strategy
(docs/fitting.md). ``fit(cfg, out_dir)`` runs a whole fit."""
