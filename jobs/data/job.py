"""The ``data`` job: the task's training pool, evaluation set and per-seed nested training sets.

Output folder (the ``data`` channel of every later job)::

    task.json                 the resolved task manifest, so later jobs need no manifest file
    data.json                 sizes, seeds, counts, sources and a sha256 of every file
    sweep.json, models.json   the resolved sweep and the entries of its models (with --sweep)
    eval.jsonl                the evaluation set (canonical records)
    pool.jsonl                the training pool after de-duplication and the overlap filter
    train/seed=S/n=N.jsonl    the N training examples of seed S (N > 0)

Canonical record: ``id``, the task's input fields, ``references`` (list of strings).
For each seed the N=2 set is the first 2 lines of the N=4 set, and so on: one seeded ordering of
the pool, cut at every size. The few-shot arms read the same files, so the shots for N are the
training examples for N, in the same order. Same inputs and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.datafolder import MODELS_FILE, SWEEP_FILE
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.core.store import open_store
from switchpoint.data.settings import (
    Settings,
    seeds_at,
    settings_for_sweep,
    sweep_values,
)
from switchpoint.data.sources import RawRow, read_source, to_canonical

__all__ = ["DataSettings", "Settings", "command", "prepare", "read_source", "settings_for_sweep", "to_canonical"]

DataSettings = Settings  # the name earlier callers use
EVAL_SAMPLE_SEED = 20240126  # fixed: the eval subset must not change with the training seed


def _fingerprint(record: dict, task: dict) -> str:
    inputs = {k: record[k] for k in task["fields"]["inputs"]}
    return hashlib.sha256(json.dumps(inputs, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def build_pool(train: list[dict], eval_set: list[dict], task: dict) -> tuple[list[dict], dict[str, int]]:
    """Training pool: drop duplicates (same id or same inputs) and anything overlapping the eval set.

    For a task with ``sampling.unique_field`` (JSQuAD's context) an example whose context appears
    in the eval set is dropped too, so no evaluation context is ever trained on.
    """
    unique = task["sampling"]["unique_field"]
    eval_ids = {r["id"] for r in eval_set}
    eval_prints = {_fingerprint(r, task) for r in eval_set}
    eval_contexts = {r[unique] for r in eval_set} if unique else set()
    seen_ids: set[str] = set()
    seen_prints: set[str] = set()
    dropped = {"duplicate": 0, "in_eval": 0, "eval_context": 0}
    pool = []
    for rec in train:
        fp = _fingerprint(rec, task)
        if rec["id"] in eval_ids or fp in eval_prints:
            dropped["in_eval"] += 1
        elif unique and rec[unique] in eval_contexts:
            dropped["eval_context"] += 1
        elif rec["id"] in seen_ids or fp in seen_prints:
            dropped["duplicate"] += 1
        else:
            seen_ids.add(rec["id"])
            seen_prints.add(fp)
            pool.append(rec)
    return pool, dropped


def seed_order(pool: list[dict], seed: int, unique_field: str | None) -> list[dict]:
    """A seeded ordering of the pool with at most one example per ``unique_field`` value."""
    order = list(pool)
    random.Random(seed).shuffle(order)
    if unique_field is None:
        return order
    taken: set[str] = set()
    out = []
    for rec in order:
        if rec[unique_field] not in taken:
            taken.add(rec[unique_field])
            out.append(rec)
    return out


def choose_eval(eval_set: list[dict], eval_size: int | None) -> list[dict]:
    """The first ``eval_size`` of a fixed shuffle, kept in source order; all when no cap."""
    if eval_size is None or eval_size >= len(eval_set):
        return list(eval_set)
    idx = list(range(len(eval_set)))
    random.Random(EVAL_SAMPLE_SEED).shuffle(idx)
    return [eval_set[i] for i in sorted(idx[:eval_size])]


def check_unique_ids(rows: list[RawRow], records: list[dict]) -> None:
    """Eval ids are unique: a repeated example would count twice in every score."""
    first: dict[str, str] = {}
    for row, rec in zip(rows, records):
        if rec["id"] in first:
            raise JobError(f"{row.where}: id {rec['id']!r} appears again (first at {first[rec['id']]}); "
                           "eval ids must be unique")
        first[rec["id"]] = row.where


def check_conflicting_ids(rows: list[RawRow], records: list[dict]) -> None:
    """Two rows with the same id must be the same example: a repeated row is a duplicate (dropped
    and counted), but the same id with a different text would silently lose one of them."""
    first: dict[str, tuple[str, dict]] = {}
    for row, rec in zip(rows, records):
        seen = first.setdefault(rec["id"], (row.where, rec))
        if seen[1] != rec:
            changed = sorted(k for k in rec if rec[k] != seen[1].get(k))
            raise JobError(f"{row.where}: id {rec['id']!r} was already used by {seen[0]} with a different "
                           f"{', '.join(changed)}; ids must be unique (fix or remove one of the two rows)")


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for rec in records:
            out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sources(settings: Settings, task: dict) -> dict[str, dict]:
    if settings.source == "remote":
        return task["sources"]
    offline = all(src.get("type") in ("file", "store") for src in task["sources"].values())
    if "bundled" in task:
        return {role: {**src, "type": src.get("type", "bundled")} for role, src in task["bundled"].items()}
    if offline:
        # A user's task on local files needs no network: its own sources are its offline sample.
        print(f"data: task {task['name']} has no bundled sample; using its own local sources", file=sys.stderr)
        return task["sources"]
    raise JobError(f"task {task['name']} ({task['manifest_path']}) has no bundled sample and its sources need "
                   "the network; use --source remote")


def _read(sources: dict, task: dict) -> tuple[list[dict], list[dict], list[dict], dict]:
    """(eval source, chosen eval set, training pool, dropped counts) of a task's sources."""
    eval_rows = read_source(sources["eval"], "eval")
    eval_all = to_canonical(eval_rows, task, "eval")
    check_unique_ids(eval_rows, eval_all)
    train_rows = read_source(sources["train"], "train")
    train_all = to_canonical(train_rows, task, "train")
    check_conflicting_ids(train_rows, train_all)
    # The overlap filter uses the whole eval source, not just the capped subset: a later run with a
    # larger cap must not find its eval examples in an earlier training set.
    pool, dropped = build_pool(train_all, eval_all, task)
    if not eval_all:
        raise JobError(f"task {task['name']}: the eval source {sources['eval']['uri']} has no rows")
    if not pool:
        raise JobError(f"task {task['name']}: the training pool is empty after removing duplicates and eval overlap "
                       f"(train source {sources['train']['uri']}: {len(train_all)} rows, dropped {dropped})")
    return eval_all, pool, train_all, dropped


def prepare(settings: Settings, out_dir: Path, sweep: dict | None = None) -> dict[str, Any]:
    """Write the data folder for one task; returns the ``data.json`` summary.

    With ``sweep`` (resolved by ``manifests.load_sweep``) the folder also carries the sweep and its
    models' entries, so every later job reads them from its inputs, never from a host path.
    """
    task = manifests.load_task(settings.task)
    sources = _sources(settings, task)
    eval_all, pool, train_all, dropped = _read(sources, task)
    if settings.eval_size is not None and settings.eval_size > len(eval_all):
        print(f"data: eval cap {settings.eval_size} is more than the eval source has ({len(eval_all)} rows, "
              f"{sources['eval']['uri']}): every row is used", file=sys.stderr)
    eval_set = choose_eval(eval_all, settings.eval_size)

    unique = task["sampling"]["unique_field"]
    sizes = sorted(settings.sizes)
    orders = {}
    for seed in settings.seeds:
        largest = max([n for n in sizes if seed in seeds_at(n, settings)], default=0)
        order = seed_order(pool, seed, unique)
        if largest > len(order):
            why = f" with distinct {unique!r}" if unique else ""
            raise JobError(f"task {task['name']}: N={largest} is larger than the training pool: at most "
                           f"{len(order)} examples{why} (pool {len(pool)} after de-duplication); lower the largest size")
        orders[seed] = order[:largest]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "task.json", {k: v for k, v in task.items() if k != "manifest_path"})
    if sweep is not None:
        _write_json(out_dir / SWEEP_FILE, public_sweep(sweep))
        _write_json(out_dir / MODELS_FILE, {"models": sweep["model_entries"], "api_models": sweep["api_model_entries"]})
    _write_jsonl(out_dir / "eval.jsonl", eval_set)
    _write_jsonl(out_dir / "pool.jsonl", pool)
    train_sets: dict[str, list[int]] = {}
    for seed, order in orders.items():
        for n in sizes:
            if n > 0 and seed in seeds_at(n, settings):
                _write_jsonl(out_dir / "train" / f"seed={seed}" / f"n={n}.jsonl", order[:n])
                train_sets.setdefault(str(seed), []).append(n)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file() and p.name != "data.json")
    info = {
        "task": task["name"], "sizes": sizes, "seeds": sorted(settings.seeds), "source": settings.source,
        "seeds_up_to_n": settings.seeds_up_to_n, "train_sets": train_sets,
        "eval_count": len(eval_set), "eval_source_count": len(eval_all), "pool_count": len(pool),
        "train_source_count": len(train_all), "dropped": dropped,
        "max_n": {str(seed): len(seed_order(pool, seed, unique)) for seed in settings.seeds},
        "sha256": {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest() for name in files},
    }
    _write_json(out_dir / "data.json", info)
    return info


def public_sweep(sweep: dict) -> dict:
    """The resolved sweep as the data folder carries it: no host path, no copy of the model entries."""
    # round_sizes/round_seeds: an adaptive round's per-model sizes and seeds (orchestration only), not data.
    return {k: v for k, v in sweep.items() if k not in ("manifest_path", "model_entries", "api_model_entries",
                                                         "round_sizes", "round_seeds")}


# --- CLI -------------------------------------------------------------------------------------
@click.command("data", context_settings={"show_default": True})
@options(Settings)
@click.option("--sweep", default=None, help="Sweep name or YAML: supplies sizes, seeds, eval cap and data source; "
              "its resolved copy and its models' entries are written to the data folder.")
@click.option("--models-file", default=None, help="A YAML in models.yaml's shape with your own models (with --sweep).")
@click.option("--store", default=None, help="Store (folder or s3://bucket/prefix): writes STORE/<sweep>/<task>/data/ and _SUCCESS.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write the data folder here instead (default without --store: <ml-root>/processing/output).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(sweep, models_file, store, out_dir, ml_root, **given):
    """Prepare a task's data: evaluation set, training pool and nested training sets per seed.

    \b
    Inputs : the task manifest's sources (Hub Parquet, URL, local file or store URI), or the
             bundled offline sample with --source bundled.
    Outputs: task.json, data.json, eval.jsonl, pool.jsonl, train/seed=S/n=N.jsonl (and, with
             --sweep, sweep.json and models.json).
    The training set for N is the first N lines of a seeded ordering of the pool, so sets are
    nested and the few-shot shots for N are the same examples. Deterministic for given inputs.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        sweep_def = manifests.load_sweep(sweep, models_file=models_file) if sweep else None
        task_def = manifests.load_task(given["task"]) if given.get("task") else None
        from_sweep = (f"sweep {sweep_def['manifest_path']}", sweep_values(sweep_def, task_def["name"])) \
            if sweep_def and task_def else ("sweep", {})
        # Options given on the command line override the sweep.
        settings = load_settings(Settings, from_sweep, (COMMAND_LINE, given))
        task_def = task_def or manifests.load_task(settings.task)
        if store:
            sweep_name = sweep_def["name"] if sweep_def else "adhoc"
            target = open_store(store).child(sweep_name, task_def["store_key"], "data")
            with tempfile.TemporaryDirectory(prefix="switchpoint-data-") as tmp:
                info = prepare(settings, Path(tmp), sweep_def)
                target.publish(Path(tmp))
            where = target.uri
        else:
            dest = Path(out_dir) if out_dir else paths.processing_output
            info = prepare(settings, dest, sweep_def)
            where = str(dest)
        click.echo(f"data: {info['task']}: {info['eval_count']} eval, pool {info['pool_count']}, "
                   f"sizes {info['sizes']}, seeds {info['seeds']} -> {where}")

    run_job(paths, body, name="data")
