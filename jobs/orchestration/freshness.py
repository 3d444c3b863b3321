"""Which inputs and settings produced a step's output, so a stale output is never taken as done.

A step's fingerprint holds its resolved settings (job, image, arguments, hyperparameters, input
prefixes) and the digest of every upstream step's ``_SUCCESS`` (its files, sizes, hashes and its own
fingerprint, so a change anywhere upstream reaches every step below it). The runners write it into
the step's marker; ``run`` compares it with the marker in the store before skipping a step.

Policy (docs/DESIGN.md): a complete step whose fingerprint differs is **run again**, with one line
saying what changed. Re-running is safe because every job resumes from what is still valid (train
skips adapters whose base and training set are unchanged, infer-bedrock reuses answers it already
paid for). ``--force`` runs a step again even when nothing changed.

The data step runs in-process, so its fingerprint is computed from what it reads: its settings,
the task manifest and the bytes of its local source files (files of the task, the bundled sample,
or objects in the store by size). Sources on the Hub or at a URL are identified by their URI only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import SWEEP_FILE
from switchpoint.core.store import Store, open_store
from switchpoint.orchestration.steps import Step


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _overlaps(a: str, b: str) -> bool:
    """True when one store prefix contains the other ('' is the whole run)."""
    return a == "" or b == "" or a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream(step: Step, steps: list[Step]) -> list[Step]:
    """The earlier steps whose output lies in (or holds) one of ``step``'s input prefixes."""
    return [s for s in steps if s.stage < step.stage and any(_overlaps(p, s.output) for p in step.inputs.values())]


def image_identity(step: Step, sweep: dict) -> str:
    """The image a step runs in, independent of the registry it is pulled from."""
    from switchpoint import __version__

    return sweep.get("images", {}).get(step.image) or f"switchpoint-{step.image}:{__version__}"


def fingerprint(settings: dict[str, Any], inputs: dict[str, str | None]) -> dict[str, Any]:
    return {"digest": _digest({"settings": settings, "inputs": inputs}), "settings": settings, "inputs": inputs}


def step_fingerprint(step: Step, run: Store, steps: list[Step], sweep: dict) -> dict[str, Any]:
    """The fingerprint of a job step from its settings and its upstream steps' markers as they are now.

    The data folder's copy of the sweep (sweep.json) counts only for the report, which reads it:
    every other step's own settings are in its arguments or hyperparameters already, so editing,
    say, the score section does not retrain the models.
    """
    settings = {"job": step.job, "image": image_identity(step, sweep), "args": list(step.args),
                "hyperparameters": dict(step.hyperparameters), "inputs": dict(step.inputs)}
    exclude = () if step.job == "report" else (SWEEP_FILE,)
    return fingerprint(settings, {s.name: run.child(s.output).marker_digest(exclude) for s in upstream(step, steps)})


def _as_dict(settings: Any) -> dict[str, Any]:
    if hasattr(settings, "model_dump"):
        return settings.model_dump(mode="json")
    if dataclasses.is_dataclass(settings):
        return dataclasses.asdict(settings)
    return dict(settings)


def _source_identity(source: dict) -> dict[str, Any]:
    """What identifies a source's content without the network: bytes of files, sizes of store objects."""
    kind, uri = source.get("type", "file"), str(source.get("uri", ""))
    ident: dict[str, Any] = {"type": kind, "uri": uri, "format": source.get("format")}
    if kind in ("file", "bundled"):
        path = Path(uri) if kind == "file" else manifests.bundled_dir() / uri
        try:
            ident["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise JobError(f"data source {path}: cannot read ({err.strerror or err})") from err
    elif kind == "store":
        parent, _, name = uri.rstrip("/").rpartition("/")
        ident["size"] = open_store(parent).sizes(name).get(name)
    return ident


def data_fingerprint(settings: Any, task: dict, carried: dict[str, Any]) -> dict[str, Any]:
    """The data step's fingerprint: its settings, the task manifest, what the folder carries of the
    sweep (``carried``: the public sweep and its models' entries) and the identity of its sources."""
    values = _as_dict(settings)
    bundled = values.get("source") == "bundled" and "bundled" in task
    sources = {role: {**src, "type": src.get("type", "bundled")} for role, src in task["bundled"].items()} \
        if bundled else task["sources"]
    public_task = {k: v for k, v in task.items() if k != "manifest_path"}
    return fingerprint({"job": "data", "settings": values, "task": public_task, "carried": carried},
                       {f"source:{role}": _digest(_source_identity(src)) for role, src in sorted(sources.items())})


def what_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """One line naming what differs between the marker's fingerprint and the current one (None: same)."""
    if old is None:
        return ("its marker records no fingerprint (published outside `switchpoint run`, e.g. by "
                "`switchpoint data --store`, or by an older version)")
    if old.get("digest") == new["digest"]:
        return None
    changed = [f"input {name}" for name in sorted(set(old.get("inputs", {})) | set(new["inputs"]))
               if old.get("inputs", {}).get(name) != new["inputs"].get(name)]
    settings = _diff("", old.get("settings", {}), new["settings"])
    changed += settings[:4] + ([f"(+{len(settings) - 4} more)"] if len(settings) > 4 else [])
    return ", ".join(changed) or "its fingerprint"


def _diff(path: str, old: Any, new: Any) -> list[str]:
    """``key.sub old -> new`` for every leaf that differs (dicts are descended, other values compared)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str) if old.get(key) != new.get(key)
                for line in _diff(f"{path}.{key}" if path else str(key), old.get(key), new.get(key))]
    return [f"{path} {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
