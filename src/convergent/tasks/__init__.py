"""Objectives ("predict the unknown input"): a task wraps a backbone, takes a dict batch and
returns a dict with ``"loss"``. This ``__init__`` is torch-free; see ``registry``."""
