"""The training engine: a Lightning Fabric loop (``loop.Trainer``), AdamW parameter groups
with layer decay (``optim``), the warm-up + cosine schedule (``schedule``), EMA helpers for
teachers (``ema``), atomic resumable checkpoints (``checkpoint``), the resumable sampler
(``sampler``), metric logging (``metrics``) and the batch-key check of a run (``batch_keys``).

It knows the Task interface (``forward(batch) -> {"loss", ...}``, ``batch_keys``,
``no_weight_decay``, ``layer_id``, ``on_step_end``) and the Dataset contract
(:mod:`convergent.data.protocol`), never a particular backbone, task or dataset. Import from the
submodules (``from convergent.training.loop import Trainer``); this package imports nothing.
"""
