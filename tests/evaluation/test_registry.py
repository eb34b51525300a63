"""The evaluation registry: each evaluation declared once with its entry point and needs;
the default evaluation; what `convergent eval NAME` and `convergent list evaluations` do
with it; kNN and the linear probe share one pass of feature extraction."""

import subprocess
import sys

import pytest

from convergent.cli import main
from convergent.config import EvalConfig, EvalRunConfig
from convergent.evaluation import probes, registry
from convergent.evaluation.context import EvalContext, ImageTextModel, ImageTokenizer
from convergent.evaluation.features import extract_features
from convergent.evaluation.knn import knn_accuracy
from convergent.evaluation.language import language_model_metrics
from convergent.evaluation.linear_probe import linear_probe
from convergent.registry import load_target
from tests.evaluation.test_text import StandInLM, sentences, text_backbone

NAMES = ["captioning", "finetune", "knn", "language-model", "linear-probe", "r-precision", "reconstruction", "retrieval", "zero-shot"]


def test_registry_import_is_torch_free():
    code = "import sys, convergent.evaluation.registry as r; assert r.names(); assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_declares_needs_and_an_entry_point(name):
    e = registry.entry(name)
    assert e.needs and set(e.needs) <= set(registry.REQUIREMENTS) and e.description
    if e.target is None:  # trains: a verb of its own
        assert "convergent finetune" in e.description
    else:
        assert callable(load_target(e.target))
    assert e.switch is None or isinstance(getattr(EvalConfig(), e.switch), bool)


def test_names_and_lookup_errors():
    assert registry.names() == NAMES
    with pytest.raises(KeyError, match="did you mean knn"):
        registry.entry("knnn")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_evaluation("knn", "x:y", (registry.LABELLED,), "again")
    with pytest.raises(ValueError, match="unknown requirements"):
        registry.register_evaluation("new", "x:y", ("gpu",), "needs something undeclared")
    assert "new" not in registry.names()


def test_default_evaluation_in_registration_order():
    assert registry.switched_on(EvalConfig()) == ["knn", "linear-probe", "reconstruction", "captioning",
                                                  "language-model"]  # fmt: skip
    assert registry.switched_on(EvalConfig(knn=False)) == ["linear-probe", "reconstruction", "captioning",
                                                           "language-model"]  # fmt: skip
    encoder = {registry.LABELLED}
    lm_run = {registry.RUN, registry.LABELLED, registry.LANGUAGE_MODEL, registry.TOKENIZER}
    assert registry.default_evaluations(EvalConfig(), encoder) == ["knn", "linear-probe"]
    assert registry.default_evaluations(EvalConfig(linear_probe=False), lm_run) == ["knn", "language-model"]
    assert registry.default_evaluations(EvalConfig(), {registry.RUN, registry.IMAGE_TEXT}) == []
    tokenizer_run = {registry.RUN, registry.LABELLED, registry.IMAGE_TOKENIZER}
    assert registry.default_evaluations(EvalConfig(), tokenizer_run) == ["knn", "linear-probe", "reconstruction"]
    caption_run = {registry.RUN, registry.CAPTIONER, registry.TOKENIZER}
    assert registry.default_evaluations(EvalConfig(), caption_run) == ["captioning"]


def test_run_evaluation_says_what_is_missing():
    ctx = EvalContext(EvalRunConfig(), frozenset({registry.RUN}))
    with pytest.raises(ValueError, match="an image-text model"):
        registry.run_evaluation("zero-shot", ctx)
    with pytest.raises(ValueError, match="not run by `convergent eval`"):
        registry.run_evaluation("finetune", ctx)


def test_image_text_model_is_a_declared_contract():
    class Dual:
        def encode_image(self, images): ...

        def encode_text(self, input_ids, attention_mask=None): ...

    assert isinstance(Dual(), ImageTextModel) and not isinstance(StandInLM("mlm"), ImageTextModel)


def test_image_tokenizer_is_a_declared_contract():
    class Codes:
        num_codes = 4

        def encode(self, images): ...

        def decode(self, ids): ...

    assert isinstance(Codes(), ImageTokenizer) and not isinstance(StandInLM("mlm"), ImageTokenizer)


def labelled_text(n: int, seed: int):
    data = sentences(n, seed)
    data.classes = ["a-m", "n-z"]
    return data


def test_probes_share_one_feature_pass_and_match_the_functions(monkeypatch):
    cfg = EvalRunConfig()
    cfg.eval.knn_k, cfg.eval.probe_epochs, cfg.eval.limit_train = 3, 3, None
    backbone, train, test = text_backbone(), labelled_text(20, 0), labelled_text(8, 1)
    calls = []
    monkeypatch.setattr(probes, "extract_features", lambda *a, **k: calls.append(a[1]) or extract_features(*a, **k))
    ctx = EvalContext(cfg, frozenset({registry.LABELLED}), backbone=backbone, train_set=train, test_set=test)
    knn = registry.run_evaluation("knn", ctx)
    lin = registry.run_evaluation("linear-probe", ctx)
    assert calls == [train, test], "features are extracted once for both probes"
    xtr, ytr = extract_features(backbone, train, None)
    xte, yte = extract_features(backbone, test, None)
    assert knn == {"eval_train_samples": 20, "eval_test_samples": 8, "eval_layer": -1,
                   "knn_acc": knn_accuracy(xtr, ytr, xte, yte, k=3, num_classes=2)}  # fmt: skip
    ref = linear_probe(xtr, ytr, xte, yte, 2, epochs=3, lr=cfg.eval.probe_lr, seed=cfg.trainer.seed)
    assert (lin["linear_probe_acc"], lin["linear_probe_train_acc"]) == (ref["acc"], ref["train_acc"])


def test_language_model_takes_the_first_held_out_split():
    cfg = EvalRunConfig()
    cfg.data.batch_size = 4
    task, data, opened = StandInLM("causal-lm"), sentences(6, 2), []

    def open_split(split, heldout_only=False, tokenized=False):
        opened.append((split, heldout_only, tokenized))
        if split == "val":
            raise FileNotFoundError("no val split")
        return data

    provides = frozenset({registry.RUN, registry.LANGUAGE_MODEL, registry.TOKENIZER})
    ctx = EvalContext(cfg, provides, task=task, tokenizer=object(), open_split=open_split)
    found = registry.run_evaluation("language-model", ctx)
    assert opened == [("val", True, True), ("test", True, True)]
    expected = language_model_metrics(task, data, batch_size=4)
    assert found == {f"test_{k}": v for k, v in expected.items()}
    assert registry.run_evaluation("language-model", EvalContext(cfg, provides, open_split=lambda *a, **k: None)) == {}


def test_list_evaluations(capsys):
    assert main(["list", "evaluations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"evaluations ({len(NAMES)})")
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert sorted(rows) == NAMES and "run, image-text, tokenizer" in rows["zero-shot"]
    assert rows["knn"].split()[1] == "yes" and rows["retrieval"].split()[1] == "-"


def test_eval_names_on_the_command_line(tmp_path, capsys):
    assert main(["eval", "finetune", str(tmp_path)]) == 2
    assert "convergent finetune --model.init RUN" in capsys.readouterr().err
    assert main(["eval", "knnn", str(tmp_path)]) == 2
    assert "unknown evaluation 'knnn'; did you mean 'knn'?" in capsys.readouterr().err
    assert main(["eval", "language-model"]) == 2
    assert "needs a run directory" in capsys.readouterr().err
    assert main(["eval", "language-model", str(tmp_path)]) == 2
    assert "config.yaml: not found" in capsys.readouterr().err
