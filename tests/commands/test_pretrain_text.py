"""End-to-end CLI runs of the language side on a tiny model and a tiny JSONL corpus: MLM
(tokenizer trained and saved with the run, probes, masked-token metrics), packing, causal LM
+ ``convergent generate``, data2vec on text, eval and fine-tuning from a text encoder."""

import json
from pathlib import Path

import pytest

from convergent.cli import main

WORDS = {
    "noun": ["a large animal that lives in the sea", "a tool used for cutting wood", "a small house in the woods",
             "a person who teaches children", "a round fruit with red skin", "a vessel that carries people"],
    "verb": ["move quickly on foot", "cut something into small pieces", "speak in a loud voice",
             "make something warm", "put something in a place", "take something away from a person"],
}  # fmt: skip
TINY = [
    "--model.backbone", "text_test", "--data.name", "text-lines", "--data.batch_size", "8", "--data.vocab_size", "120",
    "--data.max_length", "24", "--optim.warmup_steps", "1", "--trainer.log_every", "1", "--trainer.max_steps", "3",
    "--eval.probe_epochs", "2", "--eval.knn_k", "3", "--eval.layer", "-1",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train.jsonl / val.jsonl / test.jsonl with part-of-speech labels, and one bad line."""
    root = tmp_path_factory.mktemp("corpus")
    for split, reps in (("train", 4), ("val", 1), ("test", 1)):
        lines = [json.dumps({"text": f"{t} {i}", "label": pos}) for i in range(reps)
                 for pos, texts in WORDS.items() for t in texts]  # fmt: skip
        if split == "train":
            lines.append("{not json")
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _run(tmp_path, corpus, name, *extra) -> dict:
    argv = ["pretrain", *TINY, "--data.root", str(corpus), "--trainer.out_dir", str(tmp_path),
            "--trainer.run_name", name, *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_mlm_run_trains_tokenizer_probes_and_measures(tmp_path, corpus):
    s = _run(tmp_path, corpus, "mlm", "--task.name", "mlm")
    run = tmp_path / "mlm"
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "encoder" / "tokenizer.json").is_file()
    assert s["steps"] == 3 and s["skipped_samples"] == 1  # the invalid JSON line, counted
    assert 0.0 <= s["knn_acc"] <= 1.0 and s["eval_test_samples"] == 12
    assert s["val_num_predictions"] > 0 and s["val_perplexity"] > 1.0
    config = json.loads((run / "encoder" / "config.json").read_text())
    assert config["vocab_size"] <= 120 and config["mask_token_id"] is not None

    # the saved encoder evaluates and fine-tunes with its own tokenizer
    assert main(["eval", str(run), "--data.name", "text-lines", "--data.root", str(corpus),
                 "--eval.probe_epochs", "2", "--eval.knn_k", "3"]) == 0  # fmt: skip
    # one registered evaluation by name: of the run's encoder (its data), of the run's task
    assert main(["eval", "knn", str(run), "--eval.knn_k", "3", "--out", str(tmp_path / "knn.json")]) == 0
    assert json.loads((tmp_path / "knn.json").read_text())["knn_acc"] == s["knn_acc"]
    assert main(["eval", "language-model", str(run), "--out", str(tmp_path / "lm.json")]) == 0
    lm = json.loads((tmp_path / "lm.json").read_text())
    assert lm["val_perplexity"] == pytest.approx(s["val_perplexity"]) and lm["run"] == str(run)
    assert main(["finetune", "--model.init", str(run), "--data.name", "text-lines", "--data.root", str(corpus),
                 "--data.batch_size", "8", "--trainer.max_steps", "2", "--trainer.out_dir", str(tmp_path),
                 "--trainer.run_name", "ft", "--classify.pooling", "avg"]) == 0  # fmt: skip
    ft = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert 0.0 <= ft["test_acc"] <= 1.0


def test_packed_mlm_run(tmp_path, corpus):
    _run(tmp_path, corpus, "packed", "--task.name", "mlm", "--data.pack", "true", "--eval.knn", "false",
         "--eval.linear_probe", "false")  # fmt: skip
    assert (tmp_path / "packed" / "packed-train.bin").stat().st_size > 0


def test_causal_lm_run_then_generate(tmp_path, corpus, capsys):
    _run(tmp_path, corpus, "clm", "--task.name", "causal-lm", "--data.tokenizer_kind", "bpe", "--data.vocab_size",
         "300", "--eval.knn", "false", "--eval.linear_probe", "false")  # fmt: skip
    config = json.loads((tmp_path / "clm" / "encoder" / "config.json").read_text())
    assert config["causal"] is True
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "clm"), "--prompt", "a small", "--max_new_tokens", "5", "--greedy",
                 "--num", "2"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith("a small")

    # data.tokenizer that no longer resolves (a moved run, a path relative to another directory):
    # the copy saved with the run is loaded
    file = tmp_path / "clm" / "config.yaml"
    assert "  tokenizer: null\n" in file.read_text()
    file.write_text(file.read_text().replace("  tokenizer: null\n", f"  tokenizer: {tmp_path / 'moved'}\n"))
    assert main(["generate", str(tmp_path / "clm"), "--prompt", "a small", "--max_new_tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.strip() == lines[0]


def test_generate_refuses_a_non_causal_run(tmp_path, corpus, capsys):
    _run(tmp_path, corpus, "mlm2", "--task.name", "mlm", "--eval.knn", "false", "--eval.linear_probe", "false")
    assert main(["generate", str(tmp_path / "mlm2"), "--prompt", "a"]) == 2
    assert "causal-lm" in capsys.readouterr().err


def test_data2vec_text_run(tmp_path, corpus):
    s = _run(tmp_path, corpus, "d2v", "--task.name", "data2vec", "--task.data2vec.top_k_layers", "2",
             "--eval.linear_probe", "false")  # fmt: skip
    assert s["steps"] == 3 and 0.0 <= s["knn_acc"] <= 1.0


def test_a_run_refuses_a_different_tokenizer_than_the_one_it_started_with(tmp_path):
    from convergent.data.tokenizer import train_tokenizer
    from convergent.workflows.text import check_same_tokenizer

    first = train_tokenizer(["a cat sat", "a dog ran"] * 20, kind="wordpiece", vocab_size=40)
    other = train_tokenizer(["green trees grow", "blue skies"] * 20, kind="wordpiece", vocab_size=40)
    saved = tmp_path / "run" / "tokenizer"
    first.save(saved)
    first.save(tmp_path / "same")
    other.save(tmp_path / "other")
    check_same_tokenizer(saved, tmp_path / "same")  # the same tokenizer: fine
    check_same_tokenizer(tmp_path / "fresh" / "tokenizer", tmp_path / "other")  # nothing saved yet: fine
    with pytest.raises(ValueError, match="differs from the tokenizer this run was started with"):
        check_same_tokenizer(saved, tmp_path / "other")
