"""Zero-shot classification: a stand-in dual encoder whose prompt embeddings are fixed class
vectors and whose images embed to their class vector (perfect → 100 %, shuffled → 0 %), prompt
ensembling against a hand computation, readable class names, per-class numbers, ties, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent.data.pairs import ImageTextPairs
from convergent.data.protocol import Dataset
from convergent.data.tokenizer import train_tokenizer
from convergent.evaluation.zero_shot import (
    class_text_embeddings,
    fill_template,
    readable_class_name,
    zero_shot_accuracy,
)


class WholeTextTokenizer:
    """One id per distinct text (the whole text is one token); records what it was asked."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.seen: list[str] = []

    def encode_batch(self, texts, max_length=77, padding="longest"):
        self.seen += texts
        ids = torch.tensor([[self.ids.setdefault(t, len(self.ids))] for t in texts])  # (B, 1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class StandIn(nn.Module):
    """Text ``t`` embeds to ``text_vectors[t]``; an image whose first pixel is ``v`` embeds to
    ``image_vectors[v]``. Neither is normalised (the evaluation must do it)."""

    def __init__(self, tokenizer, text_vectors: dict[str, torch.Tensor], image_vectors: torch.Tensor):
        super().__init__()
        self.tokenizer, self.text_vectors = tokenizer, text_vectors
        self.image_vectors = nn.Parameter(image_vectors.clone())

    def encode_image(self, images):
        return self.image_vectors[images[:, 0, 0, 0].round().long()]

    def encode_text(self, input_ids, attention_mask):
        names = {i: t for t, i in self.tokenizer.ids.items()}
        return torch.stack([self.text_vectors[names[int(i)]] for i in input_ids[:, 0]])


class Images(Dataset):
    """Items ``{"image": uint8 (1, 2, 2) filled with value[i], "label": label[i]}``."""

    batch_keys = ("image", "label")

    def __init__(self, values, labels, classes):
        super().__init__("test images", classes)
        self.values, self.labels = list(values), list(labels)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return {"image": torch.full((1, 2, 2), self.values[i], dtype=torch.uint8), "label": self.labels[i]}


TO_FLOAT = lambda x, g: x.float()  # noqa: E731
CLASSES = ["Smileys_&_Emotion", "Animals", "Food & Drink", "Flags", "Objects", "Symbols"]
NAMES = ["smileys & emotion", "animals", "food & drink", "flags", "objects", "symbols"]


def setup(image_of_value=None, templates=("a picture of {}",)):
    """6 classes with random vectors; the prompts of class c embed to 3 * vectors[c]; image
    value v embeds to vectors[image_of_value[v]] (default: its own class)."""
    vectors = torch.randn(6, 5)
    tok = WholeTextTokenizer()
    texts = {fill_template(t, NAMES[c]): 3 * vectors[c] for c in range(6) for t in templates}
    idx = torch.arange(6) if image_of_value is None else torch.as_tensor(image_of_value)
    return StandIn(tok, texts, vectors[idx]), tok


def test_readable_names_and_templates():
    assert [readable_class_name(c) for c in CLASSES] == NAMES
    assert readable_class_name("  Ankle__boot ") == "ankle boot"
    assert fill_template("a {c} in {}", "cat") == "a cat in cat"
    assert fill_template("{{x}} {}", "cat") == "{{x}} cat"  # other braces untouched
    with pytest.raises(ValueError, match="no class-name placeholder"):
        fill_template("a picture of a cat", "cat")


def test_perfect_and_shuffled():
    labels = [c for c in range(6) for _ in range(3)]
    ds = Images(labels, labels, CLASSES)
    model, tok = setup()
    out = zero_shot_accuracy(model, ds, tok, templates=["a picture of {}"], transform=TO_FLOAT, batch_size=4)
    assert out["zero_shot_acc"] == 1.0 and out["zero_shot_top5_acc"] == 1.0
    assert out["per_class_acc"] == {c: 1.0 for c in CLASSES}
    assert out["chance"] == pytest.approx(1 / 6) and out["chance_top5"] == pytest.approx(5 / 6)
    assert (out["num_images"], out["num_classes"]) == (18, 6)
    assert set(tok.seen) == {f"a picture of {n}" for n in NAMES}  # readable names in the prompts
    model, tok = setup(image_of_value=[1, 2, 3, 4, 5, 0])  # every image looks like the next class
    out = zero_shot_accuracy(model, ds, tok, templates=["a picture of {}"], transform=TO_FLOAT)
    assert out["zero_shot_acc"] == 0.0 and out["zero_shot_mean_per_class_acc"] == 0.0


def test_per_class_numbers_unlabelled_and_absent_classes():
    # class 0: 2 right; class 1: 1 of 2 right (value 2 looks like class 2); class 2: 1 wrong; 3..5 absent
    values, labels = [0, 0, 1, 2, 2, 5], [0, 0, 1, 1, 2, -1]
    model, tok = setup(image_of_value=[0, 1, 2, 3, 4, 5])
    ds = Images(values, labels, CLASSES)
    out = zero_shot_accuracy(model, ds, tok, templates=["a picture of {}"], transform=TO_FLOAT)
    assert out["per_class_acc"] == {CLASSES[0]: 1.0, CLASSES[1]: 0.5, CLASSES[2]: 1.0}
    # image with value 2 labelled 1 is wrong; the one labelled 2 is right
    assert out["zero_shot_acc"] == pytest.approx(4 / 5) and out["num_images"] == 5
    assert out["zero_shot_mean_per_class_acc"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_template_ensembling_is_mean_of_normalised():
    tok = WholeTextTokenizer()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    texts = {"a picture of cat": 10 * a[0], "cat!": b[0], "a picture of dog": a[1], "dog!": 0.1 * b[1]}
    model = StandIn(tok, texts, torch.zeros(1, 4))
    got = class_text_embeddings(model, tok, ["cat", "dog"], ["a picture of {}", "{c}!"], batch_size=3)
    want = F.normalize(F.normalize(a, dim=-1) + F.normalize(b, dim=-1), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)


def test_ties_count_against_the_image():
    labels = list(range(6))
    model, tok = setup()
    model.text_vectors = {t: torch.ones(5) for t in model.text_vectors}  # every class embeds alike
    out = zero_shot_accuracy(model, Images(labels, labels, CLASSES), tok, templates=["a picture of {}"],
                             transform=TO_FLOAT)  # fmt: skip
    assert out["zero_shot_acc"] == 0.0 and out["zero_shot_top5_acc"] == 0.0


def test_image_text_pairs_with_real_tokenizer_and_defaults():
    """Captions and a tokenizer-less collate_fn are ignored; classes come from the dataset."""
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    ds = ImageTextPairs([f"{i}.png" for i in range(4)], [["x"], ["y"], ["z"], ["w"]], [0, 1, 1, 0],
                        classes=["Cat", "Dog"], img_size=8, images=images)  # fmt: skip
    tok = train_tokenizer(["a picture of a cat", "a photo of a dog", "an image of"], vocab_size=60, min_frequency=1)

    class Mean(nn.Module):
        def __init__(self):
            super().__init__()
            self.image, self.text = nn.Linear(3, 4), nn.Embedding(tok.vocab_size, 4)

        def encode_image(self, x):
            return self.image(x.mean((2, 3)))

        def encode_text(self, ids, mask):
            return (self.text(ids) * mask[..., None]).sum(1)

    out = zero_shot_accuracy(Mean(), ds, tok, transform=lambda x, g: x.float() / 255)
    assert set(out["per_class_acc"]) == {"Cat", "Dog"} and "zero_shot_top5_acc" not in out
    assert 0.0 <= out["zero_shot_acc"] <= 1.0 and out["chance"] == 0.5


def test_errors():
    labels = list(range(6))
    model, tok = setup()
    ds = Images(labels, labels, CLASSES)
    with pytest.raises(ValueError, match="placeholder"):
        zero_shot_accuracy(model, ds, tok, templates=["a picture"], transform=TO_FLOAT)
    with pytest.raises(ValueError, match="templates"):
        zero_shot_accuracy(model, ds, tok, templates="a picture of {}", transform=TO_FLOAT)
    with pytest.raises(ValueError, match="class names"):
        zero_shot_accuracy(model, Images(labels, labels, []), tok, transform=TO_FLOAT)
    with pytest.raises(ValueError, match="only 3 class names"):
        zero_shot_accuracy(model, ds, tok, classes=CLASSES[:3], templates=["a picture of {}"], transform=TO_FLOAT)
    with pytest.raises(ValueError, match="no labelled images"):
        zero_shot_accuracy(model, Images([0], [-1], CLASSES), tok, templates=["a picture of {}"], transform=TO_FLOAT)
