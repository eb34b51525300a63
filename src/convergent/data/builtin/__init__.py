"""Built-in datasets with real data that needs no download: each reads the files of a
registry package (e.g. Debian ``dataset-fashion-mnist``) when installed and otherwise a
small subset bundled under ``assets/`` (with its licence notice). Torch-free ``__init__``."""
