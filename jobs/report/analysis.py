"""Everything the report shows, from a run folder: tables, transitions, decision tiers and dollars.

One headline per prompting arm (a *tier*: "Claude Instant level", "Claude 2.1 level"), each with the
fine-tuned model that reaches it soonest under the match rule (transitions.py), its N* interval, the
one-off cost and the break-even volumes; plus the prompting knee (the fewest shots whose mean lies
inside the best shot count's interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from switchpoint.core import layout
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import model_entry, resolved_sweep
from switchpoint.core.manifests import sweep_sizes
from switchpoint.core.pricing import HOURS_PER_MONTH
from switchpoint.report import costs as cost_model
from switchpoint.report.settings import EXTRAPOLATE_MAX, ReportSettings
from switchpoint.report.tables import (
    Draws,
    Scores,
    curve_table,
    load_scores,
    per_seed_table,
)
from switchpoint.report.transitions import TOL, Comparison, Outcome, analyse

PROMPT_KINDS = ("fewshot-api", "fewshot-local")


@dataclass
class Tier:
    """One prompting arm's level and the fine-tuned answer to it (primary metric)."""

    kind: str
    model: str
    variant: str
    shots: int
    level: tuple[float, float, float]  # mean, ci_low, ci_high
    knee: tuple[int, float] | None  # fewest shots within the best's interval, its mean
    best: dict | None  # the chosen transitions row, or None when no open model was compared
    cost: cost_model.MonthlyCost | None


@dataclass
class Analysis:
    task: dict
    metrics: list[str]
    primary: str
    prompt_kind: str | None
    curve: pd.DataFrame
    per_seed: pd.DataFrame
    results: pd.DataFrame
    transitions: pd.DataFrame
    tiers: list[Tier]
    run_costs: cost_model.RunCosts
    contents: layout.RunContents
    seeds: dict[tuple, list[int]]  # (kind, model, variant, n) -> seeds scored
    sweep: dict | None
    settings: ReportSettings
    tiny_models: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.task.get("name") or "task")


def vlabel(variant: str) -> str:
    return f" [{variant}]" if variant else ""


# --- what the run holds -------------------------------------------------------------------------
def run_contents(run_dir: Path, scores: Scores, sweep: dict | None) -> tuple[layout.RunContents, dict | None]:
    """Models, API models, sizes and seeds: the data folder's resolved sweep, else ``--sweep``; a field
    neither gives (a partial sweep, or none) comes from the arms in the scores."""
    resolved = resolved_sweep(Path(run_dir) / layout.DATA) or sweep or {}
    found = {
        "models": sorted({a[1] for a in scores.arms if a[0] != "fewshot-api"}),
        "api_models": sorted({a[1] for a in scores.arms if a[0] == "fewshot-api"}),
        "sizes": sorted({a[3] for a in scores.arms if a[0] == "finetune"}),
        "seeds": sorted({a[4] for a in scores.arms}),
    }
    if "sizes" in resolved:
        found["sizes"] = sweep_sizes(resolved, scores.name) if "data" in resolved else sorted(resolved["sizes"])
    for key in ("models", "api_models", "seeds"):
        if key in resolved:
            found[key] = list(resolved[key])
    contents = layout.RunContents(*(tuple(found[k]) for k in ("models", "api_models", "sizes", "seeds")))
    return contents, (resolved or None)


def tiny_models(run_dir: Path, contents: layout.RunContents) -> list[str]:
    """Open models of the run that are tiny random models built on the spot (a smoke run)."""
    found = []
    for name in contents.models:
        try:
            if model_entry(Path(run_dir) / layout.DATA, name).get("source") == "tiny":
                found.append(name)
        except JobError:
            continue  # a model the manifests do not know is not a packaged tiny model
    return found


# --- dollars per arm -----------------------------------------------------------------------------
def arm_dollars(run_costs: cost_model.RunCosts, kind: str, model: str, variant: str, n: int, seed: int) -> dict:
    """Every cost figure of one arm (absent where unmeasured)."""
    key = (kind, model, n, seed, variant or None)
    figures: dict[str, Any] = {}
    if kind == "finetune":
        figures.update({"train_usd": 0.0, "train_usd_spot": 0.0, "train_wall_s": 0.0, "gpu_seconds": 0.0} if n == 0
                       else run_costs.train.get((model, seed, n), {}))
    figures.update(run_costs.local.get(key, {}))
    figures.update(run_costs.api.get(key, {}))
    if kind == "fewshot-api":
        figures["eval_usd"], figures["per_1k_usd"] = figures.get("api_usd"), figures.get("api_per_1k")
    else:
        infer, train = figures.get("infer_usd"), figures.get("train_usd", 0.0 if kind == "fewshot-local" else None)
        figures["eval_usd"] = None if infer is None or train is None else train + infer
        figures["per_1k_usd"] = figures.get("infer_per_1k")
    return figures


def group_dollars(an_costs: cost_model.RunCosts, seeds: list[int], kind: str, model: str, variant: str, n: int) -> dict:
    """Cost figures averaged over the arm's seeds."""
    rows = [arm_dollars(an_costs, kind, model, variant, n, s) for s in seeds]
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for k in keys:
        got = [float(r[k]) for r in rows if r.get(k) is not None and not math.isnan(float(r[k]))]
        out[k] = sum(got) / len(got) if got else None
    return out


RESULT_COST_COLS = ["train_usd", "train_usd_spot", "infer_usd", "infer_usd_spot", "api_usd", "api_usd_batch",
                    "api_usd_cached", "eval_usd", "per_1k_usd", "input_tokens", "output_tokens", "gpu_seconds",
                    "train_wall_s", "infer_wall_s", "shared_by"]


def results_table(task: str, per_seed: pd.DataFrame, run_costs: cost_model.RunCosts) -> pd.DataFrame:
    rows = []
    for row in per_seed.itertuples(index=False):
        dollars = arm_dollars(run_costs, row.kind, row.model, row.variant, int(row.n), int(row.seed))
        rows.append({"task": task, "kind": row.kind, "model": row.model, "variant": row.variant, "n": int(row.n),
                     "seed": int(row.seed), "metric": row.metric, "mean": row.mean, "ci_low": row.ci_low,
                     "ci_high": row.ci_high, "count": int(row.count), "errors": int(row.errors),
                     **{c: dollars.get(c) for c in RESULT_COST_COLS}})
    return pd.DataFrame(rows)


# --- the prompting side ----------------------------------------------------------------------------
def arm_rows(curve: pd.DataFrame, kind: str, model: str, variant: str, metric: str) -> pd.DataFrame:
    return curve[(curve.kind == kind) & (curve.model == model) & (curve.variant == variant)
                 & (curve.metric == metric)].sort_values("n")


def choose_reference(rows: pd.DataFrame, reference: str) -> pd.Series:
    """The prompting arm's row that sets the level: its best shot count (ties: fewer shots) or a fixed one."""
    if reference != "best":
        return rows[rows.n == int(reference)].iloc[0]
    best = rows["mean"].max()
    return rows[rows["mean"] >= best - TOL].sort_values("n").iloc[0]


def knee(rows: pd.DataFrame) -> tuple[int, float] | None:
    """The fewest shots whose mean lies within the best shot count's 95% interval."""
    if rows.empty:
        return None
    best = rows.loc[rows["mean"].idxmax()]
    ok = rows[rows["mean"] >= best["ci_low"] - TOL].sort_values("n").iloc[0]
    return int(ok.n), float(ok["mean"])


def check_reference(curve: pd.DataFrame, prompt_kind: str | None, reference: str) -> None:
    """``--reference K`` must name a shot count every prompting arm ran (else the page would say K-shot wrongly)."""
    if reference == "best" or prompt_kind is None:
        return
    for (model, variant), rows in curve[curve.kind == prompt_kind].groupby(["model", "variant"]):
        if int(reference) not in set(rows.n):
            raise JobError(f"--reference {reference}: {prompt_kind} {model}{vlabel(variant)} has no {reference}-shot "
                           f"arm (it ran {', '.join(map(str, sorted(set(rows.n))))} shots); give one of those or 'best'")


# --- transitions ---------------------------------------------------------------------------------
def compare(scores: Scores, draws: Draws, metric: str, ft_model: str, ft_variant: str, ref_key: tuple) -> tuple[Comparison, list[str]]:
    """Fine-tuned minus the prompting reference at every comparable size, and notes on what was left out."""
    sizes = sorted(k[3] for k in scores.groups if k[:3] == ("finetune", ft_model, ft_variant))
    kept, points, sample, zero, same, notes = [], [], [], [], [], []
    for n in sizes:
        same_weights = n == 0 and ref_key[0] == "fewshot-local" and ref_key[1] == ft_model and ref_key[2] == ft_variant
        if same_weights and ref_key[3] == 0:
            notes.append(f"finetune {ft_model} N=0 is the prompting arm itself (same model, 0 shots): not compared")
            continue
        point, diff, common, only_a, only_b = draws.paired(metric, ("finetune", ft_model, ft_variant, n), ref_key)
        if common == 0:
            notes.append(f"finetune {ft_model} N={n} and {ref_key[1]} share no example ids: not compared")
            continue
        if only_a or only_b:
            notes.append(f"finetune {ft_model} N={n} vs {ref_key[1]} ({metric}): {only_a}+{only_b} example(s) scored by "
                         "only one side, left out of the paired interval")
        kept.append(n)
        points.append(point)
        sample.append(diff)
        zero.append(bool(np.all(np.abs(diff) <= TOL)) and abs(point) <= TOL)
        same.append(same_weights)
    matrix = np.column_stack(sample) if sample else np.empty((draws.res.resamples, 0))
    return Comparison(kept, points, matrix, zero, same), notes


TRANSITION_COLS = [
    "task", "metric", "model", "model_variant", "prompt_kind", "prompt_model", "prompt_variant", "prompt_shots",
    "prompt_mean", "prompt_ci_low", "prompt_ci_high", "margin", "status", "n_match", "n_superior", "n_star",
    "n_star_low", "n_star_high", "beyond_share", "n_extrapolated", "n_extrapolated_low", "n_extrapolated_high",
    "beyond_8x", "fit_params", "decision_n", "ft_train_usd", "label_usd", "one_off_usd", "ft_per_1k_usd",
    "prompt_per_1k_usd", "prompt_per_1k_usd_batch", "prompt_per_1k_usd_cached", "breakeven_monthly_requests",
    "breakeven_monthly_requests_batch", "breakeven_monthly_requests_cached", "breakeven_monthly_requests_endpoint",
    "note",
]


def decision_size(outcome: Outcome, sizes: list[int]) -> int | None:
    """The measured N a decision would train at: the match, else the first size at or past N*."""
    if outcome.n_match is not None:
        return outcome.n_match
    if outcome.n_star is not None:
        return next((n for n in sizes if n >= outcome.n_star - TOL), None)
    return None


def monthly_cost(an_costs: cost_model.RunCosts, seeds: dict, model: str, variant: str, n: int,
                 prompt_per_request: float | None, settings: ReportSettings) -> cost_model.MonthlyCost:
    ft = group_dollars(an_costs, seeds.get(("finetune", model, variant, n), []), "finetune", model, variant, n)
    train = ft.get("train_usd")
    one_off = None if train is None else train + settings.label_usd * n
    per_req = None if ft.get("infer_per_1k") is None else ft["infer_per_1k"] / 1000
    hourly = an_costs.infer_hourly.get(model)
    return cost_model.MonthlyCost(one_off, settings.amortize_months, per_req,
                                  None if hourly is None else hourly * HOURS_PER_MONTH, prompt_per_request)


def transition_row(an_costs, seeds, settings, base: dict, outcome: Outcome, sizes: list[int]) -> dict:
    row = {**base, "margin": settings.margin, "status": outcome.status, "n_match": outcome.n_match,
           "n_superior": outcome.n_superior, "n_star": outcome.n_star, "n_star_low": outcome.n_star_low,
           "n_star_high": outcome.n_star_high, "beyond_share": outcome.beyond_share,
           "n_extrapolated": outcome.n_extrapolated, "n_extrapolated_low": outcome.n_extrapolated_low,
           "n_extrapolated_high": outcome.n_extrapolated_high, "beyond_8x": outcome.beyond_limit,
           "fit_params": outcome.fit_params, "note": outcome.note}
    key = (base["prompt_kind"], base["prompt_model"], base["prompt_variant"], base["prompt_shots"])
    prompt = group_dollars(an_costs, seeds.get(key, []), *key)
    api = base["prompt_kind"] == "fewshot-api"
    for suffix in ("", "_batch", "_cached"):
        row[f"prompt_per_1k_usd{suffix}"] = prompt.get(f"api_per_1k{suffix}") if api else (
            prompt.get("infer_per_1k") if not suffix else None)
    n = decision_size(outcome, sizes)
    row["decision_n"] = n
    if n is None:
        return row
    for suffix in ("", "_batch", "_cached"):
        other = row[f"prompt_per_1k_usd{suffix}"]
        cost = monthly_cost(an_costs, seeds, base["model"], base["model_variant"], n,
                            None if other is None else other / 1000, settings)
        row[f"breakeven_monthly_requests{suffix}"] = cost.break_even_per_request()
        if not suffix:
            row["breakeven_monthly_requests_endpoint"] = cost.break_even_endpoint()
            row["one_off_usd"] = cost.one_off_usd
            row["ft_per_1k_usd"] = None if cost.ft_per_request is None else cost.ft_per_request * 1000
    ft = group_dollars(an_costs, seeds.get(("finetune", base["model"], base["model_variant"], n), []),
                       "finetune", base["model"], base["model_variant"], n)
    row.update(ft_train_usd=ft.get("train_usd"), label_usd=settings.label_usd * n)
    return row


def transitions_for(scores: Scores, draws: Draws, curve: pd.DataFrame, prompt_kind: str | None,
                    an_costs: cost_model.RunCosts, seeds: dict, settings: ReportSettings,
                    notes: list[str]) -> pd.DataFrame:
    """One row per metric x fine-tuned model x prompting arm."""
    ft_models = sorted({(k[1], k[2]) for k in scores.groups if k[0] == "finetune"})
    prompt_arms = sorted({(k[1], k[2]) for k in scores.groups if k[0] == prompt_kind})
    rows = []
    for metric in scores.metrics:
        for p_model, p_variant in prompt_arms:
            ref = choose_reference(arm_rows(curve, prompt_kind, p_model, p_variant, metric), settings.reference)
            ref_key = (prompt_kind, p_model, p_variant, int(ref.n))
            for o_model, o_variant in ft_models:
                cmp, more = compare(scores, draws, metric, o_model, o_variant, ref_key)
                notes.extend(more)
                outcome = analyse(cmp, settings.margin, EXTRAPOLATE_MAX)
                base = {"task": scores.name, "metric": metric, "model": o_model, "model_variant": o_variant,
                        "prompt_kind": prompt_kind, "prompt_model": p_model, "prompt_variant": p_variant,
                        "prompt_shots": int(ref.n), "prompt_mean": ref["mean"], "prompt_ci_low": ref["ci_low"],
                        "prompt_ci_high": ref["ci_high"]}
                rows.append(transition_row(an_costs, seeds, settings, base, outcome, cmp.sizes))
    return pd.DataFrame(rows, columns=TRANSITION_COLS)


def _rank(row: dict) -> tuple:
    """Soonest answer first: matched by n_match, then by the mean's N*, then extrapolated, then cheaper."""
    order = {"matched": 0, "mean-only": 1, "extrapolated": 2, "beyond-8x": 3, "not-reached": 4}
    first = row["n_match"] if row["status"] == "matched" else row["n_star"] if row["status"] == "mean-only" \
        else row["n_extrapolated"]
    one_off = row.get("one_off_usd")
    return (order[row["status"]], _num(first), _num(row.get("n_star")), _num(one_off))


def _num(value) -> float:
    return math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def decision_tiers(curve: pd.DataFrame, transitions: pd.DataFrame, prompt_kind: str | None, metric: str,
                   an_costs: cost_model.RunCosts, seeds: dict, settings: ReportSettings) -> list[Tier]:
    """One tier per prompting arm (lowest level first), each with the soonest fine-tuned answer."""
    tiers = []
    prompt_arms = sorted({(r.model, r.variant) for r in curve.itertuples() if r.kind == prompt_kind})
    for model, variant in prompt_arms:
        rows = arm_rows(curve, prompt_kind, model, variant, metric)
        ref = choose_reference(rows, settings.reference)
        mine = transitions[(transitions.metric == metric) & (transitions.prompt_model == model)
                           & (transitions.prompt_variant == variant)].to_dict("records")
        best = min(mine, key=_rank) if mine else None
        cost = None
        if best is not None and best["decision_n"] is not None and not pd.isna(best["decision_n"]):
            per_1k = best["prompt_per_1k_usd"]
            cost = monthly_cost(an_costs, seeds, best["model"], best["model_variant"], int(best["decision_n"]),
                                None if per_1k is None or pd.isna(per_1k) else per_1k / 1000, settings)
        tiers.append(Tier(prompt_kind, model, variant, int(ref.n), (ref["mean"], ref["ci_low"], ref["ci_high"]),
                          knee(rows), best, cost))
    return sorted(tiers, key=lambda t: (t.level[0], t.model))


def _seed_notes(curve: pd.DataFrame, metric: str) -> list[str]:
    notes = []
    rows = curve[curve.metric == metric]
    ft = rows[(rows.kind == "finetune") & (rows.n > 0)]
    if not ft.empty and int(ft.seeds.max()) == 1:
        notes.append("one seed per fine-tuned size: the intervals cover the evaluation examples but not which N "
                     "training examples were drawn, likely the largest source of noise at small N; run 3 or more seeds")
    top = int(rows.seeds.max()) if not rows.empty else 0
    for r in rows[rows.seeds < top].itertuples():
        notes.append(f"{r.kind} {r.model}{vlabel(r.variant)} n={r.n}: only seed(s) {r.seed_list} scored "
                     f"(other arms have {top})")
    return notes


def analyse_run(run_dir: Path, settings: ReportSettings, sweep: dict | None, prices: dict, api_models: dict) -> Analysis:
    """Everything the report shows, from a run folder."""
    scores = load_scores(run_dir)
    contents, sweep = run_contents(run_dir, scores, sweep)
    resamples = settings.resamples or (sweep or {}).get("score", {}).get("bootstrap") or 10_000
    draws = Draws(scores, int(resamples), settings.seed)
    per_seed, curve = per_seed_table(scores, draws), curve_table(scores, draws)
    run_costs = cost_model.collect(run_dir, contents, prices, api_models, sweep)
    seeds = {k: sorted(scores.arms[c][4] for c in cols) for k, cols in scores.groups.items()}
    kinds = set(curve["kind"])
    prompt_kind = next((k for k in PROMPT_KINDS if k in kinds), None)
    check_reference(curve, prompt_kind, settings.reference)
    notes = []
    if prompt_kind == "fewshot-local":
        notes.append("no fewshot-api arm was scored (offline, or no credentials): the prompting side of every "
                     "transition is the open models' own few-shot arm (fewshot-local)")
    elif prompt_kind is None:
        notes.append("no prompting arm (fewshot-api or fewshot-local) was scored: there is no level to cross")
    if "finetune" not in kinds:
        notes.append("no fine-tuned arm was scored: there is no curve to compare")
    notes += _seed_notes(curve, scores.primary)
    transitions = transitions_for(scores, draws, curve, prompt_kind, run_costs, seeds, settings, notes)
    tiers = decision_tiers(curve, transitions, prompt_kind, scores.primary, run_costs, seeds, settings)
    results = results_table(scores.name, per_seed, run_costs)
    return Analysis(scores.task, scores.metrics, scores.primary, prompt_kind, curve, per_seed, results, transitions,
                    tiers, run_costs, contents, seeds, sweep, settings, tiny_models(run_dir, contents),
                    list(dict.fromkeys(notes)))
