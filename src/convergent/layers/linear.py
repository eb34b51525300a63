"""``y = x Wᵀ + b`` with the faster of the CPU's two fp32 matrix-multiply libraries.

PyTorch's CPU ``F.linear`` runs fp32 products through its BLAS (MKL in the x86 wheels). On
some CPUs that BLAS is far from the machine's peak (on the AMD EPYC development machine, MKL's
sgemm reaches ~170 GFLOP/s on 2 threads where oneDNN reaches ~340). oneDNN is in every
PyTorch CPU build as the convolution engine, and a 1×1 convolution over a channels-last view
of the ``(M, K)`` input *is* ``x Wᵀ + b``: no copy in, no copy out, the same function up to the
order of fp32 additions (relative differences ~1e-6, as between any two BLAS).

:func:`linear` takes that path when it can pay off: CPU, fp32, no autocast, at least
``MIN_MACS`` multiply-adds, and :func:`cpu_engine` is ``"onednn"``. The backward pass is
written out so each product takes its fastest route: input gradient through a second 1×1
convolution, weight gradient through oneDNN's convolution backward-weights.

:func:`cpu_engine` chooses once per process. ``CONVERGENT_CPU_MATMUL=onednn|blas`` forces a
choice; ``auto`` (default) decides from the machine, never from a timing: oneDNN on AMD CPUs
whose PyTorch kernels run AVX-512 (``torch.backends.cpu.get_cpu_capability()``) and whose oneDNN
is not capped below it (``ONEDNN_MAX_CPU_ISA``), the BLAS elsewhere. MKL, the BLAS of the x86
wheels, takes its fast AVX-512 paths on Intel CPUs only: on a 2-core AMD EPYC oneDNN's fp32
GEMMs measured 350-400 GFLOP/s against MKL's 150-175, on a 2-core Intel Xeon with AMX both ran
330-430 over the layer shapes of Swin V2 Tiny and ViT-B, and on AVX2 both reach ~110-135 while
oneDNN's convolution path costs more around the product (Swin V2 Tiny's SimMIM step ran 0.72x
HF with it against 0.90x with MKL). An earlier version timed both routes at start; under load
that timing chose either, so two processes of one run could differ in the last bits. The
Trainer still decides once per run (rank 0, broadcast), records the route in its checkpoints
and sets it again on resume, which keeps a resume exact when the run moves to another machine
(:mod:`convergent.training.numerics`).
"""

import os
import platform

import torch
import torch.nn.functional as F
from torch import nn

ENV = "CONVERGENT_CPU_MATMUL"
ENGINES = ("auto", "onednn", "blas")
MIN_MACS = 1 << 23
"""Smaller products stay on the BLAS: a convolution call costs a few µs more."""
FAST_ISAS = ("AVX512",)
"""``get_cpu_capability()`` prefixes where ``auto`` takes oneDNN."""
_engine: str | None = None


def cpu_engine() -> str:
    """``"onednn"`` or ``"blas"``: how fp32 CPU linears run in this process (see module doc)."""
    global _engine
    if _engine is None:
        choice = requested_engine()
        _engine = default_engine() if choice == "auto" else choice
    return _engine


def requested_engine() -> str:
    """``CONVERGENT_CPU_MATMUL`` as set: ``"auto"`` (also when unset), ``"onednn"`` or ``"blas"``."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ENGINES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(ENGINES)}")
    return choice


def set_cpu_engine(engine: str | None) -> None:
    """Force ``"onednn"`` / ``"blas"``, or ``None`` to choose again on next use (tests)."""
    global _engine
    if engine is not None and engine not in ENGINES[1:]:
        raise ValueError(f"engine {engine!r}: expected 'onednn', 'blas' or None")
    _engine = engine


@torch.compiler.assume_constant_result  # a module compiled before its first eager call takes it too
def default_engine() -> str:
    """What ``auto`` takes on this machine (module doc): ``"onednn"`` on an AMD CPU whose PyTorch
    kernels run one of ``FAST_ISAS``, with oneDNN present and not capped below AVX-512 by
    ``ONEDNN_MAX_CPU_ISA`` (or its older name ``DNNL_MAX_CPU_ISA``); else ``"blas"``. The same
    answer in every process of a machine, whatever its load, so tracing reads it as a constant."""
    if not torch.backends.mkldnn.is_available() or cpu_vendor() != "AuthenticAMD":
        return "blas"
    if not torch.backends.cpu.get_cpu_capability().upper().startswith(FAST_ISAS):
        return "blas"
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return "onednn" if cap in ("ALL", "DEFAULT") or cap.startswith(("AVX512", "AVX10", "AMX")) else "blas"


def cpu_vendor() -> str:
    """The x86 vendor string (``GenuineIntel``, ``AuthenticAMD``) from ``/proc/cpuinfo`` or, where
    there is none (Windows), ``platform.processor()``; ``""`` when neither names one (ARM, macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    proc = platform.processor()
    return next((v for v in ("AuthenticAMD", "GenuineIntel") if v in proc), "")


def _nhwc(a: torch.Tensor) -> torch.Tensor:
    """Contiguous ``(M, K)`` viewed as a channels-last ``(1, K, M, 1)`` image: no copy."""
    m, k = a.shape
    return a.as_strided((1, k, m, 1), (m * k, 1, k, k))


def onednn_mm(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``a @ w.T + bias`` for contiguous ``a`` ``(M, K)`` and ``w`` ``(N, K)`` of any strides
    (oneDNN reorders weights into its own layout either way), by oneDNN."""
    n = w.shape[0]
    y = F.conv2d(_nhwc(a), w[:, :, None, None], bias)  # (1, N, M, 1), channels-last
    return y.permute(0, 2, 3, 1).reshape(a.shape[0], n)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_mm(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        n, k = weight.shape
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = onednn_mm(grad, weight.t(), None)  # grad @ W
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(
                _nhwc(grad), _nhwc(x), weight[:, :, None, None], None,
                [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False],
            )[1].reshape(n, k)  # fmt: skip  # gradᵀ @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb


def _takes_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and x.dim() >= 2
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_exporting()  # an exported graph (ONNX) holds the plain product, any batch
        and x.numel() * weight.shape[0] >= MIN_MACS
        and cpu_engine() == "onednn"
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where that is faster (module doc)."""
    if not _takes_onednn(x, weight):
        return F.linear(x, weight, bias)
    lead, k = x.shape[:-1], x.shape[-1]
    if k != weight.shape[1]:
        return F.linear(x, weight, bias)  # let PyTorch raise its shape error
    y = _OneDNNLinear.apply(x.reshape(-1, k).contiguous(), weight, bias)
    return y.view(*lead, weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and init) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
