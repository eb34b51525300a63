"""``layers/attention.py`` against a hand-written ``softmax(q kᵀ / sqrt(d) + bias) v`` per sample
and head in float64: additive bias, key padding (bool and 0/1 masks), causal alone (SDPA's
``is_causal``) and mixed with other masks, Swin V2's cosine attention with its clamped logit
scale and no key bias, the 5-d windowed path against the reference and against the same
windows through SDPA, gradients of inputs and parameters, the unpadded route."""

import math

import pytest
import torch

from convergent.layers.attention import Attention
from convergent.layers.unpad import Unpadded
from tests.conftest import randomize_

C, H = 16, 4  # width, heads: head_dim 4
TOL = dict(atol=2e-6, rtol=1e-6)  # outputs up to ~6 (weights of std 0.3): fp32 rounding ~1e-6
COS_TOL = dict(atol=2e-5, rtol=0)  # logits scaled by up to 100 carry 100x a cosine's rounding


def reference_attention(
    attn: Attention,
    x: torch.Tensor,
    q_b: torch.Tensor | float,
    k_b: torch.Tensor | float,
    v_b: torch.Tensor | float,
    bias: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    causal: bool = False,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` ``(B, N, C)`` → ``(B, N, C)`` in float64, one sample and head at a time with attn's
    weights. ``bias`` broadcastable to ``(B, heads, N, N)``; ``keep`` ``(B, N)`` True for real
    keys; ``logit_scale`` ``(heads, 1, 1)``: Swin V2's logits q̂·k̂ · min(exp(scale), 100)."""
    b, n, c = x.shape
    heads = attn.num_heads
    d = c // heads
    x, w = x.double(), attn.qkv.weight.double()  # w (3C, C): rows of q, then k, then v
    q, k, v = x @ w[:c].T + q_b, x @ w[c : 2 * c].T + k_b, x @ w[2 * c :].T + v_b  # (B, N, C) each
    if bias is not None:
        bias = bias.double().expand(b, heads, n, n)
    future = torch.ones(n, n).triu(1).bool()
    out = torch.zeros(b, n, c, dtype=torch.float64)
    for i in range(b):
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            qh, kh, vh = q[i, :, cols], k[i, :, cols], v[i, :, cols]  # (N, d)
            if logit_scale is None:
                logits = qh @ kh.T / math.sqrt(d)
            else:
                qh, kh = qh / qh.norm(dim=-1, keepdim=True), kh / kh.norm(dim=-1, keepdim=True)
                logits = qh @ kh.T * logit_scale[h, 0, 0].double().exp().clamp(max=100.0)
            if bias is not None:
                logits = logits + bias[i, h]
            if keep is not None:
                logits = logits.masked_fill(~keep[i][None, :], -math.inf)  # padded keys
            if causal:
                logits = logits.masked_fill(future, -math.inf)
            e = (logits - logits.max(dim=-1, keepdim=True).values).exp()
            out[i, :, cols] = (e / e.sum(dim=-1, keepdim=True)) @ vh  # (N, d)
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


def plain() -> Attention:
    """BERT / ViT attention with noticeable random weights and biases."""
    return randomize_(Attention(C, H), 0.3).eval()


def swin_v2() -> Attention:
    """Cosine attention, q and v biases only; head 1's logit scale lies above the clamp at 100."""
    attn = randomize_(Attention(C, H, key_bias=False, cosine=True), 0.3).eval()
    with torch.no_grad():
        attn.logit_scale.copy_(torch.tensor([5.0, 300.0, 1.0, 20.0]).log().view(H, 1, 1))
    return attn


def qkv_biases(attn: Attention) -> tuple:
    return tuple(attn.qkv.bias.chunk(3))


def right_padding(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N) bool, True = real


def test_plain_attention_matches_reference():
    attn, x = plain(), torch.randn(3, 7, C)
    torch.testing.assert_close(attn(x), reference_attention(attn, x, *qkv_biases(attn)).float(), **TOL)
    no_bias = randomize_(Attention(C, H, qkv_bias=False), 0.3).eval()
    assert no_bias.qkv.bias is None
    torch.testing.assert_close(no_bias(x), reference_attention(no_bias, x, 0.0, 0.0, 0.0).float(), **TOL)


def test_bias_and_key_padding_mask():
    attn, x = plain(), torch.randn(3, 7, C)
    bias = torch.randn(3, H, 7, 7)  # (B, heads, N, N)
    keep = right_padding([7, 4, 1], 7)
    want = reference_attention(attn, x, *qkv_biases(attn), bias=bias, keep=keep).float()
    torch.testing.assert_close(attn(x, bias=bias, key_padding_mask=keep), want, **TOL)
    torch.testing.assert_close(attn(x, bias=bias, key_padding_mask=keep.long()), want, **TOL)  # 0/1 mask
    # padding alone; padded keys' contents do not matter
    want = reference_attention(attn, x, *qkv_biases(attn), keep=keep).float()
    torch.testing.assert_close(attn(x, key_padding_mask=keep), want, **TOL)
    changed = x.masked_fill(~keep[..., None], 5.0)
    torch.testing.assert_close(attn(changed, key_padding_mask=keep)[keep], want[keep], **TOL)


def test_causal_alone_and_with_other_masks():
    attn, x = plain(), torch.randn(2, 6, C)
    biases = qkv_biases(attn)
    # alone: SDPA's is_causal; later tokens do not change earlier outputs
    out = attn(x, causal=True)
    torch.testing.assert_close(out, reference_attention(attn, x, *biases, causal=True).float(), **TOL)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    torch.testing.assert_close(attn(x2, causal=True)[:, :4], out[:, :4], **TOL)
    # folded into one additive mask with padding and a bias
    keep, bias = right_padding([6, 3], 6), torch.randn(1, H, 6, 6)
    want = reference_attention(attn, x, *biases, bias=bias, keep=keep, causal=True).float()
    torch.testing.assert_close(attn(x, bias=bias, key_padding_mask=keep, causal=True), want, **TOL)


def test_swin_v2_cosine_attention_with_clamped_logit_scale():
    attn, x = swin_v2(), torch.randn(2, 9, C)
    assert attn.qkv.bias is None  # the key bias is fixed at zero
    bias = 16 * torch.rand(H, 9, 9)  # (heads, N, N), as ContinuousPositionBias gives
    want = reference_attention(attn, x, attn.q_bias, 0.0, attn.v_bias, bias=bias, logit_scale=attn.logit_scale)
    torch.testing.assert_close(attn(x, bias=bias), want.float(), **COS_TOL)
    # the clamp: a logit scale of 300 acts as 100
    with torch.no_grad():
        attn.logit_scale[1] = math.log(100.0)
    torch.testing.assert_close(attn(x, bias=bias), want.float(), **COS_TOL)
    # cosine: the scale of the tokens' projections does not matter, only their direction
    with torch.no_grad():
        attn.q_bias.zero_(), attn.v_bias.zero_()
    doubled = attn(2 * x, bias=bias) - attn.proj.bias  # same attention weights, values doubled
    torch.testing.assert_close(doubled, 2 * (attn(x, bias=bias) - attn.proj.bias), **COS_TOL)


def windows_and_mask(b: int = 2, nw: int = 4, n: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``(B, windows, N, C)`` and a per-window bias ``(windows, heads, N, N)`` with Swin's
    -100 between regions in half the windows."""
    x = torch.randn(b, nw, n, C)
    bias = torch.randn(nw, H, n, n)
    region = torch.arange(n) % 2
    bias[nw // 2 :] += ((region[:, None] != region[None, :]) * -100.0)[None, None]
    return x, bias


@pytest.mark.parametrize("make", [plain, swin_v2])
def test_windowed_path_matches_reference_and_sdpa(make):
    attn = make()
    x, bias = windows_and_mask()
    scale = attn.logit_scale if attn.cosine else None
    biases = (attn.q_bias, 0.0, attn.v_bias) if attn.cosine else qkv_biases(attn)
    got = attn(x, bias=bias)  # 5-d once split into heads: the written-out path
    want = torch.stack([reference_attention(attn, x[:, w], *biases, bias=bias[w], logit_scale=scale)
                        for w in range(4)], dim=1)  # fmt: skip
    tol = COS_TOL if attn.cosine else TOL
    torch.testing.assert_close(got, want.float(), **tol)
    # the same windows as a (B·windows) batch go through SDPA
    sdpa = attn(x.flatten(0, 1), bias=bias.repeat(2, 1, 1, 1)).unflatten(0, (2, 4))
    torch.testing.assert_close(got, sdpa, **tol)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], g: torch.Tensor) -> list[torch.Tensor]:
    return torch.autograd.grad((out * g).sum(), inputs)


@pytest.mark.parametrize("windowed", [False, True])
def test_gradients_match_reference(windowed):
    """Gradients of the tokens, the bias and every parameter: plain attention with padding and a
    bias through SDPA; Swin V2 windows through the written-out path."""
    if windowed:
        attn, (x, bias), keep = swin_v2(), windows_and_mask(), None
        with torch.no_grad():
            attn.logit_scale[1] = math.log(50.0)  # under the clamp, so it has a gradient
    else:
        attn, x, bias, keep = plain(), torch.randn(2, 6, C), torch.randn(2, H, 6, 6), right_padding([6, 4], 6)
    x, bias = x.requires_grad_(True), bias.requires_grad_(True)
    params = [p for _, p in sorted(attn.named_parameters())]
    inputs = [x, bias, *params]
    out = attn(x, bias=bias, key_padding_mask=keep)
    if windowed:
        biases, scale = (attn.q_bias, 0.0, attn.v_bias), attn.logit_scale
        ref = torch.stack([reference_attention(attn, x[:, w], *biases, bias=bias[w], logit_scale=scale)
                           for w in range(4)], dim=1)  # fmt: skip
    else:
        ref = reference_attention(attn, x, *qkv_biases(attn), bias=bias, keep=keep)
    g = torch.randn_like(out)
    got, want = _grads(out, inputs, g), _grads(ref, inputs, g.double())
    names = ["x", "bias", *sorted(n for n, _ in attn.named_parameters())]
    tol = 1e-5 if windowed else 1e-6  # of the largest gradient (up to ~200); cosine: see COS_TOL
    for name, a, b in zip(names, got, want):
        assert b.abs().max() > 0, name  # every input takes part
        assert (a - b).abs().max() <= tol * b.abs().max(), name


def test_unpadded_route_gives_the_padded_outputs_at_real_tokens():
    attn, x = plain(), torch.randn(3, 6, C)
    keep = right_padding([6, 2, 4], 6)
    unpadded = Unpadded(keep)
    packed = attn(unpadded.pack(x), key_padding_mask=keep, unpadded=unpadded)  # (T, C)
    assert packed.shape == (12, C)
    torch.testing.assert_close(packed, attn(x, key_padding_mask=keep)[keep], **TOL)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        Attention(10, 4)


def test_windowed_path_computes_no_subnormal_floats():
    """Across Swin's -100 mask softmax gives e^-100-sized probabilities: subnormal floats, which
    x86 cores multiply slowly. The written-out path zeroes them in softmax's own output, so no
    other operation of the forward or backward pass sees or makes one, while the tests above
    hold it to the float64 reference."""
    from torch.utils._python_dispatch import TorchDispatchMode

    tiny = torch.finfo(torch.float32).tiny

    class Subnormals(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    n = int(((t != 0) & (t.abs() < tiny)).sum())
                    if n:
                        self.found[str(func)] = self.found.get(str(func), 0) + n
            return out

    attn = swin_v2()
    x, bias = windows_and_mask()
    x = x.requires_grad_(True)
    flushing = (torch.tensor([1e-40]) * 1.0).item() == 0.0  # a run earlier in this process may flush them
    torch.set_flush_denormal(False)  # this thread keeps them, as PyTorch's default does
    try:
        with Subnormals() as seen:
            attn(x, bias=bias).square().sum().backward()
    finally:
        torch.set_flush_denormal(flushing)
    assert seen.found.pop("aten._softmax.default") > 0  # made here, and zeroed in place at once
    assert seen.found == {}
