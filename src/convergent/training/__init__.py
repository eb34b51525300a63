"""The training engine: a Lightning Fabric loop (``loop.Trainer``), AdamW parameter groups
with layer decay (``optim``), the warm-up + cosine schedule (``schedule``), EMA helpers for
teachers (``ema``), atomic resumable checkpoints (``checkpoint``), the resumable sampler
(``sampler``) and metric logging (``metrics``).

It knows the Task interface (``forward(batch) -> {"loss", ...}``, ``no_weight_decay``,
``layer_id``, ``on_step_end``), never a particular backbone or task. Import from the
submodules (``from convergent.training.loop import Trainer``); this package imports nothing.
"""
