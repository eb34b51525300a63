"""A run that fails says so: config and usage errors, and I/O faults, are one line on stderr
(no usage dump, no traceback) with exit status 2, found before any data loads where they
can be, and a run that never started leaves no run directory; a failed checkpoint leaves the
previous one ``latest`` and the run resumable. Faults are injected (the tests run as root:
permissions cannot make a directory read-only)."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

from convergent.cli import main
from convergent.commands.parser import CommandError
from convergent.exits import FAILED, OK, PREEMPTED, USAGE
from convergent.training import checkpoint as ckpt

TINY = [
    "--model.backbone", "swinv2_test", "--model.overrides", "{depths: [2, 2], num_heads: [2, 4], window_size: 4}",
    "--task.simmim.mask_patch_size", "8", "--data.batch_size", "8", "--data.limit", "64", "--optim.warmup_steps", "1",
    "--trainer.checkpoint_every", "2", "--eval.knn", "false", "--eval.linear_probe", "false",
]  # fmt: skip
"""A run of seconds on the bundled Fashion-MNIST subset."""


@pytest.fixture(autouse=True)
def _restore_hooks(monkeypatch):
    """``main`` quiets writers' repeated I/O errors after a one-line error; put the hooks back."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)


def convergent(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m convergent ARGS`` in ``cwd``: the finished process and its seconds."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "convergent", *args], capture_output=True, text=True, timeout=300,
                         cwd=cwd)  # fmt: skip
    return out, time.perf_counter() - t0


def one_line_error(stderr: str, verb: str) -> str:
    """The one line of ``stderr``, checked: ``convergent VERB: error: ...``, no usage, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"convergent {verb}: error: ".replace("  ", " ")), lines[0]
    assert "usage:" not in stderr and "Traceback" not in stderr
    return lines[0]


def test_exit_statuses():
    assert (OK, FAILED, USAGE, PREEMPTED) == (0, 1, 2, 75)


# --- config errors, as a new user meets them: real processes ---------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--trainer.max_stepz", "3"], "unrecognized arguments: --trainer.max_stepz 3; did you mean '--trainer.max_steps'"),
        (["--trainer.max_steps", "abc"], "--trainer.max_steps expects an integer, got 'abc'"),
        (["--preset", "mae-vit-fmnst"], "--preset: unknown preset 'mae-vit-fmnst'; did you mean mae-vit-fmnist"),
        (["--data.batch_size", "-4"], "--data.batch_size must be >= 1, got -4"),
        (["--data.root", "/nonexistent"], "--data.root /nonexistent: no such file or directory"),
        (["--trainer.max_steps", "0"], "--trainer.max_steps must be >= 1, got 0"),
        (["--task.name", "simmmim"], "--task.name: unknown task 'simmmim'; did you mean simmim?"),
        (["--trainer.devices", "x"], "--trainer.devices must be a number of devices"),
    ],
)
def test_config_errors_are_one_line_at_once(tmp_path, args, expected):
    out, seconds = convergent("pretrain", *args, cwd=tmp_path)
    assert out.returncode == USAGE, out.stderr
    assert expected in one_line_error(out.stderr, "pretrain")
    assert seconds < 60, seconds  # generous (a shared CPU); no data or model is loaded: see the next test
    assert not (tmp_path / "runs").exists()  # no run directory for a run that never started


def test_config_errors_come_before_torch(tmp_path):
    code = (
        "import sys\nfrom convergent.cli import main\n"
        "rc = main(['pretrain', '--data.batch_size', '-4', '--trainer.out_dir', sys.argv[1]])\n"
        "assert rc == 2, rc\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "runs").exists()


def test_help_still_shows_the_usage(tmp_path):
    out, _ = convergent("pretrain", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "usage:" in out.stdout and "--trainer.max_steps" in out.stdout


# --- parser errors of every verb: in-process ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, verb, expected",
    [
        ([], "", 'expected "command"'),
        (["lst"], "", "did you mean 'list'"),
        (["pretrain", "--optim.lrr", "0.1"], "pretrain", "did you mean '--optim.lr'"),
        (["pretrain", "--data.limit"], "pretrain", "--data.limit: expected one argument"),
        (["pretrain", "--data.limit", "x"], "pretrain", "--data.limit expects an integer or null, got 'x'"),
        (["pretrain", "--data.scale", "[a, 1]"], "pretrain", "--data.scale expects a number, got 'a'"),
        (["eval"], "eval", "the following arguments are required: encoder"),
        (["eval", "enc", "--eval.knn", "maybe"], "eval", "--eval.knn expects true or false, got 'maybe'"),
        (["eval", "enc", "--eval.knn_kk", "3"], "eval", "did you mean '--eval.knn_k'"),
        (["finetune", "--optim.lr", "abc"], "finetune", "--optim.lr expects a number, got 'abc'"),
        (["finetune", "--config", "nofile.yaml"], "finetune", "--config: unknown preset 'nofile.yaml'"),
        (["convert", "a"], "convert", "the following arguments are required: dst, --from"),
        (["convert", "a", "b", "--from", "hff"], "convert", "invalid choice: 'hff'"),
        (["tokenizer", "train"], "tokenizer", "the following arguments are required: --corpus, --out"),
        (["tokenizer", "train", "--corpus", "c", "--out", "o", "--vocab_size", "big"], "tokenizer",
         "--vocab_size expects an integer, got 'big'"),
        (["data", "shard"], "data", "the following arguments are required: --pairs, --out"),
        (["generate"], "generate", "the following arguments are required: run_dir"),
        (["generate", "r", "--num", "x"], "generate", "--num expects an integer, got 'x'"),
        (["masks", "--ratio", "x"], "masks", "--ratio expects a number, got 'x'"),
        (["masks", "--strategy", "simim"], "masks", "did you mean 'simmim'"),
        (["list", "backbone"], "list", "did you mean 'backbones'"),
    ],
)  # fmt: skip
def test_parser_errors_of_every_verb(argv, verb, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == USAGE
    err = capsys.readouterr().err
    line = err.strip()
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err, err
    assert line.startswith(f"convergent{' ' + verb if verb else ''}: error: ") and expected in line, line


def test_config_file_key_typo_suggests_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  wieght_decay: 0.1\n")
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", str(bad)])
    assert "did you mean 'optim.weight_decay'" in one_line_error(capsys.readouterr().err, "pretrain")


# --- what is found before the run starts leaves no run directory --------------------------------------------


def test_an_existing_runs_checkpoints_are_not_overwritten(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "config.yaml").write_text("mine\n")
    assert main(["pretrain", *TINY, "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "r"]) == USAGE
    assert f"--resume {run}" in one_line_error(capsys.readouterr().err, "pretrain")
    assert (run / "config.yaml").read_text() == "mine\n"


def test_a_late_config_error_removes_the_run_directory(tmp_path, capsys):
    """The data is found empty after the config was written: the run never started."""
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    argv = ["pretrain", *TINY, "--data.name", "image-folder", "--data.root", str(tmp_path / "empty"),
            "--trainer.out_dir", str(out)]  # fmt: skip
    assert main(argv) == USAGE
    assert "no images in" in one_line_error(capsys.readouterr().err, "pretrain")
    assert not out.exists()


# --- I/O faults: in-process, injected -------------------------------------------------------------------------


def test_read_only_output(read_only, capsys):
    t0 = time.perf_counter()
    assert main(["pretrain", *TINY, "--trainer.out_dir", str(read_only / "runs")]) == USAGE
    line = one_line_error(capsys.readouterr().err, "pretrain")
    assert line.endswith(f"--trainer.out_dir {read_only / 'runs'}: cannot write in {read_only}: Read-only file system")
    assert time.perf_counter() - t0 < 30 and list(read_only.iterdir()) == []


def test_debug_shows_the_traceback(read_only, monkeypatch):
    monkeypatch.setenv("CONVERGENT_DEBUG", "1")
    with pytest.raises(CommandError, match="Read-only file system"):
        main(["pretrain", *TINY, "--trainer.out_dir", str(read_only / "runs")])


def test_a_bug_is_a_traceback_not_a_one_liner(tmp_path, monkeypatch):
    from convergent.workflows import pretrain

    def bug(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(pretrain, "run_pretrain", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["pretrain", *TINY, "--trainer.out_dir", str(tmp_path)])


def _full_disk_at_call(n: int, real):
    """``save_file`` that fails like safetensors on a full disk at its ``n``-th call, after a torn write."""
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) < n:
            return real(tensors, filename, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(b"torn")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    return save_file


def test_full_disk_at_the_second_checkpoint_then_resume(tmp_path, monkeypatch, capsys):
    run, root = tmp_path / "r", tmp_path / "r" / "checkpoints"
    monkeypatch.setattr(ckpt, "save_file", _full_disk_at_call(2, ckpt.save_file))
    argv = ["pretrain", *TINY, "--trainer.max_steps", "4", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "r"]
    assert main(argv) == USAGE
    line = one_line_error(capsys.readouterr().err, "pretrain")
    assert line == (f"convergent pretrain: error: {root / 'step-000004.tmp' / 'model.safetensors'}: No space left on "
                    f"device (saving checkpoint step-000004 of {run}; step-000002 is still the latest)")  # fmt: skip
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002"]  # no .tmp left
    assert (root / "latest").read_text().strip() == "step-000002"
    monkeypatch.undo()
    assert main(["pretrain", "--resume", str(run)]) == OK
    assert (root / "latest").read_text().strip() == "step-000004"
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_corrupt_checkpoint_on_resume(tmp_path, capsys):
    run = tmp_path / "r"
    argv = ["pretrain", *TINY, "--trainer.max_steps", "2", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "r"]
    assert main(argv) == OK
    capsys.readouterr()
    weights = run / "checkpoints" / "step-000002" / "model.safetensors"
    weights.write_bytes(b"garbage")
    assert main(["pretrain", "--resume", str(run)]) == USAGE
    line = one_line_error(capsys.readouterr().err, "pretrain")
    assert f"{weights.parent}: cannot be loaded (SafetensorError" in line
    assert weights.read_bytes() == b"garbage" and (run / "config.yaml").is_file()  # nothing removed


def test_resume_of_a_missing_run(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path / "nope")]) == USAGE
    line = one_line_error(capsys.readouterr().err, "pretrain")
    assert line.endswith(f"--resume {tmp_path / 'nope'}: no such directory; expected the run directory of "
                         "`convergent pretrain` (with its config.yaml)")  # fmt: skip


def test_a_damaged_or_edited_config_on_resume(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("data: [oops\n")
    assert main(["pretrain", "--resume", str(run)]) == USAGE
    assert f"{run / 'config.yaml'}: not valid YAML (" in one_line_error(capsys.readouterr().err, "pretrain")
    (run / "config.yaml").write_text("trainer:\n  max_steps: 0\n")
    assert main(["pretrain", "--resume", str(run)]) == USAGE
    line = one_line_error(capsys.readouterr().err, "pretrain")
    assert line.endswith(f"{run / 'config.yaml'}: trainer.max_steps must be >= 1, got 0")


def test_a_two_view_task_on_text_is_refused_before_the_banner(tmp_path, capsys):
    argv = ["pretrain", "--preset", "simclr-vit-fmnist", "--data.name", "wordnet-glosses", "--data.limit", "256",
            "--trainer.out_dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == USAGE
    out, err = capsys.readouterr()
    assert "missing ['image', 'image2']" in err and len(err.strip().splitlines()) == 1
    assert "steps" not in out and "backbone" not in out  # no banner: nothing looked like it would train
