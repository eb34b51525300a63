"""Decoders and heads that sit on a backbone's tokens: SimMIM's linear pixel decoder and
MAE's Transformer decoder (``pixel_decoder``), projection MLPs, the LM head, the classifier.

Import from the submodules (``from convergent.heads.pixel_decoder import MAEDecoder``); this
``__init__`` imports nothing, so each head stays independent of the others.
"""
