"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for the Trainer.

``strategy="fsdp"`` runs Fabric's ``ModelParallelStrategy`` with a data-parallel mesh over
all processes and no tensor parallelism: every Transformer block (see :func:`block_modules`)
becomes its own FSDP unit, then the whole task.
Parameters, gradients and optimizer states are sharded; works on GPUs (NCCL) and on CPU
(gloo), which is how it is tested here.

The Trainer shards a *copy* of the task, so the task object a caller passed keeps plain
tensors: after ``fit`` the full weights are gathered back into it (see
:func:`gather_into`), and evaluation / ``save_pretrained`` work unchanged. Checkpoints
hold full (unsharded) state: model weights and an optimizer state keyed by parameter name,
gathered with ``torch.distributed.checkpoint.state_dict`` (rank 0 writes them), so a run
saved under FSDP can be read without it and resumed with any process count.
"""

from typing import Any

import torch
from torch import nn

OPTIMIZER_FORMAT = "fqn-full"
"""``state["optimizer_format"]`` of FSDP checkpoints: a full optimizer state keyed by parameter names."""


def fsdp_strategy(world_size: int):
    """Fabric strategy for FSDP over ``world_size`` processes."""
    from lightning_fabric.strategies import ModelParallelStrategy

    return ModelParallelStrategy(
        parallelize_fn=shard_task, data_parallel_size=world_size, tensor_parallel_size=1,
        save_distributed_checkpoint=False,
    )  # fmt: skip


def block_modules(module: nn.Module) -> list[nn.Module]:
    """The sharding units: elements of every ``ModuleList`` whose elements share one class and
    hold no ``ModuleList`` themselves — Transformer blocks of backbones and decoders. Containers
    such as Swin stages are left to their parent: a unit must be *called* (its forward hooks
    gather its parameters), and a stage's blocks and patch merging are called one by one."""
    units = []
    for child in module.modules():
        if not isinstance(child, nn.ModuleList) or not len(child) or len({type(m) for m in child}) != 1:
            continue
        if any(isinstance(m, nn.ModuleList) for unit in child for m in unit.modules()):
            continue
        units.extend(child)
    return units


def shard_task(module: nn.Module, device_mesh: Any) -> nn.Module:
    """``parallelize_fn`` of the strategy: ``fully_shard`` each block, then the root."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh["data_parallel"]
    for unit in block_modules(module):
        if any(p.numel() for p in unit.parameters(recurse=True)):
            fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full model state dict and full optimizer state (names as keys) on the CPU of rank 0
    (empty dicts elsewhere). A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(module, options=_options(cpu_offload=True))
    optim = get_optimizer_state_dict(module, optimizer, options=_options(cpu_offload=True))
    return weights, optim


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim: dict) -> None:
    """Load full ``weights`` and an optimizer state saved by :func:`full_state` into the
    sharded ``module`` / ``optimizer`` (every process holds the full dicts)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(module, weights, options=_options())
    # parameters that never received a gradient (e.g. an unused mask token) have no Adam state
    set_optimizer_state_dict(module, optimizer, optim, options=_options(strict=False))


def gather_into(sharded: nn.Module, target: nn.Module) -> None:
    """Copy the full weights of ``sharded`` into the unsharded ``target`` on every process."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    weights = get_model_state_dict(sharded, options=_options(cpu_offload=False))
    device = next(target.parameters()).device
    target.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=True)
