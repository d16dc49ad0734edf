"""The model's physics as pure functions of state and parameters: the pMFM's neural dynamics, the
Balloon-Windkessel haemodynamics, the FIC model and the linearisation around a steady state
(docs/model.md, docs/haemodynamics.md, docs/fic.md). The integrators (``pmfm.sim``) own the time loop."""
