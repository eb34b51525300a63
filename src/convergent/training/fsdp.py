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

FSDP2 shards along dim 0 and refuses 0-d parameters (CLIP's learnable logit scale): the
sharded copy holds each as ``(1,)`` and its module reads it as before, 0-d (see
:func:`hold_scalars_as_vectors`); the full states above and :func:`gather_into` give
them their 0-d shape back.
"""

from typing import Any

import torch
from torch import nn

OPTIMIZER_FORMAT = "fqn-full"
"""``state["optimizer_format"]`` of FSDP checkpoints: a full optimizer state keyed by parameter names."""
SCALARS = "_fsdp_scalar_names"
"""Attribute of a sharded task: names of its 0-d parameters, held as ``(1,)`` while sharded."""


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
    hold_scalars_as_vectors(module)
    for unit in block_modules(module):
        if any(p.numel() for p in unit.parameters(recurse=True)):
            fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def hold_scalars_as_vectors(module: nn.Module) -> None:
    """Replace every 0-d parameter by a ``(1,)`` one (``fully_shard`` refuses scalars) that its
    module still reads as 0-d: its class becomes a subclass with a property per name (see
    :func:`_scalar_view`). Names and values are unchanged; the names are kept in
    ``module.<SCALARS>``."""
    names = []
    for prefix, owner in module.named_modules():
        scalars = [n for n, p in owner.named_parameters(recurse=False) if p.dim() == 0]
        for n in scalars:
            p = owner._parameters[n]
            owner._parameters[n] = nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad)
            names.append(f"{prefix}.{n}" if prefix else n)
        if scalars:
            views = {n: _scalar_view(n) for n in scalars}
            owner.__class__ = type(type(owner).__name__, (type(owner),), views)
    setattr(module, SCALARS, tuple(names))


def _scalar_view(name: str) -> property:
    """``module.<name>``: in the forward, where FSDP has put the unsharded ``(1,)`` parameter
    into ``_parameters``, a 0-d view of it (the gradient reaches it through the view); the
    sharded parameter (a DTensor, which FSDP itself reads by name) as it is."""
    from torch.distributed.tensor import DTensor

    def get(self: nn.Module) -> torch.Tensor:
        p = self._parameters[name]
        return p if isinstance(p, DTensor) else p.reshape(())

    return property(get)


def _reshape_scalars(module: nn.Module, weights: dict, optim: dict | None, shape: tuple) -> None:
    """In place: the held-as-vector parameters of ``module`` and their optimizer states
    (all but Adam's ``step``, 0-d anyway) to ``shape``: ``()`` to save, ``(1,)`` to load."""
    for name in getattr(module, SCALARS, ()):
        if name in weights:
            weights[name] = weights[name].reshape(shape)
        state = (optim or {}).get("state", {}).get(name, {})
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value):
                state[key] = value.reshape(shape)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full model state dict and full optimizer state (names as keys) on the CPU of rank 0
    (empty dicts elsewhere). A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(module, options=_options(cpu_offload=True))
    optim = get_optimizer_state_dict(module, optimizer, options=_options(cpu_offload=True))
    _reshape_scalars(module, weights, optim, ())
    return weights, optim


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim: dict) -> None:
    """Load full ``weights`` and an optimizer state saved by :func:`full_state` into the
    sharded ``module`` / ``optimizer`` (every process holds the full dicts)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    weights, optim = dict(weights), {**optim, "state": {k: dict(v) for k, v in optim["state"].items()}}
    _reshape_scalars(module, weights, optim, (1,))
    set_model_state_dict(module, weights, options=_options())
    # parameters that never received a gradient (e.g. an unused mask token) have no Adam state
    set_optimizer_state_dict(module, optimizer, optim, options=_options(strict=False))


def gather_into(sharded: nn.Module, target: nn.Module) -> None:
    """Copy the full weights of ``sharded`` into the unsharded ``target`` on every process."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    weights = get_model_state_dict(sharded, options=_options(cpu_offload=False))
    _reshape_scalars(sharded, weights, None, ())
    device = next(target.parameters()).device
    target.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=True)
