"""The ``report`` job: the answer a team can act on, from one run folder ``STORE/<sweep>/<task>/``.

Recipe: read the scores (tables.py) → draw one shared set of bootstrap resamples → per prompting arm and
fine-tuned model, the match rule and N* with its interval (transitions.py) → dollars (costs.py) →
decision tiers (analysis.py) → plots (plots.py) → report.md and a self-contained report.html
(document.py). Outputs::

    results.csv       one row per arm (kind, model, variant) x N x seed x metric: interval and dollars
    transitions.csv   one row per metric x open model x prompting arm: match, N* (interval), dollars
    plots/*.png       monthly cost vs volume per tier, metric vs N, dollars vs N, metric per dollar
    report.md, report.html

How every figure is computed: docs/report.md.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.core.store import LocalStore, open_store
from switchpoint.report.analysis import Analysis, analyse_run
from switchpoint.report.document import build_document, render_html, render_markdown
from switchpoint.report.plots import make_plots
from switchpoint.report.settings import ReportSettings

__all__ = ["Analysis", "ReportSettings", "command", "write_report"]


def _csv_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def write_report(run_dir: Path, out_dir: Path, settings: ReportSettings, sweep: dict | None = None,
                 prices: dict | None = None, api_models: dict | None = None) -> Analysis:
    """Analyse a run folder and write every report file under ``out_dir``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise JobError(f"{run_dir}: no such run folder; give STORE/<sweep>/<task> with --run (or --store/--sweep/--task)")
    an = analyse_run(run_dir, settings, sweep, prices or manifests.load_prices(), api_models or manifests.load_api_models())
    out_dir.mkdir(parents=True, exist_ok=True)
    an.results.map(_csv_value).to_csv(out_dir / "results.csv", index=False)
    an.transitions.map(_csv_value).to_csv(out_dir / "transitions.csv", index=False)
    blocks = build_document(an, make_plots(an, out_dir))
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, out_dir / "plots"), encoding="utf-8")
    return an


def _local_copy(run_store, tmp: Path) -> Path:
    """A local folder for the run: the store's own folder, or a download of an s3:// prefix."""
    if isinstance(run_store, LocalStore):
        return run_store.path
    got = run_store.download_dir(tmp)
    if not got:
        raise JobError(f"{run_store.uri}: empty or missing; is this STORE/<sweep>/<task>/?")
    return tmp


@click.command("report", context_settings={"show_default": True})
@options(ReportSettings)
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(ml_root, **given):
    """The answer for one task of a sweep: per prompting tier, the fine-tuned model and N that match it
    (non-inferiority within --margin, holding at every larger N), N* with a 95% interval, the one-off
    cost and the break-even volumes; plots and the tables behind them.

    \b
    Inputs : the run folder STORE/<sweep>/<task>/: scores/scores.jsonl (required), data/task.json,
             data/sweep.json, the train/infer/bedrock metrics files and runs/<step>.json (store layout).
    Outputs: results.csv, transitions.csv, plots/*.png, report.md, report.html (self-contained).
    """
    paths = job_paths(ml_root)

    def body() -> None:
        settings = load_settings(ReportSettings, (COMMAND_LINE, given))
        run, store, task, out_dir = settings.run, settings.store, settings.task, settings.out
        sweep_def = manifests.load_sweep(settings.sweep) if settings.sweep else None
        with tempfile.TemporaryDirectory(prefix="switchpoint-report-") as tmp:
            if store:
                if not (sweep_def and task):
                    raise JobError("--store needs --sweep and --task to find STORE/<sweep>/<task>/")
                run_store = open_store(store).child(sweep_def["name"], manifests.load_task(task)["store_key"])
                run_dir = _local_copy(run_store, Path(tmp) / "run")
                dest = Path(out_dir) if out_dir else Path(tmp) / "report"
            else:
                run_dir = _local_copy(open_store(run), Path(tmp) / "run") if run else paths.processing_input("run")
                dest = Path(out_dir) if out_dir else paths.processing_output
            an = write_report(run_dir, dest, settings, sweep_def)
            where = str(dest)
            if store and not out_dir:
                target = run_store.child("report")
                target.publish(dest)
                where = target.uri
        matched = an.transitions[an.transitions.status == "matched"]
        click.echo(f"report: {an.name}: {len(an.tiers)} tier(s), {len(matched)} of {len(an.transitions)} "
                   f"comparison(s) matched in the sweep -> {where}")

    run_job(paths, body, name="report")
