"""The ``score`` job: per-example scores, bootstrap intervals per arm, and paired comparisons.

Inputs : predictions JSONL files (the predictions contract, ``predictions.py``), folders of them, or
         store URIs (``s3://…``, ``file://…``); the task (name, YAML, data folder or its task.json)
         says which metrics to compute.
Outputs (in ``--out``, default ``<ml-root>/processing/output``)::

    scores.jsonl        one object per input record: id, arm (as given), error, one field per metric (0..1)
    summary.csv         one row per arm and metric: task, kind, model, n, seed, variant, metric, mean,
                        ci_low, ci_high, count, errors; mean and the 95% percentile-bootstrap interval
                        over examples in percent (seeded, 10,000 resamples by default)
    score_metrics.json  task, metrics, inputs, records, errors, arms [{arm, label, records, errors, ids}],
                        scoring_s, pairs_per_s, wall_s, bootstrap, seed, id_set_mismatches, implementation

A record whose ``error`` is set scores 0 on every metric and is counted in ``errors``. Arms scored on
different id sets are listed in ``id_set_mismatches`` (and on stderr); comparisons use only the ids
both arms have. Outputs are written under ``.part`` names and renamed at the end, metrics file last,
so a killed job leaves no complete-looking output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from contextlib import ExitStack
from json.encoder import (
    encode_basestring,  # json.dumps's string encoder (ensure_ascii=False)
)
from pathlib import Path
from typing import Any

import click
import numpy as np
from switchpoint.core import stats
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.predictions import Arm
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.score import metrics
from switchpoint.score.compare import (
    compare_arms,
    load_scores,
    parse_arm_spec,
    run_compare,
    select_arm,
)
from switchpoint.score.inputs import (
    ArmRecords,
    arm_key,
    check_against_eval,
    check_foreign_arms,
    eval_references,
    gather_inputs,
    id_set_mismatches,
    read_records,
    resolve_task,
    task_metrics,
)
from switchpoint.score.settings import ScoreSettings
from tqdm import tqdm

__all__ = ["ScoreSettings", "command", "compare_arms", "load_scores", "parse_arm_spec", "score_predictions",
           "select_arm"]

SUMMARY_COLUMNS = ("task", "kind", "model", "n", "seed", "variant", "metric", "mean", "ci_low", "ci_high",
                   "count", "errors")
OUTPUTS = ("scores.jsonl", "summary.csv", "score_metrics.json")  # renamed into place in this order


# --- the job -----------------------------------------------------------------------------------
def load_inputs(settings: ScoreSettings) -> tuple[dict, list[str], list, dict[Arm, ArmRecords], list]:
    """(task, metric names, inputs, arms, record order): every check on the inputs, before any scoring."""
    if not settings.task:
        raise JobError("--task is required to score: give a task name (jsquad), a task YAML or a data folder")
    task, task_source = resolve_task(settings.task)
    names = task_metrics(task, task_source)
    with ExitStack() as scratch:
        inputs = gather_inputs(settings.predictions, scratch)
        arms, order = read_records(inputs)
    if not arms:
        raise JobError(f"{', '.join(settings.predictions)}: no prediction records found")
    reference = eval_references(settings.task)
    if reference is not None:
        check_against_eval(arms, *reference)
    check_foreign_arms(arms)
    task["_source"] = str(task_source)
    return task, names, inputs, arms, order


def score_arms(arms: dict[Arm, ArmRecords], names: list[str]) -> dict[Arm, dict[str, np.ndarray]]:
    """Per arm and metric, every record's score in 0..1 (records in error score 0)."""
    scores: dict[Arm, dict[str, np.ndarray]] = {}
    total = sum(len(e.ids) for e in arms.values())
    with tqdm(total=total, desc="score", unit="rec", file=sys.stderr, mininterval=1.0) as bar:
        for arm in sorted(arms, key=arm_key):
            entry = arms[arm]
            ok = [i for i, err in enumerate(entry.errors) if not err]
            values = {name: np.zeros(len(entry.ids)) for name in names}
            batch = metrics.score_batch(names, [entry.predictions[i] for i in ok], [entry.references[i] for i in ok])
            for name in names:
                values[name][ok] = batch[name]
            scores[arm] = values
            bar.update(len(entry.ids))
    return scores


def summary_rows(task: dict, arms: dict[Arm, ArmRecords], scores: dict, names: list[str],
                 settings: ScoreSettings) -> list[dict]:
    """One row per arm and metric. One set of bootstrap resamples per example count serves every arm and
    metric of that count: their scores are the columns of one matrix, resampled by one matrix product."""
    ordered = sorted(arms, key=arm_key)
    intervals: dict[tuple[Arm, str], stats.Interval] = {}
    for count in sorted({len(arms[arm].ids) for arm in ordered}):
        columns = [(arm, name) for arm in ordered if len(arms[arm].ids) == count for name in names]
        shared = stats.Resamples(count, settings.bootstrap, settings.seed)
        matrix = np.column_stack([scores[arm][name] for arm, name in columns])
        intervals.update(zip(columns, stats.bootstrap_cis(matrix, shared)))
    rows = []
    for arm in ordered:
        errors = int(sum(arms[arm].errors))
        for name in names:
            interval = intervals[arm, name]
            rows.append({"task": task["name"], "kind": arm.kind, "model": arm.model, "n": arm.n, "seed": arm.seed,
                         "variant": arm.variant or "", "metric": name, "mean": f"{interval.mean:.4f}",
                         "ci_low": f"{interval.ci_low:.4f}", "ci_high": f"{interval.ci_high:.4f}",
                         "count": interval.count, "errors": errors})
    return rows


def score_predictions(settings: ScoreSettings) -> dict[str, Any]:
    """Score every arm found in ``settings.predictions`` and write the three outputs; returns the metrics."""
    started = time.perf_counter()
    out_dir = Path(settings.out)
    for name in OUTPUTS:  # stale complete-looking outputs must not outlive a failed re-run
        (out_dir / name).unlink(missing_ok=True)
    task, names, inputs, arms, order = load_inputs(settings)
    scoring_started = time.perf_counter()
    scores = score_arms(arms, names)
    scoring_s = time.perf_counter() - scoring_started
    rows = summary_rows(task, arms, scores, names, settings)
    total = sum(len(e.ids) for e in arms.values())
    mismatches = id_set_mismatches(arms)
    for item in mismatches:
        print(f"score: notice: arm '{item['label']}' was evaluated on {item['ids']} ids, not the {item['reference_ids']} "
              f"of the reference set ({item['missing']} missing, {item['extra']} extra); comparisons with it use "
              "only the common ids", file=sys.stderr)
    report = {
        "task": task["name"],
        "task_source": task["_source"],
        "metrics": names,
        "inputs": [i.display for i in inputs],
        "records": total,
        "errors": int(sum(sum(e.errors) for e in arms.values())),
        "arms": [{"arm": arms[a].arm_dict, "label": a.label, "records": len(arms[a].ids),
                  "errors": int(sum(arms[a].errors)), "files": arms[a].files} for a in sorted(arms, key=arm_key)],
        "scoring_s": round(scoring_s, 4),
        "pairs_per_s": round(total / scoring_s, 1) if scoring_s > 0 else None,
        "bootstrap": settings.bootstrap,
        "seed": settings.seed,
        "id_set_mismatches": mismatches,
        "implementation": metrics.implementation(names),
    }
    _write_outputs(out_dir, arms, order, scores, names, rows, report, started)
    return report


def _write_outputs(out_dir: Path, arms, order, scores, names, rows, report, started) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = {arm: _score_lines(entry, scores[arm], names) for arm, entry in arms.items()}
    with _atomic(out_dir / "scores.jsonl") as handle:
        handle.writelines(lines[arm][index] for arm, index in order)
    with _atomic(out_dir / "summary.csv") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    report["wall_s"] = round(time.perf_counter() - started, 4)
    with _atomic(out_dir / "score_metrics.json") as handle:
        handle.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    for name in OUTPUTS:
        os.replace(out_dir / f"{name}.part", out_dir / name)


def _score_lines(entry: ArmRecords, values: dict[str, np.ndarray], names: list[str]) -> list[str]:
    """One arm's scores.jsonl lines, as ``json.dumps(record, ensure_ascii=False)`` writes them, built from
    parts made once per arm (the arm, the metric names) rather than by encoding every record whole."""
    head = ', "arm": ' + json.dumps(entry.arm_dict, ensure_ascii=False) + ', "error": '
    keys = [", " + encode_basestring(name) + ": " for name in names]
    columns = []
    for name in names:
        column = values[name]
        # float repr is json's form of a finite number; json.dumps spells the others (NaN, Infinity)
        columns.append(list(map(repr, column.tolist())) if np.isfinite(column).all()
                       else [json.dumps(v) for v in column.tolist()])
    tails = ["".join(k + v for k, v in zip(keys, row)) + "}\n" for row in zip(*columns)]  # names: never empty
    return ['{"id": ' + encode_basestring(rid) + head + ("true" if err else "false") + tail
            for rid, err, tail in zip(entry.ids, entry.errors, tails)]


class _atomic:
    """Write ``path.part``; the caller renames all outputs at the end (so none looks complete early)."""

    def __init__(self, path: Path) -> None:
        self.part = path.with_name(path.name + ".part")

    def __enter__(self) -> io.TextIOBase:
        self.handle = self.part.open("w", encoding="utf-8", newline="")
        return self.handle

    def __exit__(self, *exc) -> None:
        self.handle.close()


# --- CLI ---------------------------------------------------------------------------------------
@click.command("score", context_settings={"show_default": True})
@options(ScoreSettings, exclude=("predictions",))
@click.option("--predictions", "predictions", multiple=True,
              help="Predictions JSONL file, folder of them, or store URI (s3://…/predictions). Repeat the option "
                   "or list more paths after it. [default: <ml-root>/processing/input/predictions]")
@click.argument("more_predictions", nargs=-1)
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(predictions, more_predictions, ml_root, **given):
    """Score predictions: per-example metrics, bootstrap intervals per arm, paired comparisons.

    \b
    Inputs : --predictions: predictions JSONL files (one arm each), folders of them or store URIs;
             --task: the task (its `metrics` list: exact_match, f1, f1_mecab, rouge1, rouge2, rougeL);
             a data folder as --task also checks every id and its references against its eval.jsonl.
    Outputs: scores.jsonl (per record and metric, 0..1), summary.csv (task, kind, model, n, seed,
             variant, metric, mean, ci_low, ci_high, count, errors; percent, 95% percentile bootstrap
             over examples), score_metrics.json (records, arms, pairs/s, wall_s, id-set mismatches).
    A record with `error` set scores 0 and is counted in `errors`. Arms evaluated on different id
    sets are reported (stderr and score_metrics.json); comparisons use the ids both have; an arm
    that shares no id with the others (another task's predictions) is an error naming its file.
    Metrics: JSQuAD exact_match/f1 as JGLUE (characters); f1_mecab as the Japanese lm-eval harness
    (MeCab tokens, neologdn); XLSum ROUGE as XL-Sum's multilingual scorer (MeCab, unidic-lite).

    \b
    Compare two arms (paired bootstrap over the ids both scored; A minus B in percentage points):
      switchpoint score --compare out/scores.jsonl --metric f1 \\
          --arm-a 'finetune tiny-gpt-neox n=8 seed=0' --arm-b 'fewshot-api claude-haiku-4.5 n=8 seed=0'
    An arm is words: a kind (finetune, fewshot-local, fewshot-api), a model, n=N, seed=S, and
    [variant] or variant=V (variant=none for none); fields left out match anything, but each
    selector must match exactly one arm. This compares two single arms, so only examples are
    resampled; the report's N* comparisons average seeds and resample seeds and examples both.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        given_paths = [*predictions, *more_predictions]
        settings = load_settings(ScoreSettings, (COMMAND_LINE, {**given, "predictions": given_paths or None}))
        if settings.compare is not None:
            run_compare(settings.compare, settings.arm_a, settings.arm_b, settings.metric,
                        settings.bootstrap, settings.seed)
            return
        if settings.arm_a or settings.arm_b or settings.metric:
            raise JobError("--arm-a, --arm-b and --metric go with --compare SCORES_JSONL")
        settings.predictions = settings.predictions or [str(paths.processing_input("predictions"))]
        settings.out = settings.out or str(paths.processing_output)
        report = score_predictions(settings)
        click.echo(f"score: {report['task']}: {len(report['arms'])} arms, {report['records']} records "
                   f"({report['errors']} errors), metrics {', '.join(report['metrics'])}, "
                   f"{report['pairs_per_s']} records/s -> {settings.out}")

    run_job(paths, body, name="score")
