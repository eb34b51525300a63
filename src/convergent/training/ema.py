"""Exponential moving averages for teachers (MoCo v3 momentum encoder, data2vec, EMA weights).

EMA teachers belong to the task, and tasks may not import ``training`` (DESIGN.md's
dependency direction), so the implementation lives in :mod:`convergent.tasks.teacher`;
this module re-exports it for the trainer's side.
"""

from convergent.tasks.teacher import cosine_momentum, ema_update_, frozen_copy, linear_momentum

__all__ = ["cosine_momentum", "ema_update_", "frozen_copy", "linear_momentum"]
