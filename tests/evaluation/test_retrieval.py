"""Image↔text Recall@K: a hand-computed example with several captions per image and ties, a
loop-by-loop reference, perfect and random embeddings against chance, embedding a real
ImageTextPairs with a tokenizer, errors; and the retrieval gallery (PNG + HTML)."""

import math

import pytest
import torch
from torch import nn

from convergent.data.pairs import ImageTextPairs
from convergent.data.tokenizer import train_tokenizer
from convergent.evaluation.gallery import retrieval_gallery
from convergent.evaluation.retrieval import chance_recall_i2t, embed_pairs, retrieval_metrics

R = 2**-0.5


def hand_example():
    """3 images on the unit circle, 5 texts; image 0 has captions 0, 1; image 1 caption 2;
    image 2 captions 3, 4. Similarities (rows images, columns texts):
        img0 (1, 0):   1     -.11    R     0    -R
        img1 (0, 1):   0     .99     R    -1     R
        img2 (-1, 0): -1     .11    -R     0     R
    """
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0], [-0.1, 0.9], [R, R], [0.0, -1.0], [-R, R]])  # t0 unnormalised on purpose
    return image, text, torch.tensor([0, 0, 1, 2, 2])


def test_hand_computed_example_with_ties():
    out = retrieval_metrics(*hand_example(), ks=(1, 2, 3))
    # i2t ranks (wrong texts >= the best own caption): img0 0 (t0 = 1); img1 2 (t1 > t2, t4 ties t2); img2 0
    assert out["i2t_R@1"] == pytest.approx(2 / 3)
    assert out["i2t_R@2"] == pytest.approx(2 / 3)
    assert out["i2t_R@3"] == 1.0
    # t2i ranks: t0 0; t1 2 (img1, img2 above img0); t2 1 (tie with img0); t3 1 (tie with img0); t4 1 (tie with img1)
    assert out["t2i_R@1"] == pytest.approx(1 / 5)
    assert out["t2i_R@2"] == pytest.approx(4 / 5)
    assert out["t2i_R@3"] == 1.0
    recalls = [out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 2, 3)]
    assert out["mean_recall"] == pytest.approx(sum(recalls) / 6)
    # chance: i2t images with 2, 1, 2 of 5 captions; t2i k / 3
    comb = math.comb
    for k in (1, 2, 3):
        want = sum(1 - comb(5 - c, k) / comb(5, k) for c in (2, 1, 2)) / 3
        assert out[f"chance_i2t_R@{k}"] == pytest.approx(want)
        assert out[f"chance_t2i_R@{k}"] == pytest.approx(k / 3)
    assert (out["num_images"], out["num_texts"], out["i2t_queries"]) == (3, 5, 3)


def reference_ranks(image, text, image_of_text):
    """Loop-by-loop: cosine similarities, ties count against the query."""
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    sims = (image.double() @ text.double().T).tolist()
    owner = image_of_text.tolist()
    i2t = []
    for i, row in enumerate(sims):
        own = [s for j, s in enumerate(row) if owner[j] == i]
        if own:
            i2t.append(sum(1 for j, s in enumerate(row) if owner[j] != i and s >= max(own)))
    t2i = []
    for j in range(len(owner)):
        col = [sims[i][j] for i in range(len(sims))]
        t2i.append(sum(1 for i, s in enumerate(col) if i != owner[j] and s >= col[owner[j]]))
    return i2t, t2i


@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_matches_reference_with_many_ties(chunk):
    g = torch.Generator().manual_seed(chunk)
    image = torch.randint(-1, 2, (12, 3), generator=g).float()  # small integers: many exact ties
    image[image.abs().sum(1) == 0, 0] = 1.0  # no zero vectors
    text = torch.randint(-1, 2, (20, 3), generator=g).float()
    text[text.abs().sum(1) == 0, 1] = 1.0
    image_of_text = torch.randint(0, 11, (20,), generator=g)  # image 11 (maybe more) has no caption
    i2t, t2i = reference_ranks(image, text, image_of_text)
    out = retrieval_metrics(image, text, image_of_text, ks=(1, 3), chunk=chunk)
    for k in (1, 3):
        assert out[f"i2t_R@{k}"] == pytest.approx(sum(r < k for r in i2t) / len(i2t))
        assert out[f"t2i_R@{k}"] == pytest.approx(sum(r < k for r in t2i) / len(t2i))
    assert out["i2t_queries"] == len(i2t) < 12


def test_perfect_embeddings_and_collapsed_ones():
    image = torch.randn(30, 16)
    image_of_text = torch.arange(30).repeat_interleave(torch.randint(1, 4, (30,)))
    text = image[image_of_text] * 3.0  # scale must not matter
    out = retrieval_metrics(image, text, image_of_text)
    assert all(out[f"{d}_R@{k}"] == 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert out["mean_recall"] == 1.0
    same = retrieval_metrics(torch.ones(30, 16), torch.ones(len(text), 16), image_of_text)  # all ties
    assert same["i2t_R@10"] == 0.0 and same["t2i_R@10"] == 0.0


def test_random_embeddings_near_chance():
    n, per = 300, 2
    image, text = torch.randn(n, 32), torch.randn(n * per, 32)
    out = retrieval_metrics(image, text, torch.arange(n).repeat_interleave(per), ks=(1, 10, 50))
    assert out["chance_t2i_R@10"] == pytest.approx(10 / n)
    assert out["chance_i2t_R@10"] == pytest.approx(1 - math.comb(n * per - 2, 10) / math.comb(n * per, 10))
    for d in ("i2t", "t2i"):
        for k in (10, 50):
            assert abs(out[f"{d}_R@{k}"] - out[f"chance_{d}_R@{k}"]) < 0.08, (d, k, out)


def test_chance_formula_edge_cases():
    assert chance_recall_i2t(torch.tensor([3]), 3, 1) == pytest.approx(1.0)  # every text is right
    assert chance_recall_i2t(torch.tensor([1, 1]), 4, 10) == pytest.approx(1.0)  # k >= M
    assert chance_recall_i2t(torch.tensor([1]), 4, 2) == pytest.approx(0.5)


def test_errors():
    image, text, owner = hand_example()
    with pytest.raises(ValueError, match="same D"):
        retrieval_metrics(image, torch.randn(5, 3), owner)
    with pytest.raises(ValueError, match="image_of_text"):
        retrieval_metrics(image, text, owner[:4])
    with pytest.raises(ValueError, match="image_of_text"):
        retrieval_metrics(image, text, owner.float())
    with pytest.raises(ValueError, match="index the 3 images"):
        retrieval_metrics(image, text, torch.tensor([0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(image, text, owner, ks=(0, 1))
    with pytest.raises(ValueError, match="needs images and texts"):
        retrieval_metrics(image[:0], text[:0], owner[:0])


class StandIn(nn.Module):
    """``encode_image``: mean pixel per channel through a linear map; ``encode_text``: masked
    mean of token embeddings. Not normalised (the evaluation must do it)."""

    def __init__(self, vocab: int, dim: int = 8):
        super().__init__()
        self.image = nn.Linear(3, dim)
        self.text = nn.Embedding(vocab, dim)

    def encode_image(self, images):
        assert images.is_floating_point() and images.ndim == 4
        return self.image(images.mean((2, 3)))

    def encode_text(self, input_ids, attention_mask):
        mask = attention_mask[..., None].float()  # (B, L, 1)
        return (self.text(input_ids) * mask).sum(1) / mask.sum(1)


def test_embed_pairs_real_dataset_and_tokenizer():
    captions = [["a red square", "red"], ["a green square"], ["blue", "a blue square", "sky"]]
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    ds = ImageTextPairs(["r.png", "g.png", "b.png"], captions, [-1, -1, -1], img_size=8, images=images)
    tok = train_tokenizer([t for c in captions for t in c], vocab_size=60, min_frequency=1)
    model = StandIn(tok.vocab_size).train()
    image_emb, text_emb, owner = embed_pairs(model, ds, tok, lambda x, g: x.float() / 255, batch_size=2)
    assert model.training  # restored
    assert image_emb.shape == (3, 8) and text_emb.shape == (6, 8)
    assert owner.tolist() == [0, 0, 1, 2, 2, 2] == ds.image_of_caption.tolist()
    assert torch.allclose(image_emb.norm(dim=1), torch.ones(3)) and torch.allclose(text_emb.norm(dim=1), torch.ones(6))
    with torch.no_grad():  # batching does not change an embedding
        one = tok.encode_batch(["sky"])
        want = nn.functional.normalize(model.encode_text(one["input_ids"], one["attention_mask"]), dim=-1)
    assert torch.allclose(text_emb[5], want[0], atol=1e-6)
    out = retrieval_metrics(image_emb, text_emb, owner, ks=(1, 2))
    assert 0.0 <= out["mean_recall"] <= 1.0 and out["i2t_R@2"] <= 1.0
    with pytest.raises(ValueError, match="needs a transform"):  # uint8 images need one
        embed_pairs(model, ds, tok, None)
    with pytest.raises(ValueError, match="captions"):
        embed_pairs(model, [{"image": images[0]}], tok, None)


def test_gallery_writes_png_and_html(tmp_path):
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    captions = [f"caption <{i}> of image {i // 2}" for i in range(12)]
    owner = torch.arange(6).repeat_interleave(2)
    image_emb = torch.randn(6, 4)
    text_emb = image_emb[owner] + 0.3 * torch.randn(12, 4)
    png, page = retrieval_gallery(images, captions, image_emb, text_emb, owner, tmp_path / "g" / "gallery.png",
                                  queries=3, k=4, title="test")  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    text = page.read_text()
    assert page.suffix == ".html" and text.count("data:image/png;base64,") == 3 * 4
    assert "caption &lt;0&gt; of image 0" in text and "<0>" not in text
    gray = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)  # one channel, explicit queries, no HTML
    (only,) = retrieval_gallery(list(gray), captions, image_emb, text_emb, owner, tmp_path / "gray.png",
                                queries=[0, 11], k=10, html_page=False)  # fmt: skip
    assert only.stat().st_size > 0 and not (tmp_path / "gray.html").exists()
    with pytest.raises(ValueError, match="captions"):
        retrieval_gallery(images, captions[:5], image_emb, text_emb, owner, tmp_path / "x.png")
