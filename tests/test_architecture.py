"""The dependency direction of DESIGN.md, enforced: layers → backbones, heads → tasks →
training, evaluation → workflows → commands/cli, never backwards; losses and masking import
only torch; data imports no model code; no import cycles between modules; imports at the
top of the workflows and evaluation modules (Style 15); tasks ask the backbone protocol and
never read a backbone's config (Style 13); nothing imports torchvision or timm.

Each check is a function of a source root, so the tests at the end run them on a fixture
tree with a deliberate cycle, an upward import and a function-local import, and see them fail.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convergent"

# package → convergent packages it may import (besides itself, the package's ``__init__``, the
# torch-free shared ``registry``, ``choices`` and ``files``, which import nothing of convergent)
ALLOWED = {
    "layers": set(),
    "losses": set(),
    "masking": set(),
    "generation": set(),
    "files": set(),  # whole-or-nothing file writes: torch-free, shared by every layer
    "rundir": set(),  # the names of a run directory: torch-free, below everything that writes a run
    "exits": set(),  # the exit statuses: torch-free, used by the commands (and the Trainer's callers)
    # a run's config checked before anything loads: torch-free registries and config only
    "validate": {"backbones", "config", "data", "rundir", "tasks"},
    "data": {"config"},  # data imports no model code
    "backbones": {"layers"},
    "heads": {"layers"},
    "converters": {"backbones", "layers"},
    "tasks": {"backbones", "generation", "heads", "layers", "losses", "masking", "rundir"},
    # layers: the CPU linear route is chosen before compiling; data: the Dataset contract (data/protocol.py)
    "training": {"config", "data", "exits", "layers", "rundir", "tasks"},
    "evaluation": {"config", "backbones", "tasks", "heads", "training", "data"},
    # converters sit below workflows (they import only backbones): a workflow may use them
    "workflows": {"config", "backbones", "converters", "data", "tasks", "training", "evaluation", "generation",
                  "exits", "rundir", "validate"},
    # image search (index, search, serve, export): above workflows, beside the commands that call it
    "app": {"backbones", "config", "data", "evaluation", "heads", "rundir", "training", "workflows"},
    "commands": {"app", "backbones", "converters", "config", "data", "evaluation", "exits", "masking", "rundir",
                 "tasks", "validate", "workflows"},
}
TOP_IMPORTS = ("workflows", "evaluation", "rundir", "validate", "exits")
"""Packages whose modules import at the top only (Style 15; the registries load their entries
by name, not by a function-local import)."""


# --- the checks, on any source root ------------------------------------------------------------


def imports_of(file: Path, top_level: bool = False) -> set[str]:
    """Modules named by the ``import`` / ``from`` statements of ``file`` (``top_level``: only
    those run when the module is imported — not inside functions or ``if TYPE_CHECKING:``)."""
    tree = ast.parse(file.read_text())
    nodes = _module_level(tree.body) if top_level else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from package import module`
    return names


def _module_level(body: list[ast.stmt]):
    """The statements of ``body`` run at import, nested blocks included, function bodies not."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _module_level(getattr(node, field, []))


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for the package at ``root`` (``.../convergent``)."""
    found = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = file
    return found


def package_files(root: Path, package: str) -> list[Path]:
    single = root / f"{package}.py"
    return [single] if single.is_file() else sorted((root / package).rglob("*.py"))


def direction_violations(root: Path, package: str, allowed: dict[str, set[str]]) -> list[str]:
    """``"file imports module"`` for each import of ``package`` against ``allowed``."""
    bad = []
    for file in package_files(root, package):
        for name in sorted(imports_of(file)):
            parts = name.split(".")
            if parts[0] != root.name or len(parts) < 2 or parts[1] in (package, "__init__", "registry", "choices", "files"):
                continue
            if parts[1] not in allowed[package]:
                bad.append(f"{file.relative_to(root)} imports {name}")
    return sorted(set(bad))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the package its module-level imports name."""
    mods = modules(root)
    return {m: {n for n in imports_of(f, top_level=True) if n in mods and n != m} for m, f in mods.items()}


def import_cycles(root: Path) -> list[list[str]]:
    """The import cycles between the modules of ``root``, each as a path ``a → b → … → a``
    (one per strongly connected group, found by depth-first search)."""
    graph, state, stack, cycles = import_graph(root), {}, [], []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def function_local_imports(root: Path, package: str) -> list[str]:
    """``"file:line imports module"`` for each import inside a function of ``package``."""
    found = []
    for file in package_files(root, package):
        for func in ast.walk(ast.parse(file.read_text())):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        what = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        found.append(f"{file.relative_to(root)}:{node.lineno} imports {what}")
    return sorted(set(found))


def backbone_config_reads(root: Path, package: str = "tasks") -> list[str]:
    """``"file:line reads backbone.config"`` for each attribute chain in ``package`` that reaches
    a backbone's ``config`` (``backbone.config``, ``self.backbone.config``,
    ``self.text_backbone.config``): tasks ask the declared protocol instead."""
    found = []
    for file in package_files(root, package):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "config" and _names_a_backbone(node.value):
                found.append(f"{file.relative_to(root)}:{node.lineno} reads {ast.unparse(node)}")
    return sorted(set(found))


def _names_a_backbone(node: ast.expr) -> bool:
    """``backbone``, ``x.backbone``, ``x.text_backbone``, ``x.teacher["backbone"]``, ...: an
    expression whose last name ends in "backbone"."""
    if isinstance(node, ast.Subscript):
        node = node.slice
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.endswith("backbone")
    if isinstance(node, ast.Name):
        return node.id.endswith("backbone")
    return isinstance(node, ast.Attribute) and node.attr.endswith("backbone")


# --- the checks on src/convergent ----------------------------------------------------------------


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    bad = direction_violations(SRC, package, ALLOWED)
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = import_cycles(SRC)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", TOP_IMPORTS)
def test_imports_at_the_top(package):
    found = function_local_imports(SRC, package)
    assert not found, "imports inside functions (move them to the top):\n" + "\n".join(found)


def test_tasks_ask_the_protocol_not_the_backbone_config():
    found = backbone_config_reads(SRC)
    assert not found, "tasks read a backbone's config (declare it on the protocol instead):\n" + "\n".join(found)


def test_no_torchvision_or_timm():
    bad = [
        f"{f.relative_to(SRC)}: {n}"
        for f in sorted(SRC.rglob("*.py"))
        for n in imports_of(f)
        if n.split(".")[0] in ("torchvision", "timm")
    ]
    assert not bad, bad


# --- the checks fail where they should ----------------------------------------------------------


FAKE_TREE = {
    "__init__.py": "",
    "rundir.py": "import os\n",
    "layers/__init__.py": "",
    "layers/attention.py": "from convergent.tasks import mae  # upward\n",
    "tasks/__init__.py": "",
    "tasks/mae.py": (
        "from convergent.layers.attention import *\n\n"
        "def grid(backbone, self):\n"
        "    return backbone.config.img_size // self.backbone.config.patch_size + self.config.mask_ratio\n"
    ),
    "tasks/clip.py": "def towers(self):\n    return self.text_backbone.config, self.teacher['backbone'].config\n",
    "workflows/__init__.py": "",
    "workflows/pretrain.py": "import json\n\nfrom convergent.workflows.summary import finish\n",
    "workflows/summary.py": "from convergent.workflows import evaluate\n",
    "workflows/evaluate.py": (
        "from typing import TYPE_CHECKING\n\nimport convergent.workflows.pretrain\n\n"
        "if TYPE_CHECKING:\n    from convergent.workflows import text\n"
    ),
    "workflows/text.py": "def tokenizer():\n    from convergent.workflows import evaluate  # local\n",
}


@pytest.fixture
def fake_src(tmp_path) -> Path:
    """A package ``convergent`` of fake modules: layers ⇄ tasks (an upward import closing a
    cycle), pretrain → summary → evaluate → pretrain, and imports the checks must not count
    as module-level (``TYPE_CHECKING``, inside a function)."""
    root = tmp_path / "convergent"
    for name, text in FAKE_TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_direction_check_finds_the_upward_import(fake_src):
    assert direction_violations(fake_src, "layers", ALLOWED) == [
        "layers/attention.py imports convergent.tasks", "layers/attention.py imports convergent.tasks.mae"]
    assert direction_violations(fake_src, "tasks", ALLOWED) == []
    assert direction_violations(fake_src, "workflows", ALLOWED) == []


def test_cycle_check_reports_each_cycle_path(fake_src):
    cycles = [" -> ".join(c) for c in import_cycles(fake_src)]
    assert cycles == [
        "convergent.layers.attention -> convergent.tasks.mae -> convergent.layers.attention",
        "convergent.workflows.evaluate -> convergent.workflows.pretrain -> convergent.workflows.summary"
        " -> convergent.workflows.evaluate",
    ]
    (fake_src / "workflows" / "summary.py").write_text("def finish():\n    from convergent.workflows import evaluate\n")
    (fake_src / "layers" / "attention.py").write_text("import torch\n")
    assert import_cycles(fake_src) == []


def test_top_import_check_finds_the_local_import(fake_src):
    assert function_local_imports(fake_src, "workflows") == ["workflows/text.py:2 imports convergent.workflows"]
    assert function_local_imports(fake_src, "rundir") == []


def test_config_read_check_finds_each_backbone_config(fake_src):
    assert backbone_config_reads(fake_src) == [
        "tasks/clip.py:2 reads self.teacher['backbone'].config",
        "tasks/clip.py:2 reads self.text_backbone.config",
        "tasks/mae.py:4 reads backbone.config",
        "tasks/mae.py:4 reads self.backbone.config",
    ]  # the task's own self.config is not a backbone's
