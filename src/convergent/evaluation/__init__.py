"""Evaluation of a trained encoder: frozen-feature probes (``features`` → ``knn``,
``linear_probe``), end-to-end ``finetune``, and ``report`` (table + JSON).

This ``__init__`` imports nothing (torch-free); import the submodules, e.g.
``from convergent.evaluation.knn import knn_accuracy``.
"""
