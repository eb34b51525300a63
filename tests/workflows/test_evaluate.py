"""What a subject of evaluation provides, declared once; the splits an evaluation opens."""

from convergent.config import PretrainConfig
from convergent.data.protocol import StreamDataset
from convergent.data.tokenizer import train_tokenizer
from convergent.evaluation import registry
from convergent.workflows.evaluate import provided, split_opener
from tests.evaluation.test_text import StandInLM, sentences


class Stream(StreamDataset):
    """A labelled stream (classes, no random access)."""

    def __init__(self, classes):
        super().__init__("a stream", classes)

    def __iter__(self):
        return iter(())


class Dual(StandInLM):
    def encode_image(self, images): ...

    def encode_text(self, input_ids, attention_mask=None): ...


def test_what_a_subject_provides():
    train, test = sentences(4, 0), sentences(2, 1)
    assert provided(None, None, train, test) == {registry.LABELLED}
    assert provided(None, None, train, None) == set()
    train.classes = []
    assert provided(None, None, train, test) == set()  # no classes
    stream = Stream(["a-m", "n-z"])
    assert provided(None, None, stream, test) == set()  # streamed: not for the probes
    lm = provided(StandInLM("mlm"), object(), None, None)
    assert lm == {registry.RUN, registry.LANGUAGE_MODEL, registry.TOKENIZER}
    assert provided(Dual("clip"), None, None, None) == {registry.RUN, registry.IMAGE_TEXT}


def test_split_opener(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("a small house\na tall tree\n")
    cfg = PretrainConfig()
    cfg.data.name, cfg.data.root, cfg.data.max_length = "text-lines", str(root), 8
    tokenizer = train_tokenizer(["a small house", "a tall tree"] * 10, kind="wordpiece", vocab_size=40)
    open_split = split_opener(cfg, tokenizer)
    assert len(open_split("test")) == 2
    data = open_split("test", tokenized=True)
    batch = data.collate_fn([data[0]])
    assert batch["input_ids"].shape[1] <= 8
    flat = tmp_path / "flat.txt"  # one file: every split reads it, none is held out
    flat.write_text("a small house\n")
    cfg.data.root = str(flat)
    assert split_opener(cfg)("val", heldout_only=True) is None and len(split_opener(cfg)("val")) == 1
