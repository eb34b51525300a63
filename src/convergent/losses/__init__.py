"""Pure, model-agnostic losses (torch and torch.distributed only): reconstruction (SimMIM's
masked L1, MAE's masked MSE, patchify), contrastive, regression.

Import from the submodules (``from convergent.losses.reconstruction import masked_l1``); this
``__init__`` imports nothing.
"""
