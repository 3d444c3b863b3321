"""The score job's inputs: the task, the predictions files (local, folders, store URIs), read and
validated once here, where records enter the scorer, and cross-checked against the data folder."""

from __future__ import annotations

import gc
import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import load_task_from_data, read_jsonl
from switchpoint.core.predictions import Arm, iter_predictions, prediction_files
from switchpoint.core.store import open_store
from switchpoint.score import metrics


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
    entries: dict[tuple, ArmRecords] = {}  # by the arm's field values: cheaper to hash than an Arm
    order: list[tuple[Arm, int]] = []
    with _collector_paused():
        for source in inputs:
            _read_file(source, entries, order)
    return {entry.arm: entry for entry in entries.values()}, order


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Records are acyclic (dicts, lists, strings): while tens of thousands are read, Python's cyclic
    collector would walk the growing heap again and again for nothing (about half the reading time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_file(source: InputFile, entries: dict[tuple, ArmRecords], order: list[tuple[Arm, int]]) -> None:
    for lineno, record in iter_predictions(source.path, source.display):
        where = f"{source.display}:{lineno}"
        fields = record["arm"]
        key = (fields["kind"], fields["model"], fields["n"], fields["seed"], fields["variant"])
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = ArmRecords(Arm.from_dict(fields), fields)
        if source.display not in entry.files:
            entry.files.append(source.display)
        _add_record(entry, record, where)
        order.append((entry.arm, len(entry.ids) - 1))


def _add_record(entry: ArmRecords, record: dict, where: str) -> None:
    refs = record["references"]
    if not any(map(str.strip, refs)):
        raise JobError(f"{where}: field references is empty; every record needs at least one "
                       "non-empty reference (re-run the inference job on the data folder)")
    rid = record["id"]
    if rid in entry.first_seen:
        raise JobError(f"{where}: id {rid!r} appears twice for arm '{entry.arm.label}' (first at "
                       f"{entry.first_seen[rid]}); give each arm's predictions once")
    entry.first_seen[rid] = where
    entry.ids.append(rid)
    entry.predictions.append(record["prediction"])
    entry.references.append(refs)
    entry.errors.append(record["error"] is not None)


def eval_references(task_spec: str) -> tuple[Path, dict[str, list[str]]] | None:
    """(eval.jsonl, id -> references) when the task was given as a data folder (or its task.json)."""
    path = Path(task_spec)
    folder = path if path.is_dir() else path.parent if path.name == "task.json" else None
    if folder is None or not (folder / "eval.jsonl").exists():
        return None
    eval_path = folder / "eval.jsonl"
    return eval_path, {str(r["id"]): list(r["references"]) for r in read_jsonl(eval_path)}


def check_against_eval(arms: dict[Arm, ArmRecords], eval_path: Path, references: dict[str, list[str]]) -> None:
    """Every prediction's id must be in the data folder's eval.jsonl, with the same references.

    A file none of whose ids are in eval.jsonl is another task's (or another data folder's) predictions."""
    for arm in sorted(arms, key=arm_key):
        entry = arms[arm]
        foreign = [i for i in entry.ids if i not in references]
        if foreign and len(foreign) == len(entry.ids):
            raise JobError(f"{entry.files[0]}: none of its ids are in {eval_path} (first: {foreign[0]!r}); predictions "
                           "of another task or data folder are mixed in; score them with their own --task")
        for rid, refs in zip(entry.ids, entry.references):
            if rid not in references:
                raise JobError(f"{entry.first_seen[rid]}: id {rid!r} is not in {eval_path}; these predictions were "
                               "not made from this data folder")
            if list(refs) != references[rid]:
                raise JobError(f"{entry.first_seen[rid]}: id {rid!r}: references {refs!r} differ from {eval_path}'s "
                               f"{references[rid]!r}; re-run the inference job on this data folder")


def check_foreign_arms(arms: dict[Arm, ArmRecords]) -> None:
    """Without a data folder: an arm sharing no id with the ids most arms share is another task's predictions."""
    if len(arms) < 2:
        return
    counts = Counter(frozenset(e.ids) for e in arms.values())
    common = max(counts, key=lambda ids: (counts[ids], len(ids), sorted(ids)))
    rivals = [ids for ids in counts if counts[ids] == counts[common] and ids != common and not ids & common]
    if rivals:  # as many arms on a disjoint id set: no telling which task is the genuine one
        files = sorted({f for e in arms.values() if frozenset(e.ids) in (common, *rivals) for f in e.files[:1]})
        raise JobError(f"{', '.join(files)}: these predictions share no example id with each other; predictions of "
                       "different tasks are mixed in; score each task with its own --task (a data folder checks every id)")
    for arm in sorted(arms, key=arm_key):
        entry = arms[arm]
        if not common & set(entry.ids):
            raise JobError(f"{entry.files[0]}: arm '{arm.label}' shares no example id with the other arms (e.g. "
                           f"{entry.ids[0]!r}); predictions of another task are mixed in; score them with their own "
                           "--task, or give the data folder as --task to check every id")


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


