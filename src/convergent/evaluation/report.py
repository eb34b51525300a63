"""Evaluation results for people (an aligned table in the run summary) and for machines (JSON).

``results`` is a flat or nested dict, e.g. ``{"knn": {"acc": 0.81, "k": 20}, "linear_probe":
{"acc": 0.84, "train_acc": 0.9}, "finetune": {"test_acc": 0.92}}``. Nested keys are joined
with dots (``knn.acc``); accuracies (keys ending in ``acc``) are shown as percentages.
"""

import json
import math
from pathlib import Path
from typing import Any

from convergent.files import write_text_atomic


def flatten(results: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _format_value(key: str, value: Any) -> str:
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-d torch / numpy scalar
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if key.rsplit(".", 1)[-1].endswith("acc") and math.isfinite(value):
            return f"{100 * value:.2f}%"
        return f"{value:.4g}"
    return str(value)


WIDTH = 80
"""Columns of the printed table: it fits an 80-column terminal (``summary.json`` keeps every value whole)."""


def format_report(results: dict[str, Any], title: str = "evaluation", width: int = WIDTH) -> str:
    """A two-column table at most ``width`` columns wide: names left-aligned; numbers
    right-aligned in one column, text (paths, names, lists) left-aligned so a long path does not
    push the numbers aside, and shortened in the middle (``…``) where it would not fit."""
    flat = flatten(results)
    if not flat:
        return f"{title}: no results"
    rows = [(k, _format_value(k, v), _is_number(v)) for k, v in flat.items()]
    wk = min(max(len(k) for k, _, _ in rows), width // 2)
    wn = max([len(v) for _, v, num in rows if num] or [0])
    room = max(width - wk - 2, 8)  # for the value column
    lines = [
        f"{_shorten(k, wk):<{wk}}  {v:>{wn}}" if num else f"{_shorten(k, wk):<{wk}}  {_shorten(v, room)}"
        for k, v, num in rows
    ]
    rule = "-" * min(max(len(line) for line in lines), width)
    return "\n".join([_shorten(title, width), rule, *lines, rule])


def _shorten(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` columns, else its start and end around ``…``."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or getattr(value, "ndim", None) == 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d torch / numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def write_report(results: dict[str, Any], path: str | Path) -> Path:
    """Write ``results`` as indented JSON, whole or not at all (:mod:`convergent.files`: processes
    writing the same report at once, the workers of a parallel sweep, do not clash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(_jsonable(results), indent=2) + "\n")
