"""Run-summary table and JSON report."""

import json
import math

import torch

from convergent.evaluation.report import flatten, format_report, write_report

RESULTS = {
    "knn": {"acc": 0.8123, "k": 20},
    "linear_probe": {"acc": 0.5, "train_acc": 0.75},
    "finetune": {"test_acc": 1.0},
}


def test_flatten_joins_nested_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_table_is_aligned_with_percentages():
    text = format_report(RESULTS, title="eval")
    lines = text.splitlines()
    assert lines[0] == "eval"
    rows = lines[2:-1]
    names = ["knn.acc", "knn.k", "linear_probe.acc", "linear_probe.train_acc", "finetune.test_acc"]
    assert [r.split()[0] for r in rows] == names
    assert len({len(r) for r in rows}) == 1, "rows have one width"
    assert "81.23%" in rows[0] and rows[1].endswith(" 20") and "100.00%" in rows[4]
    assert format_report({}) == "evaluation: no results"


def test_write_report_round_trips_json(tmp_path):
    results = {**RESULTS, "loss": torch.tensor(0.25), "bad": float("nan")}
    path = write_report(results, tmp_path / "sub" / "eval.json")
    data = json.loads(path.read_text())
    assert data["knn"] == {"acc": 0.8123, "k": 20}
    assert data["loss"] == 0.25 and data["bad"] == "nan"
    assert not list(path.parent.glob("*.tmp"))
    assert math.isclose(data["finetune"]["test_acc"], 1.0)


def test_text_values_do_not_shift_numbers():
    text = format_report({"run_dir": "runs/a/very/long/path/to/a/run", "steps": 100, "loss": torch.tensor(0.5)})
    rows = text.splitlines()[2:-1]
    assert rows[0].endswith("runs/a/very/long/path/to/a/run")
    assert rows[1].endswith(" 100") and rows[2].endswith(" 0.5") and len(rows[1]) == len(rows[2])


def test_table_fits_80_columns_and_keeps_both_ends_of_long_text():
    path = "/very/long/" + "directory/" * 20 + "runs/simmim-swinv2_micro-20261203-121500/encoder"
    skipped = [f"images/class_{i}/broken_{i}.png (truncated)" for i in range(12)]
    table = format_report({"encoder": path, "skipped_examples": skipped, "knn_acc": 0.6393, "steps": 400}, "summary")
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80, table
    row = next(line for line in lines if line.startswith("encoder"))
    assert "…" in row and row.endswith("20261203-121500/encoder") and "/very/long/" in row
    assert any(line.rstrip().endswith("63.93%") for line in lines)
    short = format_report({"a": "short text", "b": 1.5})
    assert "…" not in short  # nothing shortened that fits


def _write_many(path: str, value: int, rounds: int) -> None:
    for _ in range(rounds):
        write_report({"value": value}, path)


def test_processes_writing_one_report_at_once_never_fail(tmp_path):
    """The workers of a parallel sweep rewrite the same file: with one shared temporary name,
    one process's rename moved the other's file away and the other failed (FileNotFoundError)."""
    import multiprocessing

    path = tmp_path / "costs.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(path), i, 300)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert json.loads(path.read_text())["value"] in (0, 1, 2)
    assert not list(tmp_path.glob("*.tmp"))
