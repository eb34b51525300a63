"""The evaluation suite on text backbones: frozen features (padding never changes a sample's
pooled features), kNN / linear probe / Classify / fine-tuning on a tiny synthetic text set,
and language-model metrics (token-weighted, reproducible, RNG-neutral) with stand-in tasks.
Image paths stay as they were."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.registry import build_backbone
from convergent.config import OptimConfig, TrainerConfig
from convergent.data.protocol import Dataset
from convergent.evaluation import finetune as finetune_module
from convergent.evaluation.features import extract_features, prepare_batch, tokens_at
from convergent.evaluation.finetune import evaluate_classifier, finetune
from convergent.evaluation.knn import knn_accuracy
from convergent.evaluation.language import language_model_metrics
from convergent.evaluation.linear_probe import linear_probe
from convergent.heads.classifier import pool_tokens
from convergent.tasks.classify import Classify
from convergent.tasks.configs import ClassifyConfig

PAD, CLS, SEP = 0, 2, 3


def encode(text: str) -> list[int]:
    """Character ids (``text_test`` has 1000 ids) between [CLS] and [SEP]."""
    return [CLS, *(10 + ord(c) % 900 for c in text), SEP]


class TextSet(list, Dataset):
    """Items ``{"text", "label"}`` and a ``collate_fn`` as text datasets have: right-padded ids,
    ``attention_mask`` (1 = real), ``special_tokens_mask``, ``label``; ``pad_to`` pads every
    batch to that length (else to its longest sequence)."""

    name = "letter-sentences"
    batch_keys = ("input_ids", "attention_mask", "special_tokens_mask", "label")

    def __init__(self, items, pad_to: int | None = None):
        list.__init__(self, items)
        Dataset.__init__(self, "sentences of letters a-m (class 0) or n-z (class 1)", ["a-m", "n-z"])
        self.pad_to = pad_to

    def collate_fn(self, items: list[dict]) -> dict[str, torch.Tensor]:
        ids = [encode(it["text"]) for it in items]
        length = self.pad_to or max(map(len, ids))
        input_ids = torch.full((len(ids), length), PAD, dtype=torch.long)
        attention_mask = torch.zeros(len(ids), length, dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention_mask[i, : len(seq)] = 1
        special = (input_ids == CLS) | (input_ids == SEP) | (attention_mask == 0)
        labels = torch.tensor([int(it.get("label", 0)) for it in items])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "special_tokens_mask": special,
                "label": labels}


def sentences(n: int, seed: int, pad_to: int | None = None) -> TextSet:
    """Class 0 sentences use letters a-m, class 1 letters n-z; lengths 3..20."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        label = int(torch.randint(0, 2, (), generator=g))
        length = int(torch.randint(3, 21, (), generator=g))
        letters = torch.randint(0, 13, (length,), generator=g) + 13 * label
        items.append({"text": "".join(chr(ord("a") + int(c)) for c in letters), "label": label})
    return TextSet(items, pad_to)


def text_backbone(**kw) -> nn.Module:
    return build_backbone("text_test", **kw)


# --- frozen features -------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["avg", "cls", "default"])
@pytest.mark.parametrize("layer", [-1, 0])
def test_padding_does_not_change_features(pooling, layer):
    model = text_backbone()
    data = sentences(7, 0)
    tight, labels = extract_features(model, data, None, layer=layer, pooling=pooling, batch_size=1)
    padded, labels2 = extract_features(model, TextSet(data, pad_to=48), None, layer=layer, pooling=pooling,
                                       batch_size=3)
    mixed, _ = extract_features(model, data, None, layer=layer, pooling=pooling, batch_size=7)
    assert tight.shape == (7, 32) and torch.equal(labels, labels2)
    assert (tight - padded).abs().max() <= 1e-5
    assert (tight - mixed).abs().max() <= 1e-5


def test_avg_is_mean_over_real_tokens_only():
    model = text_backbone().eval()
    data = TextSet([{"text": "hello world", "label": 1}], pad_to=30)
    feats, _ = extract_features(model, data, None, pooling="avg")
    ids = torch.tensor([encode("hello world")])  # (1, 13), no padding
    with torch.no_grad():
        ref = model.forward_features(ids).mean(1)
        batch = data.collate_fn(list(data))
        padded_tokens = model.forward_features(batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(padded_tokens.mean(1), ref, atol=1e-3), "a plain mean would count the padding"


def test_cls_and_default_on_text_read_the_first_token():
    model = text_backbone(pooler=True).eval()
    data = sentences(4, 1)
    batch = data.collate_fn(list(data))
    with torch.no_grad():
        tokens = model.forward_features(batch["input_ids"], attention_mask=batch["attention_mask"])
    cls, _ = extract_features(model, data, None, pooling="cls")
    default, _ = extract_features(model, data, None, pooling="default")
    torch.testing.assert_close(cls, tokens[:, 0])
    torch.testing.assert_close(default, model.pooled(tokens))


def test_pool_tokens_mask():
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    text = text_backbone()
    out = pool_tokens(text, tokens, "avg", mask)
    torch.testing.assert_close(out, torch.stack([tokens[0, :3].mean(0), tokens[1].mean(0)]))
    poisoned = tokens.clone()
    poisoned[0, 3:] = float("nan")  # whatever padded positions hold, they add nothing
    torch.testing.assert_close(pool_tokens(text, poisoned, "avg", mask), out)
    with pytest.raises(ValueError, match="attention_mask of shape"):
        pool_tokens(text, tokens, "avg", mask[:, :4])


def test_image_pooling_unchanged_and_ids_need_no_transform():
    vit = build_backbone("vit_test").eval()
    tokens = torch.randn(3, 17, 32)
    assert torch.equal(pool_tokens(vit, tokens, "avg"), tokens[:, 1:].mean(dim=1))
    assert torch.equal(pool_tokens(vit, tokens, "cls"), tokens[:, 0])
    with pytest.raises(ValueError, match="class token"):
        pool_tokens(build_backbone("swinv2_test"), tokens, "cls")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="needs a transform"):
        prepare_batch({"image": images}, None, torch.device("cpu"))
    batch = prepare_batch({"input_ids": torch.ones(2, 3, dtype=torch.long)}, None, torch.device("cpu"), torch.bfloat16)
    assert batch["input_ids"].dtype == torch.long  # ids keep their dtype
    x = images.float() / 255
    with torch.no_grad():
        torch.testing.assert_close(tokens_at(vit, x), vit.forward_features(x))


def test_knn_and_linear_probe_on_text():
    """Disjoint letter sets per class: even a random-init encoder's averaged features separate them."""
    model = text_backbone()
    xtr, ytr = extract_features(model, sentences(64, 0), None, batch_size=16)
    xte, yte = extract_features(model, sentences(32, 1), None, batch_size=16)
    assert knn_accuracy(xtr, ytr, xte, yte, k=5) >= 0.9
    assert linear_probe(xtr, ytr, xte, yte, num_classes=2, epochs=30, batch_size=16)["acc"] >= 0.9


# --- Classify and fine-tuning ----------------------------------------------------------------


def randomized_text_classifier(**cfg) -> Classify:
    task = Classify(text_backbone(), ClassifyConfig(num_classes=3, **cfg)).eval()
    with torch.no_grad():
        task.head.fc.weight.normal_(0, 0.5)
    return task


@pytest.mark.parametrize("pooling", ["avg", "cls"])
def test_classify_on_text(pooling):
    task = randomized_text_classifier(pooling=pooling, label_smoothing=0.0)
    assert task.batch_keys == ("input_ids", "label")
    data = sentences(5, 2)
    batch = data.collate_fn(list(data))
    logits = task.predict(batch)
    padded = TextSet(data, pad_to=40).collate_fn(list(data))
    torch.testing.assert_close(task.predict(padded), logits, atol=1e-5, rtol=0)
    one = torch.tensor([encode(data[0]["text"])])  # an unpadded id tensor works as before
    torch.testing.assert_close(task.predict(one), logits[:1], atol=1e-5, rtol=0)
    out = task(batch)
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, batch["label"]))
    task.train()(batch)["loss"].backward()
    assert task.backbone.word_embed.weight.grad.abs().sum() > 0


def test_image_classify_keeps_its_batch_keys():
    assert Classify(build_backbone("vit_test"), ClassifyConfig(num_classes=2)).batch_keys == ("image", "label")


def test_evaluate_classifier_on_text():
    task = randomized_text_classifier().train()
    data = sentences(11, 3)
    with torch.no_grad():
        preds = task.eval().predict(data.collate_fn(list(data))).argmax(1)
    task.train()
    expected = (preds == torch.tensor([d["label"] for d in data])).float().mean().item()
    assert evaluate_classifier(task, data, None, batch_size=4) == pytest.approx(expected)
    assert task.training
    relabelled = TextSet([{"text": d["text"], "label": int(p)} for d, p in zip(data, preds)], pad_to=32)
    assert evaluate_classifier(task, relabelled, None, batch_size=3) == 1.0


def test_finetune_on_text_wires_the_dataset(monkeypatch, tmp_path):
    seen = {}

    class FakeTrainer:
        def __init__(self, trainer_cfg, optim_cfg, run_dir, batch_size, num_workers=0):
            pass

        def fit(self, task, dataset, transform=None, resume=False, callbacks=()):
            seen.update(task=task, dataset=dataset, transform=transform)
            return {"steps": 0}

    monkeypatch.setattr(finetune_module, "Trainer", FakeTrainer)
    train, test = sentences(8, 0), sentences(6, 1)
    out = finetune(text_backbone(), train, test, None, None, num_classes=2, trainer_cfg=TrainerConfig(max_steps=1),
                   optim_cfg=OptimConfig(), run_dir=tmp_path, batch_size=4)
    assert 0.0 <= out["test_acc"] <= 1.0
    assert seen["task"].batch_keys == ("input_ids", "label")
    assert seen["dataset"] is train and seen["transform"] is None


@pytest.mark.skipif(importlib.util.find_spec("convergent.training.loop") is None,
                    reason="the training engine (convergent.training.loop) is not written yet")
def test_finetune_learns_text_task(tmp_path):
    """The real Trainer on the letter-set task, from scratch: batches from the dataset's collate_fn."""
    train, test = sentences(128, 0), sentences(64, 1)
    tcfg = TrainerConfig(max_steps=30, accelerator="cpu", devices=1, log_every=10, checkpoint_every=1000,
                         seed=0, out_dir=str(tmp_path))
    ocfg = OptimConfig(lr=3e-3, min_lr=1e-4, warmup_steps=3, weight_decay=0.01)
    out = finetune(text_backbone(), train, test, None, None, num_classes=2, trainer_cfg=tcfg, optim_cfg=ocfg,
                   run_dir=tmp_path / "ft", batch_size=16)
    assert out["test_acc"] >= 0.9, out


# --- language-model metrics ------------------------------------------------------------------


class StandInLM(nn.Module):
    """A bag-of-embeddings language model with the MLM / causal-LM task's output keys.

    ``name="mlm"``: hides 30% of the real non-special tokens at random (global RNG) and
    predicts them from the embedding of the previous token; ``"causal-lm"``: predicts each
    real token from the previous one (deterministic)."""

    def __init__(self, name: str, vocab: int = 1000, dim: int = 8):
        super().__init__()
        self.name = name
        self.embed = nn.Embedding(vocab, dim)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(dim, vocab)
        self.calls = 0

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        ids, real = batch["input_ids"], batch["attention_mask"].bool()
        logits = self.out(self.drop(self.embed(ids[:, :-1])))  # (B, L-1, V): position t predicts t+1
        targets, predicted = ids[:, 1:], real[:, 1:]
        if self.name == "mlm":
            candidates = predicted & ~batch["special_tokens_mask"][:, 1:]
            predicted = candidates & (torch.rand(candidates.shape) < 0.3)
        loss = F.cross_entropy(logits[predicted], targets[predicted])  # NaN when nothing is predicted
        acc = (logits[predicted].argmax(-1) == targets[predicted]).float().mean()
        return {"loss": loss, "accuracy": acc, "num_predictions": predicted.sum().float()}


def reference_causal(task: StandInLM, data: TextSet) -> tuple[float, float, int]:
    """Per-token loss and accuracy over the whole set, one sequence at a time."""
    losses, hits = [], []
    with torch.no_grad():
        for item in data:
            ids = torch.tensor(encode(item["text"]))
            logits = task.out(task.embed(ids[:-1]))
            losses.append(F.cross_entropy(logits, ids[1:], reduction="none"))
            hits.append(logits.argmax(-1) == ids[1:])
    losses, hits = torch.cat(losses), torch.cat(hits)
    return losses.mean().item(), hits.float().mean().item(), len(losses)


def test_causal_metrics_are_token_weighted():
    task = StandInLM("causal-lm").train()
    data = sentences(9, 4)
    loss, acc, n = reference_causal(task, data)
    for batch_size in (1, 4, 9):
        m = language_model_metrics(task, data, batch_size=batch_size, device="cpu")
        assert set(m) == {"next_token_accuracy", "loss", "perplexity", "num_predictions"}
        assert m["num_predictions"] == n and isinstance(m["num_predictions"], int)
        assert m["loss"] == pytest.approx(loss, rel=1e-5)
        assert m["next_token_accuracy"] == pytest.approx(acc, abs=1e-9)
        assert m["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert task.training, "the previous mode is restored"


def test_mlm_metrics_reproducible_and_rng_neutral():
    task = StandInLM("mlm")
    data = sentences(12, 5)
    torch.manual_seed(123)
    a = language_model_metrics(task, data, batch_size=4)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after), "the global RNG state is restored"
    b = language_model_metrics(task, data, batch_size=4)
    assert a == b and set(a) == {"masked_token_accuracy", "loss", "perplexity", "num_predictions"}
    c = language_model_metrics(task, data, batch_size=4, seed=1)
    assert c["num_predictions"] != a["num_predictions"] or c["loss"] != a["loss"]
    assert 0 < a["num_predictions"] < sum(len(d["text"]) for d in data)


def test_max_batches_and_empty_batches():
    task = StandInLM("causal-lm")
    data = sentences(9, 4)
    calls = task.calls
    m = language_model_metrics(task, data, batch_size=2, max_batches=2)
    assert task.calls - calls == 2
    assert m["num_predictions"] == sum(len(d["text"]) + 1 for d in list(data)[:4])
    # a batch without predicted tokens (a lone [CLS]: its loss is NaN) adds nothing, not NaN
    lone = TextSet([{"text": ""}])
    lone.collate_fn = lambda items: {"input_ids": torch.full((1, 1), CLS), "attention_mask": torch.ones(1, 1),
                                     "special_tokens_mask": torch.ones(1, 1, dtype=torch.bool)}
    with pytest.raises(ValueError, match="predicted no tokens"):
        language_model_metrics(task, lone, batch_size=1)
    mixed = TextSet([*data, {"text": ""}])
    base = mixed.collate_fn
    mixed.collate_fn = lambda items: base(items) if items[0]["text"] else lone.collate_fn(items)
    m = language_model_metrics(task, mixed, batch_size=1)
    assert math.isfinite(m["loss"]) and m["num_predictions"] == reference_causal(task, data)[2]


def test_language_metrics_clear_errors():
    data = sentences(2, 0)
    with pytest.raises(ValueError, match="not 'classify'"):
        language_model_metrics(Classify(text_backbone(), ClassifyConfig(num_classes=2)), data)

    class NoCount(StandInLM):
        def forward(self, batch):
            out = super().forward(batch)
            del out["num_predictions"]
            return out

    with pytest.raises(KeyError, match="num_predictions"):
        language_model_metrics(NoCount("mlm"), data)
