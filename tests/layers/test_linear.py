"""layers/linear.py: the oneDNN route computes F.linear (values and gradients), and is taken
only where it should be."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent.layers import linear as linear_module
from convergent.layers.linear import ENV, MIN_MACS, Linear, cpu_engine, default_engine, linear, set_cpu_engine


@pytest.fixture
def engine():
    yield set_cpu_engine
    set_cpu_engine(None)


def _grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(g)
    return out.detach(), [t.grad for t in inputs if t is not None]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_onednn_route_matches_f_linear(engine, bias, layout):
    engine("onednn")
    torch.manual_seed(0)
    x = torch.randn(4, 96, 64) if layout == "contiguous" else torch.randn(4, 64, 96).transpose(1, 2)
    w = torch.randn(512, 64) * 0.1 if layout == "contiguous" else (torch.randn(64, 512) * 0.1).t()
    b = torch.randn(512) if bias else None
    assert x.numel() * w.shape[0] >= MIN_MACS
    ours, ours_grads = _grads(linear, x, w, b)
    ref, ref_grads = _grads(F.linear, x, w, b)
    assert ours.shape == ref.shape == (4, 96, 512)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


def test_onednn_route_is_a_convolution(engine):
    """Forward and backward run as oneDNN convolutions, not as BLAS products."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    engine("onednn")
    x = torch.randn(256, 256, requires_grad=True)
    layer = Linear(256, 256)
    with Ops():
        layer(x).sum().backward()
    assert not {"mm.default", "addmm.default"} & set(seen)
    assert "convolution.default" in seen and "convolution_backward.default" in seen


def test_small_products_blas_forced_and_autocast_take_f_linear(engine):
    engine("onednn")
    small = torch.randn(8, 16)
    w = torch.randn(32, 16)
    assert torch.equal(linear(small, w), F.linear(small, w))  # below MIN_MACS
    big = torch.randn(512, 256)
    w = torch.randn(512, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(big, w).dtype == torch.bfloat16  # autocast's own bf16 matmul
    engine("blas")
    assert torch.equal(linear(big, w), F.linear(big, w))


def test_linear_module_is_an_nn_linear_with_the_same_state(engine):
    engine("onednn")
    torch.manual_seed(0)
    ref = nn.Linear(128, 256)
    ours = Linear(128, 256)
    ours.load_state_dict(ref.state_dict())
    assert isinstance(ours, nn.Linear) and list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(300, 128)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_engine_choice_from_the_environment(engine, monkeypatch):
    engine(None)
    monkeypatch.setenv(ENV, "blas")
    assert cpu_engine() == "blas"
    engine(None)
    monkeypatch.setenv(ENV, "onednn")
    assert cpu_engine() == "onednn"
    engine(None)
    monkeypatch.setenv(ENV, "auto")
    assert cpu_engine() == default_engine()
    engine(None)
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(ValueError, match="CONVERGENT_CPU_MATMUL='fast'"):
        cpu_engine()
    with pytest.raises(ValueError, match="engine 'mkl'"):
        set_cpu_engine("mkl")


@pytest.mark.parametrize(
    ("vendor", "capability", "onednn_cap", "want"),
    [
        ("AuthenticAMD", "AVX512", None, "onednn"),  # MKL's fp32 GEMMs at ~half oneDNN's speed
        ("AuthenticAMD", "AVX512", "AVX512_CORE_BF16", "onednn"),
        ("AuthenticAMD", "AVX512", "AVX2", "blas"),  # oneDNN capped below AVX-512: no faster
        ("AuthenticAMD", "AVX2", None, "blas"),
        ("GenuineIntel", "AVX512", None, "blas"),  # MKL's own fast paths
        ("", "DEFAULT", None, "blas"),
    ],
)
def test_auto_decides_from_the_machine_never_a_timing(monkeypatch, vendor, capability, onednn_cap, want):
    monkeypatch.setattr(linear_module, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if onednn_cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)
    assert [default_engine() for _ in range(3)] == [want] * 3  # the same answer every time


def test_cpu_vendor_reads_the_machine():
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 only")
    assert linear_module.cpu_vendor() in ("AuthenticAMD", "GenuineIntel")


def test_onednn_route_compiles_without_graph_breaks(engine):
    engine("onednn")
    torch.manual_seed(0)
    layer = Linear(256, 512)
    x = torch.randn(4, 64, 256)
    want, want_grads = _grads(lambda t: layer(t), x)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got, got_grads = _grads(lambda t: compiled(t), x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grads[0], want_grads[0])


@pytest.mark.parametrize(("vendor", "want"), [("AuthenticAMD", "onednn"), ("GenuineIntel", "blas")])
def test_a_layer_compiled_before_any_eager_call_takes_the_machines_route(engine, monkeypatch, vendor, want):
    monkeypatch.setattr(linear_module, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    engine(None)
    torch._dynamo.reset()  # each case is a fresh process: no graph traced under the other machine
    torch.manual_seed(0)
    layer = Linear(256, 512)
    x = torch.randn(4, 64, 256)
    got = torch.compile(layer, fullgraph=True, backend="aot_eager")(x)  # decides inside the trace
    assert cpu_engine() == want
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_choosing_the_engine_leaves_the_callers_rng_and_flop_count_alone(engine, monkeypatch):
    """`auto` decides on the first large linear; that must not draw from the global random stream
    (a resumed run would diverge) nor show up in the caller's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setenv(ENV, "auto")
    layer = Linear(256, 512)
    x = torch.randn(1024, 256)
    torch.manual_seed(3)
    want = torch.rand(4)
    engine(None)
    torch.manual_seed(3)
    with FlopCounterMode(display=False) as counter:
        layer(x)  # first large linear: chooses the engine here
    assert torch.equal(torch.rand(4), want)
    assert counter.get_total_flops() == 2 * 1024 * 256 * 512
