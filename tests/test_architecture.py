"""The dependency direction of DESIGN.md, enforced: layers → backbones, heads → tasks →
training, evaluation → workflows → commands/cli, never backwards; losses and masking import
only torch; data imports no model code; nothing imports torchvision or timm."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convergent"

# package → convergent packages it may import (besides itself, the package's ``__init__`` and
# the torch-free shared ``registry``)
ALLOWED = {
    "layers": set(),
    "losses": set(),
    "masking": set(),
    "generation": set(),
    "rundir": set(),  # the names of a run directory: torch-free, below everything that writes a run
    "data": {"config"},  # data imports no model code
    "backbones": {"layers"},
    "heads": {"layers"},
    "converters": {"backbones", "layers"},
    "tasks": {"backbones", "heads", "layers", "losses", "masking"},
    "training": {"config", "layers", "rundir", "tasks"},  # layers: the CPU linear route is chosen before compiling
    "evaluation": {"config", "backbones", "tasks", "heads", "training", "data"},
    # converters sit below workflows (they import only backbones): a workflow may use them
    "workflows": {"config", "backbones", "converters", "data", "tasks", "training", "evaluation", "generation"},
    "commands": {"backbones", "converters", "config", "data", "masking", "tasks", "workflows"},
}


def imports_of(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def files():
    return sorted(SRC.rglob("*.py"))


def package_files(package: str) -> list[Path]:
    single = SRC / f"{package}.py"
    return [single] if single.is_file() else sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    bad = []
    for file in package_files(package):
        for name in imports_of(file):
            parts = name.split(".")
            if parts[0] != "convergent" or len(parts) < 2 or parts[1] in (package, "__init__", "registry"):
                continue
            if parts[1] not in ALLOWED[package]:
                bad.append(f"{file.relative_to(SRC)} imports {name}")
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_no_torchvision_or_timm():
    bad = [
        f"{f.relative_to(SRC)}: {n}"
        for f in files()
        for n in imports_of(f)
        if n.split(".")[0] in ("torchvision", "timm")
    ]
    assert not bad, bad
