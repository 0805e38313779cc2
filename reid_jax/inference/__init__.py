"""Using a trained run on one's own footage: embedding (``model``), folders of frames
(``folders``), gallery search (``search``) and export to ONNX / StableHLO (``export``).

This room sits beside the evaluation: it imports data, models and the evaluation's restore and
extraction helpers; nothing in train/ or evaluation/ imports it. See docs/inference.md.
"""
