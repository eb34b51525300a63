"""A sweep's measured points on disk: one JSON file per point, each written atomically (a
temporary file renamed over the old one), and ``results.json``, all of them in grid order.

A point's file exists once its held-out loss is measured; ``done`` says whether it is complete
(a fine-tuning score can come later). A finished point is never measured again: the runner
reads these files first (:func:`read_points`). Parallel workers write only their points' files;
``results.json`` is written by the process that runs the sweep.
"""

import json
from pathlib import Path
from typing import Any

from convergent.config import to_dict
from convergent.evaluation.report import write_report
from convergent.workflows.sweep_plan import SweepPlan


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`convergent.evaluation.report.write_report`:
    a temporary file renamed over ``path``; a kill leaves the old file or the new one)."""
    return write_report(data, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a ``ValueError`` naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it to measure that point again") from e


def read_points(plan: SweepPlan) -> dict[str, dict]:
    """Point key -> its record, for the points of ``plan`` measured so far."""
    found = {}
    for point in plan.points:
        path = plan.paths.point(point.key)
        if path.is_file():
            found[point.key] = read_json(path)
    return found


def write_point(plan: SweepPlan, record: dict) -> Path:
    """Write one point's record (its ``key`` names the file)."""
    return write_json(plan.paths.point(record["key"]), record)


def write_results(plan: SweepPlan) -> list[dict]:
    """``results.json``: the sweep's config and every point measured so far, in grid order;
    returns the points."""
    points = list(read_points(plan).values())
    write_json(plan.paths.results, {"sweep": to_dict(plan.sweep), "train_size": plan.train_size, "points": points})
    return points
