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
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

import click
import numpy as np
from switchpoint.core import manifests, stats
from switchpoint.core.contract import JobError, job_paths, run_job, settings_from
from switchpoint.core.datafolder import load_task_from_data
from switchpoint.core.predictions import (
    ARM_KINDS,
    Arm,
    iter_predictions,
    prediction_files,
)
from switchpoint.core.store import open_store
from switchpoint.score import metrics
from tqdm import tqdm

SUMMARY_COLUMNS = ("task", "kind", "model", "n", "seed", "variant", "metric", "mean", "ci_low", "ci_high",
                   "count", "errors")
OUTPUTS = ("scores.jsonl", "summary.csv", "score_metrics.json")  # renamed into place in this order
ARM_FIELDS = ("kind", "model", "n", "seed", "variant")


@dataclass
class ScoreSettings:
    task: str
    predictions: list[str]
    out: str
    bootstrap: int = stats.DEFAULT_RESAMPLES
    seed: int = 0


# --- inputs ------------------------------------------------------------------------------------
def resolve_task(spec: str) -> tuple[dict, Path]:
    """(task, file it came from) for a task name, a task YAML, a data folder or its task.json."""
    path = Path(spec)
    if path.is_dir():
        return load_task_from_data(path), path / "task.json"
    if path.suffix == ".json":
        if not path.exists():
            raise JobError(f"{path}: no such task file; give a task name, a task YAML or a data folder")
        return _read_json(path), path
    task = manifests.load_task(spec)
    return task, Path(task.get("manifest_path", spec))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: not readable as a JSON task ({err})") from err


def task_metrics(task: dict, source: Path) -> list[str]:
    """The task's metric names; an unknown one stops the job naming the file and line it is on."""
    names = task.get("metrics")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise JobError(f"{source}: field metrics: expected a non-empty list of metric names")
    for name in names:
        if name not in metrics.METRICS:
            raise JobError(f"{source}{_line_of(source, name)}: metrics: unknown metric {name!r}; "
                           f"known: {', '.join(sorted(metrics.METRICS))}")
    return list(dict.fromkeys(names))


def _line_of(path: Path, word: str) -> str:
    try:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if f'"{word}"' in line or f"'{word}'" in line or f" {word}" in line:
                return f":{lineno}"
    except OSError:
        pass
    return ""


@dataclass
class InputFile:
    path: Path  # local file to read
    display: str  # what error messages and score_metrics.json call it (a store URI for downloads)


def gather_inputs(specs: Sequence[str], scratch: ExitStack) -> list[InputFile]:
    """Predictions files from files, folders and store URIs (downloaded to a temporary folder)."""
    found: list[InputFile] = []
    for spec in specs:
        if spec.startswith("file://"):  # a local path in URI form (may name a single file)
            spec = urlparse(spec).path
        if "://" in spec:
            found.extend(_download(spec, scratch))
        else:
            found.extend(InputFile(p, str(p)) for p in prediction_files(Path(spec)))
    return found


def _download(uri: str, scratch: ExitStack) -> list[InputFile]:
    tmp = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="switchpoint-score-")))
    store = open_store(uri)
    store.download_dir(tmp)
    files = sorted(p for p in tmp.rglob("*.jsonl") if p.is_file())
    if not files:  # the URI may name one file rather than a prefix
        parent_uri, _, name = uri.rstrip("/").rpartition("/")
        parent = open_store(parent_uri)
        if name.endswith(".jsonl") and parent.exists(name):
            (tmp / name).write_bytes(parent.read_bytes(name))
            files = [tmp / name]
    if not files:
        raise JobError(f"{uri}: store prefix holds no predictions (*.jsonl) files")
    base = uri.rstrip("/")
    if len(files) == 1 and files[0].parent == tmp and base.endswith("/" + files[0].name):
        return [InputFile(files[0], base)]
    return [InputFile(p, f"{base}/{p.relative_to(tmp).as_posix()}") for p in files]


@dataclass
class ArmRecords:
    arm: Arm
    arm_dict: dict
    ids: list[str] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)
    errors: list[bool] = field(default_factory=list)
    first_seen: dict[str, str] = field(default_factory=dict)  # id -> "file:line"
    files: list[str] = field(default_factory=list)


def arm_key(arm: Arm) -> tuple:
    return (arm.kind, arm.model, arm.n, arm.seed, arm.variant or "")


def read_records(inputs: Iterable[InputFile]) -> tuple[dict[Arm, ArmRecords], list[tuple[Arm, int]]]:
    """Arms with their records, validated; and the (arm, index) of every record in input order."""
    arms: dict[Arm, ArmRecords] = {}
    order: list[tuple[Arm, int]] = []
    for source in inputs:
        try:
            for lineno, record in iter_predictions(source.path):
                where = f"{source.display}:{lineno}"
                arm = Arm.from_dict(record["arm"])
                entry = arms.get(arm)
                if entry is None:
                    entry = arms[arm] = ArmRecords(arm, record["arm"])
                if source.display not in entry.files:
                    entry.files.append(source.display)
                refs = record["references"]
                if not refs or not any(r.strip() for r in refs):
                    raise JobError(f"{where}: field references is empty; every record needs at least one "
                                   "non-empty reference (re-run the inference job on the data folder)")
                rid = record["id"]
                if rid in entry.first_seen:
                    raise JobError(f"{where}: id {rid!r} appears twice for arm '{arm.label}' (first at "
                                   f"{entry.first_seen[rid]}); give each arm's predictions once")
                entry.first_seen[rid] = where
                order.append((arm, len(entry.ids)))
                entry.ids.append(rid)
                entry.predictions.append(record["prediction"])
                entry.references.append(refs)
                entry.errors.append(record["error"] is not None)
        except JobError as err:
            if source.display != str(source.path):  # name the store URI, not the temporary copy
                raise JobError(str(err).replace(str(source.path), source.display)) from err
            raise
    return arms, order


def id_set_mismatches(arms: dict[Arm, ArmRecords]) -> list[dict]:
    """Arms whose id set differs from the reference set: the set most arms share (the largest on ties)."""
    sets = {arm: frozenset(entry.ids) for arm, entry in arms.items()}
    if len(set(sets.values())) <= 1:
        return []
    counts = Counter(sets.values())
    common = max(counts, key=lambda ids: (counts[ids], len(ids), sorted(ids)))
    out = []
    for arm in sorted(sets, key=arm_key):
        ids = sets[arm]
        if ids != common:
            missing, extra = sorted(common - ids), sorted(ids - common)
            out.append({"arm": arms[arm].arm_dict, "label": arm.label, "ids": len(ids), "reference_ids": len(common),
                        "missing": len(missing), "extra": len(extra),
                        "missing_examples": missing[:5], "extra_examples": extra[:5]})
    return out


# --- the job -----------------------------------------------------------------------------------
def score_predictions(settings: ScoreSettings) -> dict[str, Any]:
    """Score every arm found in ``settings.predictions`` and write the three outputs; returns the metrics."""
    started = time.perf_counter()
    if settings.bootstrap < 1:
        raise JobError(f"--bootstrap {settings.bootstrap}: need at least 1 resample (10000 is the default)")
    out_dir = Path(settings.out)
    for name in OUTPUTS:  # stale complete-looking outputs must not outlive a failed re-run
        (out_dir / name).unlink(missing_ok=True)
    task, task_source = resolve_task(settings.task)
    names = task_metrics(task, task_source)
    with ExitStack() as scratch:
        inputs = gather_inputs(settings.predictions, scratch)
        arms, order = read_records(inputs)
    if not arms:
        raise JobError(f"{', '.join(settings.predictions)}: no prediction records found")

    scoring_started = time.perf_counter()
    scores: dict[Arm, dict[str, np.ndarray]] = {}
    total = sum(len(e.ids) for e in arms.values())
    with tqdm(total=total, desc="score", unit="rec", file=sys.stderr, mininterval=1.0) as bar:
        for arm in sorted(arms, key=arm_key):
            entry = arms[arm]
            ok = [i for i, err in enumerate(entry.errors) if not err]
            values = {name: np.zeros(len(entry.ids)) for name in names}  # errors score 0
            batch = metrics.score_batch(names, [entry.predictions[i] for i in ok], [entry.references[i] for i in ok])
            for name in names:
                values[name][ok] = batch[name]
            scores[arm] = values
            bar.update(len(entry.ids))
    scoring_s = time.perf_counter() - scoring_started

    rows = []
    for arm in sorted(arms, key=arm_key):
        entry = arms[arm]
        for name in names:
            interval = stats.bootstrap_ci(scores[arm][name], settings.bootstrap, settings.seed)
            rows.append({"task": task["name"], "kind": arm.kind, "model": arm.model, "n": arm.n, "seed": arm.seed,
                         "variant": arm.variant or "", "metric": name, "mean": f"{interval.mean:.4f}",
                         "ci_low": f"{interval.ci_low:.4f}", "ci_high": f"{interval.ci_high:.4f}",
                         "count": interval.count, "errors": int(sum(entry.errors))})

    mismatches = id_set_mismatches(arms)
    for item in mismatches:
        print(f"score: notice: arm '{item['label']}' was evaluated on {item['ids']} ids, not the {item['reference_ids']} "
              f"of the reference set ({item['missing']} missing, {item['extra']} extra); comparisons with it use "
              "only the common ids", file=sys.stderr)
    report = {
        "task": task["name"],
        "task_source": str(task_source),
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

    out_dir.mkdir(parents=True, exist_ok=True)
    with _atomic(out_dir / "scores.jsonl") as handle:
        for arm, index in order:
            entry = arms[arm]
            record = {"id": entry.ids[index], "arm": entry.arm_dict,
                      "error": entry.errors[index]}
            record.update({name: float(scores[arm][name][index]) for name in names})
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with _atomic(out_dir / "summary.csv") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    report["wall_s"] = round(time.perf_counter() - started, 4)
    with _atomic(out_dir / "score_metrics.json") as handle:
        handle.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    for name in OUTPUTS:
        os.replace(out_dir / f"{name}.part", out_dir / name)
    return report


class _atomic:
    """Write ``path.part``; the caller renames all outputs at the end (so none looks complete early)."""

    def __init__(self, path: Path) -> None:
        self.part = path.with_name(path.name + ".part")

    def __enter__(self) -> io.TextIOBase:
        self.handle = self.part.open("w", encoding="utf-8", newline="")
        return self.handle

    def __exit__(self, *exc) -> None:
        self.handle.close()


# --- reading scores and comparing arms (used by the report) -------------------------------------
def load_scores(path: str | Path) -> list[dict]:
    """Records of a scores.jsonl (or of the scores.jsonl in a folder)."""
    from switchpoint.core.datafolder import read_jsonl

    path = Path(path)
    if path.is_dir():
        path = path / "scores.jsonl"
    if not path.exists():
        raise JobError(f"{path}: no such file; give the scores.jsonl written by `switchpoint score`")
    records = read_jsonl(path)
    for lineno, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("arm"), dict):
            raise JobError(f"{path}:{lineno}: expected an object with id and arm, as scores.jsonl holds")
    return records


def parse_arm_spec(text: str) -> dict:
    """An arm selector from words such as ``finetune tiny-gpt-neox n=8 seed=0`` (an Arm.label also works).

    Words: ``key=value`` for kind, model, n, seed, variant (``variant=none`` selects no variant);
    ``[v]`` for variant v; a bare arm kind; any other bare word is the model. Fields left out match
    anything, but the selector must pick exactly one arm.
    """
    selector: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in selector and selector[key] != value:
            raise JobError(f"arm {text!r}: {key} given twice ({selector[key]!r} and {value!r})")
        selector[key] = value

    for word in text.split():
        if "=" in word:
            key, _, value = word.partition("=")
            key = key.strip().lower()
            if key not in ARM_FIELDS:
                raise JobError(f"arm {text!r}: unknown field {key!r}; use {', '.join(ARM_FIELDS)}")
            if key in ("n", "seed"):
                try:
                    put(key, int(value))
                except ValueError:
                    raise JobError(f"arm {text!r}: {key}={value!r} is not an integer") from None
            elif key == "variant":
                put(key, None if value.lower() in ("", "none", "null") else value)
            else:
                put(key, value)
        elif word.startswith("[") and word.endswith("]"):
            put("variant", word[1:-1] or None)
        elif word in ARM_KINDS:
            put("kind", word)
        else:
            put("model", word)
    if not selector:
        raise JobError("arm selector is empty; give e.g. 'finetune tiny-gpt-neox n=8 seed=0'")
    return selector


def _matches(arm: dict, selector: dict) -> bool:
    return all(arm.get(k) == v for k, v in selector.items())


def select_arm(records: Sequence[dict], selector: dict) -> dict:
    """The one arm (as a dict) of ``records`` that ``selector``'s fields match."""
    found: dict[tuple, dict] = {}
    for record in records:
        arm = record["arm"]
        if _matches(arm, selector):
            found.setdefault(tuple(arm.get(k) for k in ARM_FIELDS), arm)
    if len(found) == 1:
        return next(iter(found.values()))
    labels = sorted({Arm.from_dict(r["arm"]).label for r in records if len(found) == 0 or _matches(r["arm"], selector)})
    what = "matches no arm" if not found else f"matches {len(found)} arms"
    shown = "; ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
    raise JobError(f"arm selector {selector} {what}; {'arms' if not found else 'candidates'}: {shown} "
                   "(add n=, seed=, variant= or the kind to narrow it)")


def compare_arms(scores_records: Sequence[dict], arm_a: dict, arm_b: dict, metric: str,
                 resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> stats.PairedDifference:
    """A minus B on ``metric`` over the ids both arms scored (percentage points, paired bootstrap).

    ``arm_a``/``arm_b`` are arm dicts or partial selectors (see parse_arm_spec); ids scored by one arm
    only are counted in ``only_a``/``only_b`` and left out, never silently compared.
    """
    chosen_a, chosen_b = select_arm(scores_records, arm_a), select_arm(scores_records, arm_b)
    if chosen_a == chosen_b:
        raise JobError(f"arms A and B are the same arm ({Arm.from_dict(chosen_a).label}); pick two different arms")
    values: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for record in scores_records:
        for side, chosen in zip(values, (chosen_a, chosen_b)):
            if record["arm"] == chosen:
                if metric not in record:
                    known = sorted(set(record) - {"id", "arm", "error"})
                    raise JobError(f"metric {metric!r} is not in the scores; they hold {', '.join(known)}")
                side[record["id"]] = float(record[metric])
    return stats.paired_difference(values[0], values[1], resamples, seed)


# --- CLI ---------------------------------------------------------------------------------------
@click.command("score", context_settings={"show_default": True})
@click.option("--task", default=None,
              help="Task name (jsquad, xlsum), task YAML, data folder or its task.json: which metrics to compute.")
@click.option("--predictions", "predictions", multiple=True,
              help="Predictions JSONL file, folder of them, or store URI (s3://…/predictions). Repeat the option "
                   "or list more paths after it. [default: <ml-root>/processing/input/predictions]")
@click.argument("more_predictions", nargs=-1)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder. [default: <ml-root>/processing/output]")
@click.option("--bootstrap", type=int, default=None,
              help=f"Bootstrap resamples for the 95% intervals. [default: {stats.DEFAULT_RESAMPLES}]")
@click.option("--seed", type=int, default=None, help="Bootstrap seed. [default: 0]")
@click.option("--compare", "compare_path", default=None, type=click.Path(),
              help="Instead of scoring: compare two arms in this scores.jsonl (or its folder); needs --arm-a, --arm-b.")
@click.option("--arm-a", default=None, help="Arm A for --compare, e.g. 'finetune tiny-gpt-neox n=8 seed=0'.")
@click.option("--arm-b", default=None, help="Arm B for --compare, e.g. 'fewshot-api claude-haiku-4.5 n=8 seed=0 [full]'.")
@click.option("--metric", default=None, help="Metric for --compare (default: the only metric in the scores).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(task, predictions, more_predictions, out_dir, bootstrap, seed, compare_path, arm_a, arm_b, metric, ml_root):
    """Score predictions: per-example metrics, bootstrap intervals per arm, paired comparisons.

    \b
    Inputs : --predictions: predictions JSONL files (one arm each), folders of them or store URIs;
             --task: the task (its `metrics` list: exact_match, f1, f1_mecab, rouge1, rouge2, rougeL).
    Outputs: scores.jsonl (per record and metric, 0..1), summary.csv (task, kind, model, n, seed,
             variant, metric, mean, ci_low, ci_high, count, errors; percent, 95% percentile bootstrap
             over examples), score_metrics.json (records, arms, pairs/s, wall_s, id-set mismatches).
    A record with `error` set scores 0 and is counted in `errors`. Arms evaluated on different id
    sets are reported (stderr and score_metrics.json); comparisons use the ids both have.
    Metrics: JSQuAD exact_match/f1 as JGLUE (characters); f1_mecab as the Japanese lm-eval harness
    (MeCab tokens, neologdn); XLSum ROUGE as XL-Sum's multilingual scorer (MeCab, unidic-lite).

    \b
    Compare two arms (paired bootstrap over the ids both scored; A minus B in percentage points):
      switchpoint score --compare out/scores.jsonl --metric f1 \\
          --arm-a 'finetune tiny-gpt-neox n=8 seed=0' --arm-b 'fewshot-api claude-haiku-4.5 n=8 seed=0'
    An arm is words: a kind (finetune, fewshot-local, fewshot-api), a model, n=N, seed=S, and
    [variant] or variant=V (variant=none for none); fields left out match anything, but each
    selector must match exactly one arm.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        if compare_path is not None:
            _run_compare(compare_path, arm_a, arm_b, metric, bootstrap, seed)
            return
        if arm_a or arm_b or metric:
            raise JobError("--arm-a, --arm-b and --metric go with --compare SCORES_JSONL")
        if not task:
            raise JobError("--task is required to score: give a task name (jsquad), a task YAML or a data folder")
        given = [*predictions, *more_predictions]
        settings = settings_from(ScoreSettings, paths, {
            "task": task,
            "predictions": given or [str(paths.processing_input("predictions"))],
            "out": out_dir or str(paths.processing_output),
            "bootstrap": bootstrap,
            "seed": seed,
        })
        report = score_predictions(settings)
        click.echo(f"score: {report['task']}: {len(report['arms'])} arms, {report['records']} records "
                   f"({report['errors']} errors), metrics {', '.join(report['metrics'])}, "
                   f"{report['pairs_per_s']} records/s -> {settings.out}")

    run_job(paths, body, name="score")


def _run_compare(path: str, arm_a: str | None, arm_b: str | None, metric: str | None,
                 bootstrap: int | None, seed: int | None) -> None:
    if not arm_a or not arm_b:
        raise JobError("--compare needs --arm-a and --arm-b, e.g. --arm-a 'finetune tiny-gpt-neox n=8 seed=0'")
    records = load_scores(path)
    if not records:
        raise JobError(f"{path}: holds no scores")
    if metric is None:
        found = sorted(set().union(*(set(r) for r in records)) - {"id", "arm", "error"})
        if len(found) != 1:
            raise JobError(f"{path}: holds metrics {', '.join(found)}; choose one with --metric")
        metric = found[0]
    resamples = bootstrap or stats.DEFAULT_RESAMPLES
    seed = seed or 0
    sel_a, sel_b = parse_arm_spec(arm_a), parse_arm_spec(arm_b)
    label_a = Arm.from_dict(select_arm(records, sel_a)).label
    label_b = Arm.from_dict(select_arm(records, sel_b)).label
    diff = compare_arms(records, sel_a, sel_b, metric, resamples, seed)
    click.echo(f"A: {label_a}\nB: {label_b}")
    if diff.count == 0:
        raise JobError(f"arms '{label_a}' and '{label_b}' share no example ids; nothing to compare")
    click.echo(f"{metric}: A - B = {diff.mean_diff:+.2f} points, 95% paired bootstrap interval "
               f"[{diff.ci_low:+.2f}, {diff.ci_high:+.2f}] over {diff.count} common examples "
               f"({resamples} resamples, seed {seed})")
    if diff.only_a or diff.only_b:
        click.echo(f"score: notice: {diff.only_a} ids only in A and {diff.only_b} only in B were left out",
                   err=True)
