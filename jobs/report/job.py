"""The ``report`` job: transition points with uncertainty, dollars per arm, plots and a recommendation.

Input: one run folder, ``STORE/<sweep>/<task>/`` (``scores/`` is required; metrics files and
``runs/*.json`` are used where present, and their absence is stated in the report). Output::

    results.csv       one row per arm (kind, model, variant) x N x seed x metric: interval and dollars
    transitions.csv   one row per metric x open model x prompting arm: n_cross, n_cross_confident,
                      n_cross_extrapolated (+ fitted form), dollars and break-even monthly volume
    plots/*.png       metric vs N, dollars vs N, metric per dollar vs N
    report.md         tables, plots, the recommendation and what was not measured
    report.html       the same, self-contained (plots embedded as base64)

Several seeds: per example, scores are averaged over seeds first; the curve and every interval are
then computed over examples (so the interval is over examples, seeds only smooth the scores).
How every figure is computed: docs/report.md, transitions.py and costs.py.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from switchpoint.core import manifests, stats
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.metric_names import KNOWN_METRICS
from switchpoint.core.store import LocalStore, open_store
from switchpoint.report import costs as cost_model
from switchpoint.report.transitions import Axis, analyse
from tqdm import tqdm

ARM_COLS = ["kind", "model", "variant", "n", "seed"]
GROUP_COLS = ["kind", "model", "variant", "n"]  # an arm with its seeds averaged
PROMPT_KINDS = ("fewshot-api", "fewshot-local")


@dataclass
class ReportSettings:
    reference: str = "best"  # prompting arm's level: its best shot count, or a fixed shot count ("8")
    amortize_months: float = 1.0  # months the training cost is spread over in the break-even volume
    resamples: int | None = None  # bootstrap resamples; default: the sweep's score.bootstrap, else 10,000


# --- reading scores ----------------------------------------------------------------------------
@dataclass
class Scores:
    task: str
    metrics: list[str]
    primary: str
    long: pd.DataFrame  # kind, model, variant, n, seed, id, error, metric, score (0..1)
    summary: pd.DataFrame | None  # the score job's summary.csv (percent), when present


def load_scores(run_dir: Path) -> Scores:
    """``scores/scores.jsonl`` as a long table, the task's metrics and the score job's summary."""
    path = run_dir / "scores" / "scores.jsonl"
    if not path.exists():
        raise JobError(f"{path}: missing; run `switchpoint score` on this run first (the report needs scores)")
    task_json = run_dir / "data" / "task.json"
    task = json.loads(task_json.read_text(encoding="utf-8")) if task_json.exists() else {}
    rows: list[dict] = []
    metric_fields: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                arm = record["arm"]
                row = {"kind": arm["kind"], "model": arm["model"], "variant": arm.get("variant") or "",
                       "n": int(arm["n"]), "seed": int(arm["seed"]), "id": str(record["id"]),
                       "error": bool(record.get("error"))}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise JobError(f"{path}:{lineno}: not a score record with id and arm {{kind, model, n, seed}} ({err})") from err
            for key, value in record.items():
                if key in KNOWN_METRICS:
                    metric_fields.add(key)
                    row[key] = 0.0 if value is None else float(value)
            rows.append(row)
    if not rows:
        raise JobError(f"{path}: holds no score records; re-run `switchpoint score`")
    metrics = [m for m in task.get("metrics", []) if m in metric_fields] or sorted(metric_fields)
    if not metrics:
        raise JobError(f"{path}: records carry no metric field (expected some of {', '.join(sorted(KNOWN_METRICS))})")
    wide = pd.DataFrame(rows)
    long = wide.melt(id_vars=ARM_COLS + ["id", "error"], value_vars=metrics, var_name="metric", value_name="score")
    long["score"] = long["score"].fillna(0.0)  # a record without a value is scored 0, as records in error are
    summary_path = run_dir / "scores" / "summary.csv"
    summary = None
    if summary_path.exists():
        summary = pd.read_csv(summary_path)
        summary["variant"] = summary["variant"].fillna("").astype(str).replace({"None": "", "null": "", "nan": ""})
    name = task.get("name") or (str(summary["task"].iloc[0]) if summary is not None and len(summary) else run_dir.name)
    primary = task.get("primary_metric") if task.get("primary_metric") in metrics else metrics[0]
    return Scores(name, metrics, primary, long, summary)


def per_seed_table(scores: Scores, resamples: int) -> pd.DataFrame:
    """One row per arm x metric: mean, interval (percent), count and errors; summary.csv where it has the row."""
    errors = scores.long[scores.long["metric"] == scores.metrics[0]].groupby(ARM_COLS)["error"].sum()
    known = {}
    if scores.summary is not None:
        for row in scores.summary.itertuples(index=False):
            known[(row.kind, row.model, row.variant, int(row.n), int(row.seed), row.metric)] = row
    out = []
    for key, group in scores.long.groupby(ARM_COLS + ["metric"], sort=True):
        if key in known:
            row = known[key]
            out.append(dict(zip(ARM_COLS + ["metric"], key), mean=float(row.mean), ci_low=float(row.ci_low),
                            ci_high=float(row.ci_high), count=int(row.count), errors=int(row.errors)))
            continue
        interval = stats.bootstrap_ci(group["score"].to_numpy(), resamples=resamples)
        out.append(dict(zip(ARM_COLS + ["metric"], key), mean=interval.mean, ci_low=interval.ci_low,
                        ci_high=interval.ci_high, count=interval.count, errors=int(errors[key[:-1]])))
    return pd.DataFrame(out)


def example_scores(scores: Scores) -> dict[tuple, pd.Series]:
    """Per (kind, model, variant, n, metric): each example's score averaged over seeds (0..1)."""
    averaged = scores.long.groupby(GROUP_COLS + ["metric", "id"], sort=True)["score"].mean()
    return {key: series.droplevel(list(range(len(GROUP_COLS) + 1)))
            for key, series in averaged.groupby(level=list(range(len(GROUP_COLS) + 1)))}


def curve_table(per_seed: pd.DataFrame, examples: dict[tuple, pd.Series], resamples: int) -> pd.DataFrame:
    """Seed-averaged mean and interval per (kind, model, variant, n, metric)."""
    out = []
    for key, group in per_seed.groupby(GROUP_COLS + ["metric"], sort=True):
        row = dict(zip(GROUP_COLS + ["metric"], key), seeds=len(group), errors=int(group["errors"].sum()))
        if len(group) == 1:
            first = group.iloc[0]
            row.update(mean=first["mean"], ci_low=first["ci_low"], ci_high=first["ci_high"], count=int(first["count"]))
        else:
            interval = stats.bootstrap_ci(examples[key].to_numpy(), resamples=resamples)
            row.update(mean=interval.mean, ci_low=interval.ci_low, ci_high=interval.ci_high, count=interval.count)
        out.append(row)
    return pd.DataFrame(out)


# --- dollars per arm -------------------------------------------------------------------------
def _mean(values) -> float | None:
    got = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(got) / len(got) if got else None


def arm_dollars(run_costs: cost_model.RunCosts, kind: str, model: str, variant: str, n: int, seed: int) -> dict:
    """Every cost figure of one arm (empty fields where unmeasured)."""
    key = (kind, model, n, seed, variant or None)
    figures: dict[str, Any] = {}
    if kind == "finetune":
        if n == 0:  # the base model: nothing trained
            figures.update(train_usd=0.0, train_usd_spot=0.0, train_wall_s=0.0, gpu_seconds=0.0)
        else:
            figures.update(run_costs.train.get((model, seed, n), {}))
    figures.update(run_costs.local.get(key, {}))
    figures.update(run_costs.api.get(key, {}))
    if kind == "fewshot-api":
        figures["eval_usd"] = figures.get("api_usd")
        figures["per_1k_usd"] = figures.get("api_per_1k")
    else:
        infer = figures.get("infer_usd")
        train = figures.get("train_usd", 0.0 if kind == "fewshot-local" else None)
        figures["eval_usd"] = None if infer is None or train is None else train + infer
        figures["per_1k_usd"] = figures.get("infer_per_1k")
    return figures


def group_dollars(run_costs: cost_model.RunCosts, seeds: dict[tuple, list[int]], kind: str, model: str,
                  variant: str, n: int) -> dict:
    """Cost figures averaged over the arm's seeds."""
    rows = [arm_dollars(run_costs, kind, model, variant, n, s) for s in seeds.get((kind, model, variant, n), [])]
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: _mean([r.get(k) for r in rows]) for k in keys}


RESULT_COST_COLS = ["train_usd", "train_usd_spot", "infer_usd", "infer_usd_spot", "api_usd", "api_usd_batch",
                    "api_usd_cached", "eval_usd", "per_1k_usd", "input_tokens", "output_tokens", "gpu_seconds",
                    "train_wall_s", "infer_wall_s"]


def results_table(task: str, per_seed: pd.DataFrame, run_costs: cost_model.RunCosts) -> pd.DataFrame:
    rows = []
    for row in per_seed.itertuples(index=False):
        dollars = arm_dollars(run_costs, row.kind, row.model, row.variant, int(row.n), int(row.seed))
        rows.append({"task": task, "kind": row.kind, "model": row.model, "variant": row.variant, "n": int(row.n),
                     "seed": int(row.seed), "metric": row.metric, "mean": row.mean, "ci_low": row.ci_low,
                     "ci_high": row.ci_high, "count": int(row.count), "errors": int(row.errors),
                     **{c: dollars.get(c) for c in RESULT_COST_COLS}})
    return pd.DataFrame(rows)


# --- transitions -----------------------------------------------------------------------------
@dataclass
class Analysis:
    task: str
    metrics: list[str]
    primary: str
    prompt_kind: str | None
    curve: pd.DataFrame
    per_seed: pd.DataFrame
    results: pd.DataFrame
    transitions: pd.DataFrame
    references: pd.DataFrame  # per prompting arm x metric: chosen shots and level
    run_costs: cost_model.RunCosts
    seeds: dict[tuple, list[int]]
    sweep: dict | None
    notes: list[str] = field(default_factory=list)  # what was not measured / assumptions made here
    amortize_months: float = 1.0


def choose_reference(curve: pd.DataFrame, kind: str, model: str, variant: str, metric: str,
                     reference: str, notes: list[str]) -> pd.Series | None:
    """The prompting arm's row that sets the level: its best shot count (ties: fewer shots) or a fixed one."""
    rows = curve[(curve.kind == kind) & (curve.model == model) & (curve.variant == variant) & (curve.metric == metric)]
    if rows.empty:
        return None
    if reference != "best":
        fixed = rows[rows.n == int(reference)]
        if not fixed.empty:
            return fixed.iloc[0]
        notes.append(f"{kind} {model}{_vlabel(variant)} has no {reference}-shot arm for {metric}; its best shot count is used")
    best = rows["mean"].max()
    return rows[rows["mean"] >= best - 1e-9].sort_values("n").iloc[0]


def _vlabel(variant: str) -> str:
    return f" [{variant}]" if variant else ""


def analyse_run(run_dir: Path, settings: ReportSettings, sweep: dict | None, prices: dict, api_models: dict) -> Analysis:
    """Everything the report shows, from a run folder."""
    resamples = settings.resamples or (sweep["score"]["bootstrap"] if sweep else stats.DEFAULT_RESAMPLES)
    scores = load_scores(run_dir)
    per_seed = per_seed_table(scores, resamples)
    examples = example_scores(scores)
    curve = curve_table(per_seed, examples, resamples)
    run_costs = cost_model.collect(run_dir, prices, api_models, sweep)
    results = results_table(scores.task, per_seed, run_costs)
    seeds = {k: sorted(g["seed"].unique().tolist()) for k, g in per_seed.groupby(GROUP_COLS)}
    notes: list[str] = []
    kinds = set(curve["kind"])
    prompt_kind = next((k for k in PROMPT_KINDS if k in kinds), None)
    if prompt_kind == "fewshot-local":
        notes.append("no fewshot-api arm was scored (offline, or no credentials): the prompting side of every "
                     "transition is the open models' own few-shot arm (fewshot-local)")
    elif prompt_kind is None:
        notes.append("no prompting arm (fewshot-api or fewshot-local) was scored: there is no level to cross, "
                     "so the transition table is empty")
    if "finetune" not in kinds:
        notes.append("no fine-tuned arm was scored: the transition table is empty")
    max_seeds = max(len(v) for v in seeds.values())
    for key, got in sorted(seeds.items()):
        if len(got) < max_seeds:
            notes.append(f"{key[0]} {key[1]}{_vlabel(key[2])} n={key[3]}: only seed(s) {got} scored "
                         f"(other arms have {max_seeds}); its mean averages fewer seeds")

    ft_models = sorted({(r.model, r.variant) for r in curve.itertuples() if r.kind == "finetune"})
    prompt_arms = sorted({(r.model, r.variant) for r in curve.itertuples() if r.kind == prompt_kind})
    references, rows = [], []
    jobs = [(m, pm, om) for m in scores.metrics for pm in prompt_arms for om in ft_models]
    for metric, (p_model, p_variant), (o_model, o_variant) in tqdm(jobs, desc="report: transitions", disable=not jobs):
        ref = choose_reference(curve, prompt_kind, p_model, p_variant, metric, settings.reference, notes)
        ref_examples = examples[(prompt_kind, p_model, p_variant, int(ref.n), metric)]
        ft = curve[(curve.kind == "finetune") & (curve.model == o_model) & (curve.variant == o_variant)
                   & (curve.metric == metric)].sort_values("n")
        sizes, means, lows = [int(n) for n in ft.n], ft["mean"].tolist(), []
        for n in sizes:
            diff = stats.paired_difference(examples[("finetune", o_model, o_variant, n, metric)].to_dict(),
                                           ref_examples.to_dict(), resamples=resamples)
            lows.append(diff.ci_low)
            if diff.only_a or diff.only_b:
                notes.append(f"finetune {o_model} n={n} vs {prompt_kind} {p_model}{_vlabel(p_variant)} ({metric}): "
                             f"{diff.only_a}+{diff.only_b} example(s) scored by only one side, left out of the paired interval")
        result = analyse(sizes, means, float(ref["mean"]), lows)
        rows.append(_transition_row(scores.task, metric, o_model, o_variant, prompt_kind, p_model, p_variant, ref,
                                    result, run_costs, seeds, settings.amortize_months))
        references.append({"metric": metric, "kind": prompt_kind, "model": p_model, "variant": p_variant,
                           "shots": int(ref.n), "mean": ref["mean"], "ci_low": ref["ci_low"], "ci_high": ref["ci_high"]})
    transitions = pd.DataFrame(rows, columns=TRANSITION_COLS)
    refs = pd.DataFrame(references).drop_duplicates(subset=["metric", "kind", "model", "variant"]) if references else pd.DataFrame()
    return Analysis(scores.task, scores.metrics, scores.primary, prompt_kind, curve, per_seed, results, transitions,
                    refs, run_costs, seeds, sweep, notes=_unique(notes), amortize_months=settings.amortize_months)


TRANSITION_COLS = [
    "task", "metric", "model", "model_variant", "prompt_kind", "prompt_model", "prompt_variant", "prompt_shots",
    "prompt_mean", "prompt_ci_low", "prompt_ci_high", "status", "n_cross", "n_cross_measured", "n_cross_confident",
    "n_cross_extrapolated", "fit_form", "fit_params", "fit_points", "ft_train_usd", "ft_train_usd_spot",
    "ft_eval_usd", "prompt_eval_usd", "prompt_eval_usd_batch", "prompt_eval_usd_cached", "ft_per_1k_usd",
    "prompt_per_1k_usd", "prompt_per_1k_usd_batch", "prompt_per_1k_usd_cached", "breakeven_monthly_requests",
    "breakeven_monthly_requests_batch", "breakeven_monthly_requests_cached", "breakeven_monthly_requests_endpoint",
    "note",
]


def _transition_row(task, metric, o_model, o_variant, p_kind, p_model, p_variant, ref, result, run_costs, seeds,
                    months) -> dict:
    row = {"task": task, "metric": metric, "model": o_model, "model_variant": o_variant, "prompt_kind": p_kind,
           "prompt_model": p_model, "prompt_variant": p_variant, "prompt_shots": int(ref.n),
           "prompt_mean": ref["mean"], "prompt_ci_low": ref["ci_low"], "prompt_ci_high": ref["ci_high"],
           "status": result.status, "n_cross": result.n_cross, "n_cross_measured": result.n_cross_measured,
           "n_cross_confident": result.n_cross_confident, "n_cross_extrapolated": result.n_cross_extrapolated,
           "fit_form": result.fit.form if result.fit and result.n_cross_extrapolated else None,
           "fit_params": result.fit.params if result.fit and result.n_cross_extrapolated else None,
           "fit_points": ",".join(map(str, result.fit.points)) if result.fit and result.n_cross_extrapolated else None,
           "note": result.note}
    prompt = group_dollars(run_costs, seeds, p_kind, p_model, p_variant, int(ref.n))
    if p_kind == "fewshot-api":
        row.update(prompt_eval_usd=prompt.get("api_usd"), prompt_eval_usd_batch=prompt.get("api_usd_batch"),
                   prompt_eval_usd_cached=prompt.get("api_usd_cached"), prompt_per_1k_usd=prompt.get("api_per_1k"),
                   prompt_per_1k_usd_batch=prompt.get("api_per_1k_batch"),
                   prompt_per_1k_usd_cached=prompt.get("api_per_1k_cached"))
    else:
        row.update(prompt_eval_usd=prompt.get("infer_usd"), prompt_per_1k_usd=prompt.get("infer_per_1k"))
    n_at = result.n_cross_measured
    if n_at is not None:
        ft = group_dollars(run_costs, seeds, "finetune", o_model, o_variant, n_at)
        row.update(ft_train_usd=ft.get("train_usd"), ft_train_usd_spot=ft.get("train_usd_spot"),
                   ft_eval_usd=ft.get("eval_usd"), ft_per_1k_usd=ft.get("infer_per_1k"))
        per_req = None if ft.get("infer_per_1k") is None else ft["infer_per_1k"] / 1000
        for suffix in ("", "_batch", "_cached"):
            other = row.get(f"prompt_per_1k_usd{suffix}")
            row[f"breakeven_monthly_requests{suffix}"] = cost_model.break_even_requests(
                ft.get("train_usd"), per_req, None if other is None else other / 1000, months)
        other = row.get("prompt_per_1k_usd")
        row["breakeven_monthly_requests_endpoint"] = cost_model.break_even_endpoint(
            ft.get("train_usd"), run_costs.infer_hourly.get(o_model), None if other is None else other / 1000, months)
    return row


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- plots -----------------------------------------------------------------------------------
def _plot_axis(ax, axis: Axis, sizes: list[int]) -> None:
    ax.set_xticks([axis.x(n) for n in sizes])
    ax.set_xticklabels([str(n) for n in sizes], fontsize=8)
    ax.set_xlabel("N (training examples for fine-tuning, shots for prompting; log2 axis, N=0 placed one step left)")
    ax.grid(True, alpha=0.3)


def _series(curve: pd.DataFrame, kind: str, model: str, variant: str, metric: str) -> pd.DataFrame:
    return curve[(curve.kind == kind) & (curve.model == model) & (curve.variant == variant)
                 & (curve.metric == metric)].sort_values("n")


def make_plots(an: Analysis, out_dir: Path) -> list[tuple[str, str]]:
    """Write the PNGs; returns (file name, caption) in report order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    curve = an.curve
    sizes = sorted(int(n) for n in curve.n.unique())
    axis = Axis.for_sizes(sizes)
    arms = sorted({(r.kind, r.model, r.variant) for r in curve.itertuples()})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {arm: colors[i % len(colors)] for i, arm in enumerate(arms)}
    made = []
    metrics = [an.primary] + [m for m in an.metrics if m != an.primary]

    def label(kind, model, variant):
        return f"{'fine-tuned' if kind == 'finetune' else kind} {model}{_vlabel(variant)}"

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(plots_dir / name, dpi=110, metadata={"Software": None})
        plt.close(fig)
        made.append((name, caption))

    for metric in metrics:  # figure 1: metric vs N with interval bands and the prompting arms
        fig, ax = plt.subplots(figsize=(8, 5))
        for kind, model, variant in arms:
            s = _series(curve, kind, model, variant, metric)
            if s.empty:
                continue
            xs = [axis.x(n) for n in s.n]
            style = "-" if kind == "finetune" else "--"
            ax.plot(xs, s["mean"], style, marker="o", color=color[(kind, model, variant)], label=label(kind, model, variant))
            ax.fill_between(xs, s["ci_low"], s["ci_high"], color=color[(kind, model, variant)], alpha=0.15)
        for ref in (an.references[an.references.metric == metric].itertuples() if not an.references.empty else []):
            ax.axhline(ref.mean, linestyle=":", color=color[(ref.kind, ref.model, ref.variant)],
                       label=f"{ref.model}{_vlabel(ref.variant)} level ({ref.shots} shots): {ref.mean:.1f}")
        for t in an.transitions[an.transitions.metric == metric].itertuples():
            if t.n_cross is not None and not pd.isna(t.n_cross):
                s = _series(curve, "finetune", t.model, t.model_variant, metric)
                ax.plot([_marker_x(axis, s, t.prompt_mean)], [t.prompt_mean], marker="*", markersize=14,
                        color=color[("finetune", t.model, t.model_variant)], linestyle="none")
        _plot_axis(ax, axis, sizes)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{an.task}: {metric} vs N (bands: 95% bootstrap intervals; *: n_cross)")
        ax.legend(fontsize=7, loc="best")
        save(fig, f"{_safe(metric)}_vs_n.png", f"{metric} vs N: fine-tuned (solid) and prompting arms (dashed, vs shots); "
             "dotted lines are the prompting levels the transitions use; stars mark n_cross.")

    # figure 2: dollars per evaluation run vs N
    fig, ax = plt.subplots(figsize=(8, 5))
    plotted = False
    for kind, model, variant in arms:
        s = _series(curve, kind, model, variant, an.primary)
        points = [(n, group_dollars(an.run_costs, an.seeds, kind, model, variant, int(n))) for n in s.n]
        for key, style, suffix in (("eval_usd", "-" if kind == "finetune" else "--", ""), ("api_usd_batch", ":", " (batch)")):
            got = [(axis.x(n), d.get(key)) for n, d in points if d.get(key) is not None and d.get(key) > 0]
            if got:
                ax.plot(*zip(*got), style, marker="o", color=color[(kind, model, variant)], label=label(kind, model, variant) + suffix)
                plotted = True
    if plotted:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no arm has a positive dollar figure\n(unpriced or 'local' instances are priced at $0)",
                ha="center", va="center", transform=ax.transAxes)
    _plot_axis(ax, axis, sizes)
    ax.set_ylabel("USD per evaluation run (on-demand)")
    ax.set_title(f"{an.task}: cost vs N")
    if plotted:
        ax.legend(fontsize=7, loc="best")
    save(fig, "cost_vs_n.png", "Dollars per evaluation run vs N: fine-tuned = training on N examples + inference on the "
         "eval set; API = tokens x on-demand price (dotted: batch price).")

    for metric in metrics:  # figure 3: metric points per dollar vs N
        fig, ax = plt.subplots(figsize=(8, 5))
        plotted = False
        for kind, model, variant in arms:
            s = _series(curve, kind, model, variant, metric)
            got = []
            for row in s.itertuples():
                d = group_dollars(an.run_costs, an.seeds, kind, model, variant, int(row.n)).get("eval_usd")
                if d is not None and d > 0:
                    got.append((axis.x(row.n), row.mean / d))
            if got:
                ax.plot(*zip(*got), "-" if kind == "finetune" else "--", marker="o", color=color[(kind, model, variant)],
                        label=label(kind, model, variant))
                plotted = True
        if plotted:
            ax.set_yscale("log")
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no arm has a positive dollar figure: metric per dollar undefined",
                    ha="center", va="center", transform=ax.transAxes)
        _plot_axis(ax, axis, sizes)
        ax.set_ylabel(f"{metric} points per USD (per evaluation run)")
        ax.set_title(f"{an.task}: {metric} per dollar vs N")
        save(fig, f"{_safe(metric)}_per_usd_vs_n.png", f"{metric} points per dollar of one evaluation run vs N "
             "(arms with no or zero dollar figure are left out).")
    return made


def _marker_x(axis: Axis, s: pd.DataFrame, level: float) -> float:
    """Where the drawn (straight) segment of a curve meets ``level``, in plot coordinates."""
    ns, ms = [int(n) for n in s.n], s["mean"].tolist()
    for i, m in enumerate(ms):
        if m >= level - 1e-9:
            if i == 0 or m <= level + 1e-9:
                return axis.x(ns[i])
            t = (level - ms[i - 1]) / (m - ms[i - 1])
            return axis.x(ns[i - 1]) + t * (axis.x(ns[i]) - axis.x(ns[i - 1]))
    return axis.x(ns[-1])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# --- the document ----------------------------------------------------------------------------
Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"ul"|"table"|"img", content)


def fmt_n(value, *, whole: bool = False) -> str:
    """An N for the page; ``whole`` for rough figures (extrapolations), which read as whole numbers."""
    if value is None or (isinstance(value, float) and (math.isnan(value))):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "never"
    value = float(value)
    return f"{value:,.0f}" if whole or value >= 100 or value.is_integer() else f"{value:.1f}"


def fmt_usd(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:#.3g}"


def fmt_requests(value) -> str:
    """A request count: whole requests, rounded up; 'never' for infinity."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return "never" if math.isinf(value) else f"{math.ceil(value):,}"


def fmt_pct(mean, low=None, high=None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def recommendation(an: Analysis) -> list[Block]:
    """The answer in the study's form, written from the numbers of the primary metric."""
    blocks: list[Block] = []
    metric, t = an.primary, an.transitions[an.transitions.metric == an.primary]
    who = "the API" if an.prompt_kind == "fewshot-api" else "prompting (fewshot-local: no API arm ran)"
    lines = []
    if an.references.empty:
        blocks.append(("p", f"No transition could be computed: {an.notes[0] if an.notes else 'no arms to compare'}."))
        return blocks
    for ref in an.references[an.references.metric == metric].itertuples():
        zero = an.curve[(an.curve.kind == ref.kind) & (an.curve.model == ref.model) & (an.curve.variant == ref.variant)
                        & (an.curve.metric == metric) & (an.curve.n == 0)]
        base = f" (0 shots: {zero['mean'].iloc[0]:.1f})" if not zero.empty and ref.shots != 0 else ""
        lines.append(f"{ref.model}{_vlabel(ref.variant)} reaches {ref.mean:.1f} {metric} "
                     f"(95% CI {ref.ci_low:.1f}–{ref.ci_high:.1f}) with {ref.shots} shots{base}.")
    blocks.append(("p", f"How many shots {who} needs ({metric}, the task's primary metric): " + " ".join(lines)))
    items = []
    for r in t.itertuples():
        prompt = f"{r.prompt_model}{_vlabel(r.prompt_variant)} with {r.prompt_shots} shots"
        model = f"{r.model}{_vlabel(r.model_variant)}"
        if r.status in ("confident", "mean-only"):
            conf = (f"with 95% confidence from N={fmt_n(r.n_cross_confident)}" if r.status == "confident"
                    else "not with 95% confidence at any measured N")
            how = ("measured" if r.n_cross == r.n_cross_measured
                   else f"interpolated; first measured at N={r.n_cross_measured}")
            text = (f"Fine-tuned {model} matches {prompt} at N ≈ {fmt_n(r.n_cross)} examples ({how}; {conf}).")
            text += " " + _cost_sentence(r, an)
        elif r.status == "extrapolated":
            text = (f"Fine-tuned {model} does not match {prompt} within the sweep (up to N={max(an.curve.n)}); a "
                    f"straight line in log2 N ({r.fit_params}, fitted on N={r.fit_points}) reaches it at "
                    f"N ≈ {fmt_n(r.n_cross_extrapolated, whole=True)} — EXTRAPOLATED, not measured.")
        else:
            text = f"Fine-tuned {model} does not match {prompt} within the sweep: {r.note}."
        items.append(text)
    if items:
        blocks.append(("ul", items))
    blocks.append(("p", _verdict(an, t)))
    return blocks


def _cost_sentence(r, an: Analysis) -> str:
    months = "" if an.amortize_months == 1 else f" (training spread over {fmt_n(an.amortize_months)} months)"
    parts = [f"At N={r.n_cross_measured}, fine-tuning costs {fmt_usd(r.ft_train_usd)} once"
             + (f" ({fmt_usd(r.ft_train_usd_spot)} on spot)" if r.ft_train_usd_spot is not None and not pd.isna(r.ft_train_usd_spot) else "")
             + f" and {fmt_usd(r.ft_per_1k_usd)} per 1,000 requests on its instance, against "
             + f"{fmt_usd(r.prompt_per_1k_usd)} per 1,000 requests for {r.prompt_model}"]
    if r.prompt_kind == "fewshot-api":
        extra = [f"{fmt_usd(v)} {k}" for k, v in (("batch", r.prompt_per_1k_usd_batch), ("with prompt caching", r.prompt_per_1k_usd_cached))
                 if v is not None and not pd.isna(v)]
        if extra:
            parts[0] += " on-demand (" + ", ".join(extra) + ")"
    be = r.breakeven_monthly_requests
    if all(v == 0 for v in (r.ft_train_usd, r.ft_per_1k_usd, r.prompt_per_1k_usd)):
        parts.append("every figure is $0 (instances priced at $0, such as 'local'), so cost does not separate them")
    elif be is None or pd.isna(be):
        parts.append("the break-even volume is unknown (a dollar figure is missing)")
    elif math.isinf(be):
        parts.append("per request the fine-tuned model is not cheaper, so it never pays back its training")
    else:
        parts.append(f"it pays back its training above {fmt_requests(be)} requests a month{months}")
        endpoint = r.breakeven_monthly_requests_endpoint
        if endpoint is not None and not pd.isna(endpoint):
            parts.append(f"with an always-on instance (730 h a month) above {fmt_requests(endpoint)} requests a month")
    return "; ".join(parts) + "."


def _verdict(an: Analysis, t: pd.DataFrame) -> str:
    reached = t[t.status.isin(["confident", "mean-only"])]
    if reached.empty:
        ext = t[t.status == "extrapolated"]
        tail = ""
        if not ext.empty:
            best = ext.sort_values("n_cross_extrapolated").iloc[0]
            tail = (f" The nearest extrapolated match is {best.model} at N ≈ {fmt_n(best.n_cross_extrapolated, whole=True)} "
                    "(extrapolated; measure it before relying on it).")
        return "Recommendation: within this sweep, no fine-tuned model matches the prompting arm; keep prompting." + tail
    order = reached.assign(_c=reached.n_cross_confident.fillna(np.inf)).sort_values(["_c", "n_cross"])
    best = order.iloc[0]
    target = f"{best.prompt_model}{_vlabel(best.prompt_variant)} ({best.prompt_shots} shots) on {an.primary}"
    if best.n_cross_measured == 0:
        text = f"Recommendation: the base model {best.model}{_vlabel(best.model_variant)} (N=0, not fine-tuned) already matches {target}"
    else:
        text = (f"Recommendation: fine-tune {best.model}{_vlabel(best.model_variant)} on about {fmt_n(best.n_cross_measured)} "
                f"labelled examples to match {target}")
    text += "." if best.status == "confident" else " — reached in the mean only, so confirm with more evaluation examples."
    be = best.breakeven_monthly_requests
    if be is not None and not pd.isna(be):
        text += (" The fine-tuned model is never cheaper per request; prefer prompting on cost." if math.isinf(be) else
                 " On these prices it costs no more at any volume." if be == 0 else
                 f" Below about {fmt_requests(be)} requests a month prompting is cheaper; above it, the fine-tuned model"
                 " (run as batch jobs on the measured instance throughput).")
    return text


def not_measured(an: Analysis) -> list[str]:
    items = list(an.notes) + list(an.run_costs.notes)
    for s in an.run_costs.skipped:
        items.append(f"skipped arm {s['arm']}: {s['reason']} ({s['source']})")
    errs = an.per_seed[(an.per_seed.metric == an.metrics[0]) & (an.per_seed.errors > 0)]
    for r in errs.itertuples():
        items.append(f"{r.kind} {r.model}{_vlabel(r.variant)} n={r.n} seed={r.seed}: {r.errors} of {r.count} records "
                     "in error (scored 0)")
    for r in an.transitions[an.transitions.status == "extrapolated"].itertuples():
        items.append(f"n_cross_extrapolated for {r.model} vs {r.prompt_model} ({r.metric}) = {fmt_n(r.n_cross_extrapolated, whole=True)} "
                     f"is extrapolated from a fit ({r.fit_form}; {r.fit_params}), not measured")
    for r in an.transitions[an.transitions.status == "not-reached"].itertuples():
        items.append(f"{r.model} vs {r.prompt_model} ({r.metric}): not reached and not extrapolated — {r.note}")
    return _unique(items) or ["nothing: every arm of the sweep was run, scored and priced"]


def _md_table(df: pd.DataFrame) -> str:
    cells = df.astype(object).where(df.notna(), "").astype(str)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.values.tolist()]
    return "\n".join(lines)


def _display_tables(an: Analysis) -> list[Block]:
    t = an.transitions
    shown = pd.DataFrame({
        "metric": t.metric, "fine-tuned": t.model + t.model_variant.map(_vlabel),
        "prompting arm": t.prompt_model + t.prompt_variant.map(_vlabel) + " (" + t.prompt_shots.astype(str) + " shots)",
        "level": [fmt_pct(*v) for v in zip(t.prompt_mean, t.prompt_ci_low, t.prompt_ci_high)],
        "n_cross": t.n_cross.map(fmt_n), "n_cross_confident": t.n_cross_confident.map(fmt_n),
        "n_cross_extrapolated": [f"{fmt_n(v, whole=True)} (extrapolated)" if v is not None and not pd.isna(v) else "–"
                                 for v in t.n_cross_extrapolated],
        "status": t.status, "train $": t.ft_train_usd.map(fmt_usd), "ft $/1k req": t.ft_per_1k_usd.map(fmt_usd),
        "prompt $/1k req": t.prompt_per_1k_usd.map(fmt_usd), "break-even req/month": t.breakeven_monthly_requests.map(fmt_requests),
    }) if not t.empty else pd.DataFrame({"transitions": ["none (see What was not measured)"]})
    c = an.curve.sort_values(["metric", "kind", "model", "variant", "n"])
    dollars = [group_dollars(an.run_costs, an.seeds, r.kind, r.model, r.variant, int(r.n)) for r in c.itertuples()]
    curve = pd.DataFrame({
        "metric": c.metric, "arm": c.kind + " " + c.model + c.variant.map(_vlabel), "N": c.n, "seeds": c.seeds,
        "mean [95% CI]": [fmt_pct(*v) for v in zip(c["mean"], c.ci_low, c.ci_high)], "examples": c["count"],
        "errors": c.errors, "eval run $": [fmt_usd(d.get("eval_usd")) for d in dollars],
        "$/1k req": [fmt_usd(d.get("per_1k_usd")) for d in dollars],
    })
    return [("h2", "Transition points"), ("table", shown), ("h2", "Results (seeds averaged)"), ("table", curve)]


def build_document(an: Analysis, plots: list[tuple[str, str]], settings: ReportSettings) -> list[Block]:
    sweep = an.sweep["name"] if an.sweep else "(no sweep manifest given)"
    blocks: list[Block] = [
        ("h1", f"switchpoint report: {an.task}"),
        ("p", f"Sweep {sweep}; metrics {', '.join(an.metrics)} (primary: {an.primary}); generated "
              f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Means and intervals are in percent; intervals are "
              "95% percentile bootstraps over evaluation examples; differences are paired on the same example ids."),
        ("h2", "Answer"), *recommendation(an),
        ("h2", "What was not measured"), ("ul", not_measured(an)),
        *_display_tables(an),
        ("h2", "Plots"),
    ]
    for name, caption in plots:
        blocks.append(("img", (name, caption)))
    blocks += [("h2", "How the figures are computed"), ("ul", [
        "Prompting level: " + ("each prompting arm's best shot count (ties: fewer shots)" if settings.reference == "best"
                               else f"each prompting arm's {settings.reference}-shot result") + ".",
        "n_cross: first measured N whose seed-averaged mean reaches the level (ties count), interpolated on log2 N "
        "between the last size below and it (linearly in N between N=0 and the first positive size); first crossing "
        "on a non-monotonic curve.",
        "n_cross_confident: first measured N whose paired 95% bootstrap lower bound (fine-tuned minus prompting, same "
        "example ids, scores averaged over seeds per example) is ≥ 0.",
        "n_cross_extrapolated: only when the mean is never reached; least-squares line mean = a + b·log2 N on the last "
        "4 positive sizes, solved for the level. Marked extrapolated, never mixed with measured values.",
        "Dollars: SageMaker billable seconds (runs/*.json) where recorded, else measured wall seconds, × the instance's "
        "hourly price (prices.yaml); one job's dollars are shared among its adapters/arms by their wall seconds. API: "
        "tokens × on-demand price; batch = on-demand × (1 − batch discount); caching: the shot prefix (k-shot minus "
        "0-shot input tokens per request) written once, then read at the cache price by every later request; this "
        "assumes the cache stays warm (requests back to back) and the prefix is long enough to be cached, and applies "
        "to on-demand requests only. Per 1,000 requests: the measured tokens per request, scaled.",
        f"Break-even: requests per month above which training (spread over {fmt_n(settings.amortize_months)} month(s)) "
        "plus per-request inference on the measured instance throughput costs less than the prompting arm; the "
        "'endpoint' column instead keeps one instance on all month (730 h).",
    ])]
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}")
        elif kind == "h2":
            out.append(f"## {content}")
        elif kind == "p":
            out.append(content)
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in content))
        elif kind == "table":
            out.append(_md_table(content))
        elif kind == "img":
            name, caption = content
            out.append(f"![{caption}](plots/{name})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}"""


def render_html(blocks: list[Block], plots_dir: Path) -> str:
    """A self-contained page: the plots are embedded as base64 data URIs."""
    esc = html.escape
    body = []
    title = "switchpoint report"
    for kind, content in blocks:
        if kind == "h1":
            title = content
            body.append(f"<h1>{esc(content)}</h1>")
        elif kind == "h2":
            body.append(f"<h2>{esc(content)}</h2>")
        elif kind == "p":
            body.append(f"<p>{esc(content)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in content) + "</ul>")
        elif kind == "table":
            cells = content.astype(object).where(content.notna(), "")
            head = "".join(f"<th>{esc(str(c))}</th>" for c in content.columns)
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in cells.values.tolist())
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            name, caption = content
            data = base64.b64encode((plots_dir / name).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# --- the job ---------------------------------------------------------------------------------
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
    if settings.reference != "best" and not str(settings.reference).isdigit():
        raise JobError(f"--reference {settings.reference!r}: expected 'best' or a shot count such as 8")
    if settings.amortize_months <= 0:
        raise JobError(f"--amortize-months {settings.amortize_months}: must be positive")
    an = analyse_run(run_dir, settings, sweep, prices or manifests.load_prices(), api_models or manifests.load_api_models())
    out_dir.mkdir(parents=True, exist_ok=True)
    an.results.map(_csv_value).to_csv(out_dir / "results.csv", index=False)
    an.transitions.map(_csv_value).to_csv(out_dir / "transitions.csv", index=False)
    plots = make_plots(an, out_dir)
    blocks = build_document(an, plots, settings)
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, out_dir / "plots"), encoding="utf-8")
    return an


@click.command("report", context_settings={"show_default": True})
@click.option("--run", "run", default=None,
              help="The run: a folder or store URI holding STORE/<sweep>/<task>/ (scores/, predictions/, train/, runs/). "
                   "Default: <ml-root>/processing/input/run.")
@click.option("--store", default=None, help="Store (folder or s3://bucket/prefix); with --sweep and --task reads "
              "STORE/<sweep>/<task>/ and publishes the report to its report/ (with _SUCCESS).")
@click.option("--task", default=None, help="Task name (with --store).")
@click.option("--sweep", default=None, help="Sweep name or YAML: instance types, spot and bootstrap resamples for the cost model.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write the report here. Default: <ml-root>/processing/output (STORE/<sweep>/<task>/report with --store).")
@click.option("--reference", default="best", help="Prompting level: 'best' (each prompting arm's best shot count) or a shot count.")
@click.option("--amortize-months", type=float, default=1.0, help="Months the training cost is spread over in the break-even volume.")
@click.option("--resamples", type=int, default=None, help="Bootstrap resamples (default: the sweep's score.bootstrap, else 10000).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(run, store, task, sweep, out_dir, reference, amortize_months, resamples, ml_root):
    """Transition points, dollars, plots and a recommendation for one task of a sweep.

    \b
    Inputs : the run folder STORE/<sweep>/<task>/: scores/scores.jsonl (required, from `switchpoint
             score`), and where present train/*/checkpoints/adapters/**/train_metrics.json, predictions/local/*/infer_metrics.json,
             predictions/bedrock/*/bedrock_metrics.json, runs/*.json; prices from manifests/prices.yaml
             and api_models.yaml; instance types from the sweep.
    Outputs: results.csv, transitions.csv, plots/*.png, report.md, report.html (self-contained).
    n_cross is the first N where the fine-tuned mean reaches the prompting arm's level (interpolated
    on log2 N), n_cross_confident the first N whose paired 95% lower bound is >= 0, and
    n_cross_extrapolated a marked fit when neither is reached. Without an API arm, the open models'
    few-shot arm is the prompting side. Everything not measured is listed in the report.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        sweep_def = manifests.load_sweep(sweep) if sweep else None
        settings = ReportSettings(reference=str(reference).strip().lower(), amortize_months=amortize_months,
                                  resamples=resamples)
        with tempfile.TemporaryDirectory(prefix="switchpoint-report-") as tmp:
            if store:
                if not (sweep_def and task):
                    raise JobError("--store needs --sweep and --task to find STORE/<sweep>/<task>/")
                run_store = open_store(store).child(sweep_def["name"], task)
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
        reached = an.transitions[an.transitions.status.isin(["confident", "mean-only"])]
        click.echo(f"report: {an.task}: {len(an.transitions)} transition(s), {len(reached)} reached in the sweep -> {where}")

    run_job(paths, body, name="report")


def _local_copy(run_store, tmp: Path) -> Path:
    """A local folder for the run: the store's own folder, or a download of an s3:// prefix."""
    if isinstance(run_store, LocalStore):
        return run_store.path
    got = run_store.download_dir(tmp)
    if not got:
        raise JobError(f"{run_store.uri}: empty or missing; is this STORE/<sweep>/<task>/?")
    return tmp
