"""The end of a sweep: its measured points as a table, the fit of L(N, D)
(:func:`convergent.evaluation.scaling.fit_loss_law`), the compute–loss Pareto frontier, the
rank correlation of held-out loss and downstream score, written to ``fit.json`` and drawn in
``scaling.png``.

N is the backbone's parameter count (embeddings included, heads and decoders not); D is the
number of samples seen (batch x steps) or, with ``fit_data: distinct``, the distinct training
samples of the point's data fraction; compute is the measured FLOPs of a training step x steps.
Failed points (diverged runs) are listed but take no part in the fit, frontier or correlation.
"""

import math

from convergent.evaluation.scaling import fit_loss_law, fit_problem, pareto_frontier, spearman
from convergent.workflows.pictures import save_scaling_plot
from convergent.workflows.sweep_costs import format_count, format_table
from convergent.workflows.sweep_plan import SweepPlan
from convergent.workflows.sweep_records import read_points, write_json

LAW = "L(N, D) = E + A / N^alpha + B / D^beta"
N_MEANS = "backbone parameters (all of the encoder's, embeddings included; heads and decoders not)"
D_MEANS = {"seen": "samples seen (batch size x steps)", "distinct": "distinct training samples of the data fraction"}
COMPUTE_MEANS = "training FLOPs: one step's forward + backward counted by torch FlopCounterMode, x steps"


def report_sweep(plan: SweepPlan) -> dict:
    """Fit, frontier and correlation of the points measured so far; writes ``fit.json`` and
    ``scaling.png`` and prints the tables. Returns what ``fit.json`` holds."""
    points = [p for p in read_points(plan).values()]
    good = [p for p in points if p.get("val_loss") is not None and math.isfinite(p["val_loss"])]
    data_key = "samples_seen" if plan.sweep.fit_data == "seen" else "distinct_samples"
    report = {"law": LAW, "N": N_MEANS, "D": D_MEANS[plan.sweep.fit_data], "compute": COMPUTE_MEANS,
              "points": len(points), "fitted_points": len(good),
              "failed_points": [p["key"] for p in points if p.get("status") == "failed"]}  # fmt: skip
    report.update(_fit(good, data_key))
    frontier = pareto_frontier([p["train_flops"] for p in good], [p["val_loss"] for p in good])
    report["frontier"] = [good[i]["key"] for i in frontier]
    scored = [p for p in good if p.get("score") is not None]
    score_name = plan.sweep.downstream.kind
    rho = spearman([p["val_loss"] for p in scored], [p["score"] for p in scored])
    report["spearman"] = {"between": f"val_loss and {scored[0]['score_name'] if scored else score_name}",
                          "points": len(scored), "rho": rho if math.isfinite(rho) else None}  # fmt: skip
    write_json(plan.paths.fit, report)
    save_scaling_plot(good, report["frontier"], report["spearman"]["rho"], plan.paths.plot,
                      title=f"{plan.sweep.preset}: {len(good)} points")  # fmt: skip
    print(format_points(points))
    print(format_fit(report))
    print(f"sweep: results {plan.paths.results}, fit {plan.paths.fit}, pictures {plan.paths.plot}", flush=True)
    return report


def _fit(points: list[dict], data_key: str) -> dict:
    """``{"fit": {...}}``, or ``{"fit": None, "fit_skipped": why}`` when the points cannot
    determine the law."""
    n, d = [p["params"] for p in points], [p[data_key] for p in points]
    problem = fit_problem(n, d)
    if problem is not None:
        return {"fit": None, "fit_skipped": f"not fitted: {problem}"}
    fit = fit_loss_law(n, d, [p["val_loss"] for p in points])
    return {"fit": fit.as_dict(), "fit_skipped": None}


def format_points(points: list[dict]) -> str:
    """The points as an aligned text table."""
    head = ("point", "N", "FLOPs", "seen", "distinct", "val_loss", "score")
    rows = [head]
    for p in points:
        loss = "failed" if p.get("val_loss") is None else f"{p['val_loss']:.4f}"
        score = "-" if p.get("score") is None else f"{p['score']:.4f}"
        counts = (p["params"], p["train_flops"], p["samples_seen"], p["distinct_samples"])
        rows.append((p["key"], *(format_count(c) for c in counts), loss, score))
    return format_table(rows)


def format_fit(report: dict) -> str:
    """The fit, frontier and correlation in a few lines."""
    lines = []
    fit = report["fit"]
    if fit is None:
        lines.append(f"{LAW}: {report['fit_skipped']}")
    else:
        lines.append(f"{LAW}: E {fit['E']:.4g}, A {fit['A']:.4g}, alpha {fit['alpha']:.4g}, B {fit['B']:.4g}, "
                     f"beta {fit['beta']:.4g}; residual RMSE {fit['rmse']:.4g}, R^2 {fit['r2']:.4f} "
                     f"({fit['points']} points)")  # fmt: skip
    lines.append(f"  N: {report['N']}; D: {report['D']}")
    lines.append(f"compute frontier ({report['compute']}): {', '.join(report['frontier']) or '-'}")
    rho = report["spearman"]["rho"]
    shown = "-" if rho is None else f"{rho:.3f}"
    lines.append(f"Spearman rank correlation of {report['spearman']['between']}: {shown} "
                 f"({report['spearman']['points']} points)")  # fmt: skip
    return "\n".join(lines)
