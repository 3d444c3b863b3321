"""The adaptive sweep's rounds: train -> infer -> score -> report -> decide, until each model has its answer.

Round 1 runs every model at the first sizes of the grid (``adaptive.first_round``) with the sweep's
first seed only. After each round the report's own tables (results.csv: means, seconds and dollars
per arm and seed; transitions.csv: the match rule's first persistent N and N*'s interval per
prompting tier) are read back, ``adaptive.decide`` says what each model needs next (a larger size,
or the sweep's other seeds at the two sizes bracketing N*), and the next round runs only that. Every
round is an ordinary sweep run: steps whose inputs and settings are unchanged are skipped, so a
killed adaptive sweep resumes like any other. The sweep also stops when what the rounds have spent
reaches ``adaptive.max_gpu_hours`` or ``adaptive.max_usd``. ``runs/adaptive.json`` records every
round as it starts and once decided, then why the sweep stopped (``state``: in progress / stopped),
so ``status`` of a running or killed sweep sees the sizes it is running now. ``plan`` prices the
worst case: the whole grid.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from switchpoint.core import layout, manifests
from switchpoint.core.contract import JobError
from switchpoint.core.store import Store
from switchpoint.orchestration.adaptive import Decision, ModelRound, decide, first_round
from switchpoint.orchestration.steps import model_entries

RunRound = Callable[[dict], object]  # runs one round's sweep (the orchestration's run_sweep, bound)
ROUND_SIZES = "round_sizes"  # the in-memory sweep key that gives each model its sizes for a round
ROUND_SEEDS = "round_seeds"  # ... and the sizes where it runs every prepared seed (elsewhere the first only)
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


@dataclass
class Spent:
    """What the rounds have cost so far, from the report's per-arm figures (the jobs' own metrics)."""

    seconds: float = 0.0  # train + inference wall seconds (machine time, GPU on a GPU instance), a shared pass once
    usd: float = 0.0  # train + inference + API dollars

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600


def _tier(row: dict[str, str]) -> str:
    return " ".join(filter(None, (row["prompt_model"], row.get("prompt_variant"))))


def _infer_seconds(row: dict[str, str]) -> float:
    """This arm's share of its inference pass's wall seconds. infer-local repeats a shared pass's whole
    wall time on every arm it serves (the base model's N=0 pass: every seed and prompting arm); the
    report's ``shared_by`` says how many, so the pass counts once in all."""
    seconds = _number(row.get("infer_wall_s")) or 0.0
    shared_by = _number(row.get("shared_by"))
    return seconds / shared_by if seconds and shared_by and shared_by > 1 else seconds


def _check_columns(run: Store) -> None:
    path = f"{layout.REPORT}/results.csv"
    if not run.exists(path):
        return
    header = next(csv.reader(io.StringIO(run.read_text(path))), [])
    if "infer_wall_s" in header and "shared_by" not in header:
        raise JobError(f"{path}: no shared_by column (written by an older report); the GPU hours of a "
                       f"shared inference pass cannot be counted once: run the report step again")


def read_round(run: Store, primary: str, models: list[str]) -> tuple[dict[str, ModelRound], dict[str, float], Spent]:
    """What the rounds measured, per model, each prompting tier's level and what it cost, from the report."""
    means: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    spent = Spent()
    _check_columns(run)
    for row in _rows(run, "results.csv"):
        if row["metric"] != primary:
            continue
        row_s = (_number(row.get("train_wall_s")) or 0.0) + _infer_seconds(row)
        spent.seconds += row_s
        spent.usd += sum(_number(row.get(k)) or 0.0 for k in ("train_usd", "infer_usd", "api_usd"))
        if row["kind"] == "finetune" and row["model"] in models:
            n = int(row["n"])
            means[row["model"]][n].append(float(row["mean"]))
            seconds[row["model"]][n] += row_s
    levels: dict[str, float] = {}
    matched: dict[str, dict[str, int | None]] = defaultdict(dict)  # model -> tier -> first persistent match
    stars: dict[str, dict[str, tuple[float, float, float]]] = defaultdict(dict)  # model -> tier -> N* interval
    for row in _rows(run, "transitions.csv"):
        if row["metric"] != primary or row["model"] not in models:
            continue
        tier = _tier(row)
        levels[tier] = float(row["prompt_mean"])
        n_match = _number(row.get("n_match"))
        matched[row["model"]][tier] = None if n_match is None else int(n_match)
        star = [_number(row.get(k)) for k in ("n_star", "n_star_low", "n_star_high")]
        if all(v is not None for v in star):
            stars[row["model"]][tier] = (star[0], star[1], star[2])
    rounds = {}
    for model in models:
        sizes = means[model]
        rounds[model] = ModelRound(
            model, {n: sum(v) / len(v) for n, v in sizes.items()}, dict(seconds[model]),
            {tier: {n: first is not None and n >= first for n in sizes} for tier, first in matched[model].items()},
            seeds={n: len(v) for n, v in sizes.items()}, n_star=dict(stars[model]))
    return rounds, levels, spent


def prepared_seeds(sweep: dict, grid: list[int]) -> dict[int, int]:
    """N -> how many seeds the data step prepares there (all up to seeds_up_to_n, one beyond; one at N=0)."""
    return {n: len(manifests.seeds_at(n, sweep["seeds"], sweep.get("seeds_up_to_n"))) if n > 0 else 1 for n in grid}


def over_budget(spent: Spent, settings: dict) -> str | None:
    """Why the sweep must stop for its budget (None while it may go on)."""
    hours, usd = settings.get("max_gpu_hours"), settings.get("max_usd")
    if hours is not None and spent.gpu_hours >= hours:
        return f"the GPU-hour budget is spent ({spent.gpu_hours:.3g} of {hours:g} h)"
    if usd is not None and spent.usd >= usd:
        return f"the dollar budget is spent (${spent.usd:.2f} of ${usd:g})"
    return None


def run_adaptive(sweep: dict, task: dict, run: Store, run_round: RunRound, echo: Callable[[str], None]) -> dict:
    """Run rounds until every model has stopped or a budget (adaptive.max_gpu_hours / max_usd) is spent."""
    grid = manifests.sweep_sizes(sweep, task["name"])
    models = list(model_entries(sweep))
    settings = sweep.get("adaptive") or {}
    margin = float(settings.get("margin", 1.0))
    primary = task.get("primary_metric") or task["metrics"][0]
    max_seeds = prepared_seeds(sweep, grid)
    measured = {m: set(first_round(grid)) for m in models}
    seeded: dict[str, set[int]] = {m: set() for m in models}  # sizes that run every prepared seed
    stopped: dict[str, str] = {}
    history: list[dict] = []
    reason = "the grid is exhausted"
    for number in range(1, 2 * len(grid) + 2):
        echo(f"[{task['name']}] adaptive round {number}: " + "; ".join(
            f"{m} N={','.join(map(str, sorted(measured[m])))}"
            + (f" (every seed at N={','.join(map(str, sorted(seeded[m])))})" if seeded[m] else "")
            for m in models if m not in stopped))
        history.append({"round": number, "sizes": {m: sorted(s) for m, s in measured.items()},
                        "every_seed_at": {m: sorted(s) for m, s in seeded.items()}})
        _record(run, history, stopped, measured, grid, models)  # status sees the round now running
        run_round(round_sweep(sweep, measured, seeded))
        observed, levels, spent = read_round(run, primary, models)
        active = {m: r for m, r in observed.items() if m not in stopped}
        decisions = decide(active, levels, grid, margin=margin, max_seeds=max_seeds, asked=seeded)
        history[-1].update({"levels": levels, "seconds": round(spent.seconds, 3), "usd": round(spent.usd, 6),
                            "decisions": [_as_dict(d) for d in decisions]})
        for d in decisions:
            if d.stop:
                stopped[d.model] = d.stop
                echo(f"[{task['name']}] {d.model}: stops: {d.stop}")
            measured[d.model].update(d.sizes)
            seeded[d.model].update(d.more_seeds)
        _record(run, history, stopped, measured, grid, models)
        if len(stopped) == len(models):
            reason = "every model has its answer"
            break
        budget = over_budget(spent, settings)
        if budget:
            reason = budget
            break
    return _finish(run, task, history, stopped, reason, measured, grid, models, echo)


def round_sweep(sweep: dict, measured: dict[str, set[int]], seeded: dict[str, set[int]]) -> dict:
    """The sweep one round runs: each model's sizes so far, and where it runs more than the first seed."""
    return {**sweep, ROUND_SIZES: {m: sorted(s) for m, s in measured.items()},
            ROUND_SEEDS: {m: sorted(s) for m, s in seeded.items()}}


def _record(run: Store, history: list[dict], stopped: dict[str, str], measured: dict[str, set[int]],
            grid: list[int], models: list[str], reason: str | None = None) -> dict:
    """Write runs/adaptive.json: the rounds so far, ``in progress`` until the sweep stops (then why)."""
    summary = {"state": "stopped" if reason else "in progress", "rounds": history, "stopped": stopped,
               "reason": reason, "sizes_run": sum(len(s) for s in measured.values()),
               "grid_sizes": len(grid) * len(models)}
    run.write_json(RECORD, summary)
    return summary


def _finish(run: Store, task: dict, history: list[dict], stopped: dict[str, str], reason: str,
            measured: dict[str, set[int]], grid: list[int], models: list[str], echo: Callable[[str], None]) -> dict:
    summary = _record(run, history, stopped, measured, grid, models, reason)
    echo(f"[{task['name']}] adaptive sweep stopped: {reason} ({summary['sizes_run']} of {summary['grid_sizes']} "
         f"model sizes run; {RECORD})")
    return summary


def _as_dict(d: Decision) -> dict:
    return {"model": d.model, "sizes": d.sizes, "more_seeds": d.more_seeds, "stop": d.stop}
