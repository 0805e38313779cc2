"""Experiments over ordinary training jobs: fusion ablations (``ablate``) and feature diagnostics
(``analyze``) on SynthMARS, whose sidecar labels say which frames are corrupted and where each
frame is in the gait cycle."""
