"""Evaluation of a trained encoder, image or text: frozen-feature probes (``features`` →
``knn``, ``linear_probe``), end-to-end ``finetune``, language-model metrics (``language``:
token accuracy and perplexity of an MLM / causal-LM task), and ``report`` (table + JSON).

This ``__init__`` imports nothing (torch-free); import the submodules, e.g.
``from convergent.evaluation.knn import knn_accuracy``.
"""
