"""The matrix-product floor of a train step: its GEMMs alone, replayed.

One traced step records every matrix product it runs (mm, addmm, bmm, baddbmm, convolutions
and their backward, fused attention kernels) with the shapes, strides and dtypes of their
tensor arguments. :func:`matmul_floor` returns a closure that runs exactly those calls again
on stand-in tensors of the same layout and nothing else: no elementwise work, no norms,
no copies, no optimizer, no Python between the kernels. Its time is a lower bound on the
step at the same FLOPs (its inputs are even cache-warmer than the real step's), so
``peer step time / our floor`` is the largest ratio any rewrite of ours can reach without
doing fewer FLOPs or running its matrix products faster than this library's BLAS does.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATRIX_OPS = {
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten._addmm_activation.default,
    aten.convolution.default,
    aten.convolution_backward.default,
}
_FUSED_ATTENTION = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)
for _name in _FUSED_ATTENTION:
    for _suffix in ("", "_backward"):
        _op = getattr(aten, _name + _suffix, None)
        if _op is not None:
            MATRIX_OPS.add(_op.default)


@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


class _Record(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATRIX_OPS:
            spec = lambda a: _Spec(tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else a  # noqa: E731
            self.calls.append((func, [spec(a) for a in args], {k: spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _stand_in(spec: _Spec) -> torch.Tensor:
    """Random tensor with ``spec``'s layout (overlapping strides included)."""
    size = 1 + sum((n - 1) * s for n, s in zip(spec.shape, spec.stride) if n > 0)
    if not spec.dtype.is_floating_point:
        return torch.zeros(size, dtype=spec.dtype, device=spec.device).as_strided(spec.shape, spec.stride)
    base = torch.randn(size, device=spec.device).to(spec.dtype)
    return base.as_strided(spec.shape, spec.stride)


def matmul_floor(step: Callable[[], object]) -> tuple[Callable[[], None], int]:
    """Trace one call of ``step`` and return (a closure replaying only its matrix products,
    how many there are). The traced call is a real step (its optimizer update happens)."""
    rec = _Record()
    with rec:
        step()
    pool: dict[_Spec, torch.Tensor] = {}

    def arg(a):
        if isinstance(a, _Spec):
            if a not in pool:
                pool[a] = _stand_in(a)
            return pool[a]
        return a

    calls = [(f, [arg(a) for a in args], {k: arg(v) for k, v in kw.items()}) for f, args, kw in rec.calls]

    def replay() -> None:
        for f, args, kw in calls:
            f(*args, **kw)

    return replay, len(calls)
