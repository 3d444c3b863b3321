"""The adaptive sweep's rounds: train -> infer -> score -> report -> decide, until each model has its answer.

Round 1 runs every model at the first sizes of the grid (``adaptive.first_round``). After each
round the report's own tables (results.csv: means and seconds per arm; transitions.csv: the match
rule's first persistent N and N*'s interval per prompting tier) are read back, ``adaptive.decide``
says what each model needs next, and the next round runs only that. Every round is an ordinary
sweep run: steps whose inputs and settings are unchanged are skipped, so a killed adaptive sweep
resumes like any other. ``runs/adaptive.json`` records every round, what was decided and why the
sweep stopped. ``plan`` prices the worst case: the whole grid.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Callable

from switchpoint.core import layout, manifests
from switchpoint.core.store import Store
from switchpoint.orchestration.adaptive import Decision, ModelRound, decide, first_round
from switchpoint.orchestration.steps import model_entries

RunRound = Callable[[dict], object]  # runs one round's sweep (the orchestration's run_sweep, bound)
ROUND_SIZES = "round_sizes"  # the in-memory sweep key that gives each model its sizes for a round
RECORD = "runs/adaptive.json"


def _rows(run: Store, name: str) -> list[dict[str, str]]:
    path = f"{layout.REPORT}/{name}"
    return list(csv.DictReader(io.StringIO(run.read_text(path)))) if run.exists(path) else []


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def read_round(run: Store, primary: str, models: list[str]) -> tuple[dict[str, ModelRound], dict[str, float]]:
    """What the last round measured, per model, and each prompting tier's level, from the report."""
    means: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in _rows(run, "results.csv"):
        if row["kind"] != "finetune" or row["model"] not in models or row["metric"] != primary:
            continue
        n = int(row["n"])
        means[row["model"]][n].append(float(row["mean"]))
        seconds[row["model"]][n] += sum(_number(row.get(k)) or 0.0 for k in ("train_wall_s", "infer_wall_s"))
    levels: dict[str, float] = {}
    matched: dict[str, dict[str, int | None]] = defaultdict(dict)  # model -> tier -> first persistent match
    for row in _rows(run, "transitions.csv"):
        if row["metric"] != primary or row["model"] not in models:
            continue
        tier = " ".join(filter(None, (row["prompt_model"], row.get("prompt_variant"))))
        levels[tier] = float(row["prompt_mean"])
        n_match = _number(row.get("n_match"))
        matched[row["model"]][tier] = None if n_match is None else int(n_match)
    rounds = {}
    for model in models:
        sizes = means[model]
        rounds[model] = ModelRound(
            model, {n: sum(v) / len(v) for n, v in sizes.items()}, dict(seconds[model]),
            {tier: {n: first is not None and n >= first for n in sizes} for tier, first in matched[model].items()})
    return rounds, levels


def run_adaptive(sweep: dict, task: dict, run: Store, run_round: RunRound, echo: Callable[[str], None]) -> dict:
    """Run rounds until every model has stopped (or the sweep's GPU-hour budget is spent)."""
    grid = manifests.sweep_sizes(sweep, task["name"])
    models = list(model_entries(sweep))
    budget_h = (sweep.get("adaptive") or {}).get("max_gpu_hours")
    margin = float((sweep.get("adaptive") or {}).get("margin", 1.0))
    primary = task.get("primary_metric") or task["metrics"][0]
    measured = {m: set(first_round(grid)) for m in models}
    stopped: dict[str, str] = {}
    history: list[dict] = []
    reason = "the grid is exhausted"
    for number in range(1, len(grid) + 2):
        echo(f"[{task['name']}] adaptive round {number}: " + "; ".join(
            f"{m} N={','.join(map(str, sorted(measured[m])))}" for m in models if m not in stopped))
        run_round({**sweep, ROUND_SIZES: {m: sorted(s) for m, s in measured.items()}})
        observed, levels = read_round(run, primary, models)
        spent_h = sum(sum(r.usd.values()) for r in observed.values()) / 3600
        active = {m: r for m, r in observed.items() if m not in stopped}
        decisions = decide(active, levels, grid, margin=margin)
        history.append({"round": number, "sizes": {m: sorted(s) for m, s in measured.items()},
                        "levels": levels, "seconds": round(spent_h * 3600, 3),
                        "decisions": [_as_dict(d) for d in decisions]})
        for d in decisions:
            if d.stop:
                stopped[d.model] = d.stop
                echo(f"[{task['name']}] {d.model}: stops: {d.stop}")
            else:
                measured[d.model].update(d.sizes)
        if len(stopped) == len(models):
            reason = "every model has its answer"
            break
        if budget_h is not None and spent_h >= budget_h:
            reason = f"the GPU-hour budget ({budget_h} h) is spent"
            break
    grid_points = len(grid) * len(models)
    summary = {"rounds": history, "stopped": stopped, "reason": reason,
               "sizes_run": sum(len(s) for s in measured.values()), "grid_sizes": grid_points}
    run.write_json(RECORD, summary)
    echo(f"[{task['name']}] adaptive sweep stopped: {reason} ({summary['sizes_run']} of {grid_points} "
         f"model sizes run; {RECORD})")
    return summary


def _as_dict(d: Decision) -> dict:
    return {"model": d.model, "sizes": d.sizes, "stop": d.stop}
