"""``losses/contrastive.py`` against a hand-written InfoNCE: ``info_nce`` at several offsets and
inverse temperatures, with its textbook gradients; ``clip_loss`` as the symmetric InfoNCE, with
gradients; ``nt_xent`` and ``siglip_loss`` against per-row loops (values and gradients), and
``siglip_loss`` against HF ``SiglipModel``'s loss; the single-process paths of the distributed
helpers; float32 under autocast; shape errors. Several processes: ``tests/tasks/test_clip_ddp.py``
(``clip_loss`` through the CLIP task; ``nt_xent`` and ``siglip_loss`` with their gather / ring
exchange) and ``tests/losses/test_moco.py`` (``ctr``, the ``with_grad=False`` gather)."""

import math

import pytest
import torch

from convergent.losses.contrastive import clip_loss, gather_features, info_nce, nt_xent, siglip_loss, world


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _reference_info_nce(q: torch.Tensor, k: torch.Tensor, scale: float, offset: int = 0) -> torch.Tensor:
    """-log(exp(s q_i.k_{i+o}) / sum_j exp(s q_i.k_j)), averaged, written out element by element."""
    total = 0.0
    for i in range(q.shape[0]):
        sims = [scale * float(q[i] @ k[j]) for j in range(k.shape[0])]
        top = max(sims)
        log_z = top + math.log(sum(math.exp(s - top) for s in sims))
        total += log_z - sims[i + offset]
    return torch.tensor(total / q.shape[0])


def _reference_info_nce_grads(
    q: torch.Tensor, k: torch.Tensor, scale: float, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Textbook gradients of the mean InfoNCE, in float64. With p_ij = softmax_j(s q_i.k_j) and
    t_i = i + offset: d/dq_i = s/B sum_j (p_ij - [j = t_i]) k_j, d/dk_j = s/B sum_i (p_ij -
    [j = t_i]) q_i, d/ds = 1/B sum_i sum_j (p_ij - [j = t_i]) q_i.k_j."""
    q, k = q.double(), k.double()
    b, n = q.shape[0], k.shape[0]
    dq, dk, ds = torch.zeros_like(q), torch.zeros_like(k), 0.0
    for i in range(b):
        sims = [float(q[i] @ k[j]) for j in range(n)]
        top = max(sims)
        e = [math.exp(scale * (s - top)) for s in sims]
        for j in range(n):
            w = e[j] / sum(e) - (j == i + offset)  # p_ij - [j = t_i]
            dq[i] += scale / b * w * k[j]
            dk[j] += scale / b * w * q[i]
            ds += w * sims[j] / b
    return dq, dk, ds


def test_info_nce_matches_reference():
    q, k = _unit(5, 8, 0), _unit(12, 8, 1)
    for offset in (0, 3, 7):
        torch.testing.assert_close(info_nce(q, k, 7.5, offset), _reference_info_nce(q, k, 7.5, offset), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="need at least"):
        info_nce(q, k, 1.0, offset=8)


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_info_nce_value_and_gradients_at_several_temperatures(scale):
    q, k = _unit(5, 8, 2).requires_grad_(True), _unit(9, 8, 3).requires_grad_(True)
    s = torch.tensor(scale, requires_grad=True)  # a learned logit scale gets a gradient too
    loss = info_nce(q, k, s, offset=2)
    loss.backward()
    ref = _reference_info_nce(q.detach(), k.detach(), scale, 2)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    dq, dk, ds = _reference_info_nce_grads(q.detach(), k.detach(), scale, 2)
    # the gradients grow with s (up to ~25 at s = 100): fp32 rounding of the logits grows with them
    torch.testing.assert_close(q.grad, dq.float(), atol=1e-7 * scale, rtol=1e-5)
    torch.testing.assert_close(k.grad, dk.float(), atol=1e-7 * scale, rtol=1e-5)
    assert s.grad.item() == pytest.approx(ds, abs=1e-6, rel=1e-5)


def test_info_nce_bad_shapes():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"must be \(B, D\) and \(N, D\)"):
        info_nce(q, torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match=r"must be \(B, D\) and \(N, D\)"):
        info_nce(q[None], torch.randn(3, 4), 1.0)


def test_clip_loss_is_the_symmetric_info_nce():
    image, text = _unit(6, 8, 2), _unit(6, 8, 3)
    out = clip_loss(image, text, 14.0)
    ref = (_reference_info_nce(image, text, 14.0) + _reference_info_nce(text, image, 14.0)) / 2
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert torch.equal(out.labels, torch.arange(6))
    # local_loss without a process group is the same computation
    torch.testing.assert_close(clip_loss(image, text, 14.0, local_loss=True).loss, out.loss)
    # matched pairs score low, shuffled ones high
    assert clip_loss(image, image, 50.0).loss < 0.01 < clip_loss(image, image.roll(1, 0), 50.0).loss


def test_clip_loss_gradients_match_reference():
    """d/d image = (its gradient as the queries of image->text + as the keys of text->image) / 2."""
    image, text = _unit(6, 8, 4).requires_grad_(True), _unit(6, 8, 5).requires_grad_(True)
    out = clip_loss(image, text, 20.0)
    out.loss.backward()
    dq_it, dk_it, _ = _reference_info_nce_grads(image.detach(), text.detach(), 20.0)  # image queries
    dq_ti, dk_ti, _ = _reference_info_nce_grads(text.detach(), image.detach(), 20.0)  # text queries
    torch.testing.assert_close(image.grad, ((dq_it + dk_ti) / 2).float(), atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(text.grad, ((dk_it + dq_ti) / 2).float(), atol=2e-6, rtol=1e-6)
    # logits are the scaled cosine similarities, labels the diagonal
    torch.testing.assert_close(out.logits_per_image, 20.0 * image.detach() @ text.detach().T)


def test_single_process_helpers():
    x = torch.randn(3, 4)
    assert world() == (0, 1)
    assert gather_features(x) is x and gather_features(x, with_grad=False) is x


def test_clip_loss_without_distribution_is_the_same_outside_a_process_group():
    image, text = _unit(5, 8, 6), _unit(5, 8, 7)
    for local in (False, True):
        for with_grad in (False, True):
            got = clip_loss(image, text, 10.0, local_loss=local, distributed=False, gather_with_grad=with_grad)
            assert torch.equal(got.loss, clip_loss(image, text, 10.0).loss)
    with pytest.raises(ValueError, match=r"must both be \(B, D\)"):
        clip_loss(image, text[:4], 10.0)


def test_loss_runs_in_float32_under_autocast():
    image, text = _unit(4, 8, 4), _unit(4, 8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clip_loss(image.bfloat16(), text.bfloat16(), torch.tensor(30.0))
    assert out.loss.dtype == out.logits_per_image.dtype == torch.float32


# --- NT-Xent ----------------------------------------------------------------------------------------


def _reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR eq. 1 row by row, in float64: for each of the 2N embeddings k (view 1 then view 2),
    -log(exp(sim(k, pos)/t) / sum_{j != k} exp(sim(k, j)/t)), averaged over the 2N."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2, n = z.shape[0], z1.shape[0]
    terms = []
    for k in range(n2):
        pos = (k + n) % n2
        others = torch.stack([z[k] @ z[j] / temperature for j in range(n2) if j != k])
        terms.append(torch.logsumexp(others, 0) - z[k] @ z[pos] / temperature)
    return torch.stack(terms).mean()


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_reference(temperature):
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)  # not normalised: the loss does
    z2 = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1.float(), z2.float(), temperature)
    ref = _reference_nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    got = torch.autograd.grad(loss, (z1, z2))
    want = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_nt_xent_is_symmetric_and_low_for_matching_views():
    z1, z2 = _unit(6, 8, 5), _unit(6, 8, 6)
    torch.testing.assert_close(nt_xent(z1, z2, 0.2), nt_xent(z2, z1, 0.2))
    assert nt_xent(z1, z1, 0.05) < nt_xent(z1, z2, 0.05)
    with pytest.raises(ValueError, match="must both be"):
        nt_xent(z1, z2[:5], 0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent(z1, z2, 0.0)


# --- SigLIP -----------------------------------------------------------------------------------------


def _reference_siglip(x: torch.Tensor, y: torch.Tensor, t, b) -> torch.Tensor:
    """Zhai et al. 2023, Alg. 1, one pair at a time: -1/|B| sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b))."""
    total = 0.0
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            z = 1.0 if i == j else -1.0
            total = total - torch.nn.functional.logsigmoid(z * (t * (x[i] @ y[j]) + b))
    return total / x.shape[0]


def test_siglip_loss_matches_reference():
    x, y = _unit(6, 8, 7).double().requires_grad_(True), _unit(6, 8, 8).double().requires_grad_(True)
    t, b = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    loss = siglip_loss(x.float(), y.float(), t, b)
    ref = _reference_siglip(x, y, t.double(), b.double())
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-6)
    got = torch.autograd.grad(loss, (x, y, t, b))
    want = torch.autograd.grad(ref, (x, y, t, b))
    for a, w in zip(got, want):
        torch.testing.assert_close(a.double(), w.double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must both be"):
        siglip_loss(x, y[:5], 1.0, 0.0)


def test_siglip_loss_equals_hf_siglip():
    """HF ``SiglipModel(return_loss=True)`` (tiny, random weights) and our loss on its embeddings,
    its ``exp(logit_scale)`` and ``logit_bias``; and the CLIP task's 'sigmoid' loss on the same features."""
    transformers = pytest.importorskip("transformers")
    from convergent.backbones import build_backbone
    from convergent.tasks.clip import CLIP
    from convergent.tasks.configs import CLIPConfig

    torch.manual_seed(0)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=99, max_position_embeddings=16, **tiny),
        vision_config=dict(image_size=16, patch_size=8, **tiny),
    )
    model = transformers.SiglipModel(cfg).eval()
    with torch.no_grad():  # away from the random init's values, so both parameters matter
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-3.0)
    ids = torch.randint(1, 99, (6, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.randn(6, 3, 16, 16), return_loss=True)
    ours = siglip_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp(), model.logit_bias)
    assert abs(ours.item() - out.loss.item()) <= 1e-5, (ours.item(), out.loss.item())

    task = CLIP(build_backbone("vit_clip_test"), CLIPConfig(text_backbone="clip_text_test", embed_dim=32,
                                                           loss="sigmoid", init_bias=-3.0)).eval()  # fmt: skip
    task.encode_image = lambda images: out.image_embeds  # the task's loss on HF's features
    task.encode_text = lambda ids, **kw: out.text_embeds
    batch = {"image": torch.zeros(6, 3, 32, 32), "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        assert abs(task(batch)["loss"].item() - out.loss.item()) <= 1e-5
