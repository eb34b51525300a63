"""``convergent list [backbones|tasks|datasets|evaluations]``: what can be built and run, from
torch-free registries.

Backbones come from :mod:`convergent.backbones.registry`. Tasks, datasets and evaluations are
read from ``convergent.tasks.registry``, ``convergent.data.registry`` and
``convergent.evaluation.registry`` once those modules exist; each must offer a torch-free
``names() -> list[str]`` (listing must stay fast, see BENCHMARKS.md).
"""

import importlib
import sys

from convergent.commands.parser import Parser
from convergent.exits import OK

SECTIONS = ("backbones", "tasks", "datasets", "evaluations")
REGISTRIES = {
    "tasks": "convergent.tasks.registry",
    "datasets": "convergent.data.registry",
    "evaluations": "convergent.evaluation.registry",
}
"""Section -> module with a ``names()`` function; a missing module means none registered yet."""

COLUMNS = ("name", "family", "version", "width(s)", "depth(s)", "heads", "img", "patch", "window")
_FIELDS = (
    ("version",),
    ("dims", "embed_dim"),
    ("depths", "depth"),
    ("num_heads",),
    ("img_size",),
    ("patch_size",),
    ("window_size",),
)
"""Config fields shown after name and family, one tuple per column (first field present wins)."""
EVALUATION_COLUMNS = ("name", "default", "needs", "description")


def parser() -> Parser:
    p = Parser(description="List registered backbones, tasks, datasets and evaluations.")
    p.add_argument(
        "what", nargs="?", default="all", choices=("all", *SECTIONS), help="Section to list (default: all)."
    )
    return p


def run(args) -> int:
    sections = SECTIONS if args.what == "all" else (args.what,)
    tty = sys.stdout.isatty()
    for i, section in enumerate(sections):
        if i:
            print()
        if section == "backbones":
            _print_table("backbones", COLUMNS, backbone_rows(), tty)
        elif section == "evaluations":
            _print_table("evaluations", EVALUATION_COLUMNS, evaluation_rows(), tty)
        else:
            _print_names(section, registered_names(section))
    return OK


def backbone_rows() -> list[tuple[str, ...]]:
    """One row of :data:`COLUMNS` per registered backbone ("-" where a field does not apply)."""
    from convergent.backbones.registry import backbone_config, backbone_names

    rows = []
    for name in backbone_names():
        cfg = backbone_config(name)
        rows.append((name, cfg.family, *(_field(cfg, names) for names in _FIELDS)))
    return rows


def evaluation_rows() -> list[tuple[str, ...]]:
    """One row of :data:`EVALUATION_COLUMNS` per registered evaluation."""
    from convergent.evaluation import registry

    rows = []
    for name in registry.names():
        e = registry.entry(name)
        rows.append((name, "yes" if e.default else "-", ", ".join(e.needs), e.description))
    return rows


def registered_names(section: str) -> list[str] | None:
    """Names registered in ``section``'s registry, or None while that registry does not exist."""
    module = REGISTRIES[section]
    try:
        registry = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None  # the registry (or its package) is not written yet
        raise
    return sorted(registry.names())


def _field(cfg, names: tuple[str, ...]) -> str:
    """The first of ``names`` that ``cfg`` has, as text (sequences as ``2-2-6-2``); "-" if none."""
    for name in names:
        if hasattr(cfg, name):
            value = getattr(cfg, name)
            return "-".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    return "-"


def _print_names(section: str, names: list[str] | None) -> None:
    if names is None:
        print(f"{section}: none registered yet")
    elif not names:
        print(f"{section}: none registered")
    else:
        print(f"{section} ({len(names)}): " + ", ".join(names))


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]], tty: bool) -> None:
    """A rich table on a terminal; aligned plain text otherwise (pipes, files, tests)."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    if tty:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{title} ({len(rows)})", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for c, w in zip(columns, widths):
            table.add_column(c, justify="left" if c in ("name", "family") else "right", no_wrap=True, min_width=w)
        for row in rows:
            table.add_row(*row)
        console = Console()
        # never crop or truncate (names are what users copy): a narrow terminal wraps instead
        console.width = max(console.width, sum(widths) + 3 * len(columns))
        console.print(table)
        return
    print(f"{title} ({len(rows)})")
    for row in (columns, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
