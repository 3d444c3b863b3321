"""The ``data`` job: the task's training pool, evaluation set and per-seed nested training sets.

Output folder (the ``data`` channel of every later job)::

    task.json                 the resolved task manifest, so later jobs need no manifest file
    data.json                 sizes, seeds, counts, sources and a sha256 of every file
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
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.store import open_store

EVAL_SAMPLE_SEED = 20240126  # fixed: the eval subset must not change with the training seed


# --- reading sources -------------------------------------------------------------------------
@dataclass
class RawRow:
    where: str  # "file:line" or "file#item", for error messages
    value: dict[str, Any]


def _read_local_or_remote(source: dict, role: str) -> tuple[bytes, str]:
    kind = source.get("type", "file")
    uri = source["uri"]
    if kind in ("file", "bundled"):
        path = Path(uri) if kind == "file" else manifests.bundled_dir() / uri
        try:
            return path.read_bytes(), str(path)
        except OSError as err:
            raise JobError(f"{role} source {path}: cannot read ({err.strerror or err})") from err
    if kind == "url":
        try:
            with urllib.request.urlopen(uri, timeout=30) as response:  # noqa: S310 - manifest-chosen URL
                return response.read(), uri
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise JobError(f"{role} source {uri}: cannot reach it ({getattr(err, 'reason', err)}); "
                           "offline, run the bundled data with SWEEP=smoke (or --source bundled)") from err
    if kind == "store":
        parent, _, name = uri.rstrip("/").rpartition("/")
        store = open_store(parent)
        return store.read_bytes(name), uri
    raise JobError(f"{role} source {uri}: type {kind!r} cannot be read as a file")


def read_source(source: dict, role: str) -> list[RawRow]:
    """Rows of a source: SQuAD-JSON flattened to one row per question, JSONL as is, or a Hub split."""
    if source.get("type") == "hub" or source["format"] == "hub":
        return _read_hub(source, role)
    data, where = _read_local_or_remote(source, role)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JobError(f"{where}: not UTF-8 text ({err})") from err
    if source["format"] == "squad-json":
        return _flatten_squad(text, where)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise JobError(f"{where}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(value, dict):
            raise JobError(f"{where}:{lineno}: expected a JSON object, got {type(value).__name__}")
        rows.append(RawRow(f"{where}:{lineno}", value))
    return rows


def _flatten_squad(text: str, where: str) -> list[RawRow]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobError(f"{where}: not valid SQuAD JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise JobError(f"{where}: SQuAD JSON needs a top-level 'data' list")
    rows = []
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                loc = f"{where}#data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict) or "answers" not in qa:
                    raise JobError(f"{loc}: field 'answers' is missing")
                rows.append(RawRow(loc, {
                    "id": qa.get("id"), "title": article.get("title", ""), "context": paragraph.get("context"),
                    "question": qa.get("question"), "answers": [ans.get("text") for ans in qa["answers"]],
                }))
    return rows


def _read_hub(source: dict, role: str) -> list[RawRow]:
    try:
        import datasets
    except ImportError as err:
        raise JobError("a Hub source needs the datasets library: pip install 'switchpoint[hub]'") from err
    try:
        split = datasets.load_dataset(source["uri"], source.get("config"), split=source.get("split") or role)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; all mean "could not load"
        raise JobError(f"{role} source hub:{source['uri']}: cannot load it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                       "offline, run the bundled data with SWEEP=smoke (or --source bundled)") from err
    return [RawRow(f"hub:{source['uri']}[{i}]", dict(row)) for i, row in enumerate(split)]


# --- canonical records -----------------------------------------------------------------------
def to_canonical(rows: Iterable[RawRow], task: dict, role: str) -> list[dict[str, Any]]:
    """Map source fields to the canonical schema; a missing or wrong-typed field names its row."""
    mapping = task["fields"]
    out = []
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {}
        id_field = mapping.get("id")
        if id_field:
            if row.value.get(id_field) in (None, ""):
                raise JobError(f"{row.where}: field {id_field!r} (id) is missing or empty")
            rec["id"] = str(row.value[id_field])
        else:
            rec["id"] = f"{task['name']}-{role}-{i:06d}"
        for name, source_field in mapping["inputs"].items():
            value = row.value.get(source_field)
            if not isinstance(value, str) or not value.strip():
                raise JobError(f"{row.where}: field {source_field!r} (input {name!r}) is missing or not a non-empty string")
            rec[name] = value
        refs = row.value.get(mapping["references"])
        if isinstance(refs, str):
            refs = [refs]
        if isinstance(refs, dict) and "text" in refs:  # Hub SQuAD layout: {"text": [...], "answer_start": [...]}
            refs = refs["text"]
        if isinstance(refs, list):
            refs = [r.get("text") if isinstance(r, dict) else r for r in refs]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise JobError(f"{row.where}: field {mapping['references']!r} (references) must be a non-empty string or list of non-empty strings")
        rec["references"] = refs
        out.append(rec)
    return out


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


def check_unique_ids(records: list[dict], where: str) -> None:
    seen: set[str] = set()
    for rec in records:
        if rec["id"] in seen:
            raise JobError(f"{where}: id {rec['id']!r} appears more than once")
        seen.add(rec["id"])


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for rec in records:
            out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


@dataclass
class DataSettings:
    task: str
    sizes: list[int]
    seeds: list[int]
    source: str = "remote"  # remote | bundled
    eval_size: int | None = None


def settings_for_sweep(task: str, task_name: str, sweep: dict) -> DataSettings:
    """What a sweep asks of the data step for one task (sizes may differ per task, as in the study)."""
    return DataSettings(task=task, sizes=manifests.sweep_sizes(sweep, task_name), seeds=sweep["seeds"],
                        source=sweep["data"]["source"], eval_size=sweep["data"]["eval_size"])


def prepare(settings: DataSettings, out_dir: Path) -> dict[str, Any]:
    """Write the data folder for one task; returns the ``data.json`` summary."""
    task = manifests.load_task(settings.task)
    if settings.source not in ("remote", "bundled"):
        raise JobError(f"data source {settings.source!r} must be 'remote' or 'bundled'")
    if settings.source == "bundled":
        offline = all(src.get("type") in ("file", "store") for src in task["sources"].values())
        if "bundled" in task:
            sources = {role: {**src, "type": src.get("type", "bundled")} for role, src in task["bundled"].items()}
        elif offline:
            # A user's task on local files needs no network: its own sources are its offline sample.
            print(f"data: task {task['name']} has no bundled sample; using its own local sources", file=sys.stderr)
            sources = task["sources"]
        else:
            raise JobError(f"task {task['name']} ({task['manifest_path']}) has no bundled sample and its sources need "
                           "the network; use --source remote")
    else:
        sources = task["sources"]
    if any(n < 0 for n in settings.sizes):
        raise JobError(f"sizes must be >= 0, got {settings.sizes}")

    eval_all = to_canonical(read_source(sources["eval"], "eval"), task, "eval")
    check_unique_ids(eval_all, f"eval source {sources['eval']['uri']}")
    eval_set = choose_eval(eval_all, settings.eval_size)
    train_all = to_canonical(read_source(sources["train"], "train"), task, "train")
    # The overlap filter uses the whole eval source, not just the capped subset: a later run with a
    # larger cap must not find its eval examples in an earlier training set.
    pool, dropped = build_pool(train_all, eval_all, task)
    if not pool:
        raise JobError(f"task {task['name']}: the training pool is empty after removing duplicates and eval overlap "
                       f"(train source {sources['train']['uri']}: {len(train_all)} rows, dropped {dropped})")
    if not eval_set:
        raise JobError(f"task {task['name']}: the eval source {sources['eval']['uri']} has no rows")

    unique = task["sampling"]["unique_field"]
    sizes = sorted(set(settings.sizes))
    largest = max(sizes) if sizes else 0
    orders = {}
    for seed in settings.seeds:
        order = seed_order(pool, seed, unique)
        if largest > len(order):
            why = f" with distinct {unique!r}" if unique else ""
            raise JobError(f"task {task['name']}: N={largest} is larger than the training pool: at most "
                           f"{len(order)} examples{why} (pool {len(pool)} after de-duplication); lower the largest size")
        orders[seed] = order[:largest]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_public = {k: v for k, v in task.items() if k != "manifest_path"}
    (out_dir / "task.json").write_text(json.dumps(task_public, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _write_jsonl(out_dir / "eval.jsonl", eval_set)
    _write_jsonl(out_dir / "pool.jsonl", pool)
    for seed, order in orders.items():
        for n in sizes:
            if n > 0:
                _write_jsonl(out_dir / "train" / f"seed={seed}" / f"n={n}.jsonl", order[:n])
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file() and p.name != "data.json")
    info = {
        "task": task["name"], "sizes": sizes, "seeds": sorted(settings.seeds), "source": settings.source,
        "eval_count": len(eval_set), "eval_source_count": len(eval_all), "pool_count": len(pool),
        "train_source_count": len(train_all), "dropped": dropped,
        "max_n": {str(seed): len(seed_order(pool, seed, unique)) for seed in settings.seeds},
        "sha256": {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest() for name in files},
    }
    (out_dir / "data.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return info


# --- CLI -------------------------------------------------------------------------------------
@click.command("data", context_settings={"show_default": True})
@click.option("--task", required=True, help="Task name in manifests/tasks (jsquad, xlsum) or a path to a task YAML.")
@click.option("--sweep", default=None, help="Sweep name or YAML: supplies sizes, seeds, eval cap and data source.")
@click.option("--sizes", default=None, help="Comma-separated N values (overrides the sweep), e.g. 0,2,4,8.")
@click.option("--seeds", default=None, help="Comma-separated seeds (overrides the sweep).")
@click.option("--source", type=click.Choice(["remote", "bundled"]), default=None,
              help="remote: the task's Hub/URL/file sources; bundled: the small offline sample shipped with switchpoint.")
@click.option("--eval-size", type=int, default=None, help="Cap on evaluation examples (overrides the sweep).")
@click.option("--store", default=None, help="Store (folder or s3://bucket/prefix): writes STORE/<sweep>/<task>/data/ and _SUCCESS.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write the data folder here instead (default without --store: <ml-root>/processing/output).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(task, sweep, sizes, seeds, source, eval_size, store, out_dir, ml_root):
    """Prepare a task's data: evaluation set, training pool and nested training sets per seed.

    \b
    Inputs : the task manifest's sources (Hub dataset, URL, local file or store URI), or the
             bundled offline sample with --source bundled.
    Outputs: task.json, data.json, eval.jsonl, pool.jsonl, train/seed=S/n=N.jsonl.
    The training set for N is the first N lines of a seeded ordering of the pool, so sets are
    nested and the few-shot shots for N are the same examples. Deterministic for given inputs.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        sweep_def = manifests.load_sweep(sweep) if sweep else None
        task_def = manifests.load_task(task)
        settings = (settings_for_sweep(task, task_def["name"], sweep_def) if sweep_def
                    else DataSettings(task=task, sizes=[0], seeds=[0]))
        # Options given on the command line override the sweep.
        if sizes:
            settings.sizes = _ints(sizes, "--sizes")
        if seeds:
            settings.seeds = _ints(seeds, "--seeds")
        if source:
            settings.source = source
        if eval_size is not None:
            settings.eval_size = eval_size
        if store:
            sweep_name = sweep_def["name"] if sweep_def else "adhoc"
            target = open_store(store).child(sweep_name, task_def["name"], "data")
            with tempfile.TemporaryDirectory(prefix="switchpoint-data-") as tmp:
                info = prepare(settings, Path(tmp))
                target.publish(Path(tmp))
            where = target.uri
        else:
            dest = Path(out_dir) if out_dir else paths.processing_output
            info = prepare(settings, dest)
            where = str(dest)
        click.echo(f"data: {info['task']}: {info['eval_count']} eval, pool {info['pool_count']}, "
                   f"sizes {info['sizes']}, seeds {info['seeds']} -> {where}")

    run_job(paths, body, name="data")


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise JobError(f"{option} {text!r}: expected comma-separated integers") from None
