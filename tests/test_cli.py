"""The ``convergent`` command line: help, list, usage errors, and lazy imports."""

import shutil
import subprocess
import sys
import types

import pytest

from convergent.cli import main
from convergent.commands import listing


def convergent(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``convergent`` console script (or the module, if it is not on PATH)."""
    exe = shutil.which("convergent")
    cmd = [exe] if exe else [sys.executable, "-m", "convergent.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_verbs():
    out = convergent("--help")
    assert out.returncode == 0, out.stderr
    assert "list" in out.stdout and "convert" in out.stdout


def test_list_shows_backbones_tasks_and_datasets():
    out = convergent("list")
    assert out.returncode == 0, out.stderr
    for name in ("swinv2_tiny", "swin_tiny", "vit_base_patch16", "bert_base"):
        assert name in out.stdout
    assert "tasks" in out.stdout and "datasets" in out.stdout
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("swinv2_tiny "))
    assert row == ["swinv2_tiny", "swin", "2", "96", "2-2-6-2", "3-6-12-24", "256", "4", "8"]


def test_list_one_section(capsys):
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "vit_test" in out and "tasks" not in out and "datasets" not in out


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["convert", "--help"]])
def test_cli_does_not_import_torch(argv):
    code = (
        "import sys\n"
        "from convergent.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        "assert rc == 0, rc\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'rich') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_unknown_subcommand_exits_2_with_a_suggestion():
    out = convergent("lst")
    assert out.returncode == 2
    assert "invalid choice: 'lst'" in out.stderr and "did you mean 'list'" in out.stderr


def test_list_unknown_section_exits_2():
    out = convergent("list", "nonsense")
    assert out.returncode == 2
    assert "'nonsense'" in out.stderr and "backbones" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_option_suggests_the_close_one():
    out = convergent("convert", "a", "b", "--frm", "hf")
    assert out.returncode == 2
    assert "unrecognized arguments" in out.stderr and "'--from'" in out.stderr


def test_missing_required_option_is_named_as_typed():
    out = convergent("convert", "a", "b")
    assert out.returncode == 2
    assert "required: --from" in out.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "a", "b", "--from", "convergent", "--to", "convergent"], "cannot convert --from convergent"),
        (["convert", "a", "b", "--from", "hf", "--legacy"], "--legacy applies only to --to hf"),
        (["convert", "a", "b", "--from", "hf", "--img_size", "224"], "--img_size applies only"),
    ],
)
def test_convert_option_mistakes_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_backbone_rows_follow_the_registry():
    from convergent.backbones.registry import backbone_names

    rows = listing.backbone_rows()
    assert [r[0] for r in rows] == backbone_names()
    assert all(len(r) == len(listing.COLUMNS) for r in rows)
    bert = next(r for r in rows if r[0] == "bert_base")
    assert bert[1:6] == ("text", "-", "768", "12", "12")


def test_missing_registry_reads_as_none_registered(monkeypatch):
    monkeypatch.setitem(listing.REGISTRIES, "tasks", "convergent.no_such_package.registry")
    assert listing.registered_names("tasks") is None


def test_a_registry_with_names_is_listed(monkeypatch, capsys):
    fake = types.ModuleType("fake_task_registry")
    fake.names = lambda: ["simmim", "mae"]
    monkeypatch.setitem(sys.modules, "fake_task_registry", fake)
    monkeypatch.setitem(listing.REGISTRIES, "tasks", "fake_task_registry")
    assert main(["list", "tasks"]) == 0
    assert "tasks (2): mae, simmim" in capsys.readouterr().out
