"""Declarative parts of a study: tasks, open models, API models, prices and sweeps.

Each manifest is YAML validated against a JSON schema; an error names the file, the key and what
was expected. Manifests ship inside the package (see pyproject's force-include), so an image that
installed the wheel finds them; in a source checkout they are read from ``<repo>/manifests``.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from switchpoint.core.contract import JobError

# The schemas live in their own module; callers also name them as manifests.*_SCHEMA.
from switchpoint.core.schemas import (
    API_MODELS_SCHEMA,
    MODELS_SCHEMA,
    PRICES_SCHEMA,
    SWEEP_SCHEMA,
    TASK_SCHEMA,
)


def manifest_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # switchpoint/ (jobs/ in a checkout)
    # A wheel carries manifests/ inside the package; an editable install reads the checkout's.
    for candidate in (package / "manifests", package.parent / "manifests"):
        if (candidate / "models.yaml").exists():
            return candidate
    raise JobError(f"cannot find the manifests folder next to {package}; reinstall switchpoint")


def bundled_dir() -> Path:
    """Small data subsets shipped for offline runs (license and source beside each)."""
    return manifest_dir() / "data"


class ManifestError(JobError):
    pass



# --- loading ---------------------------------------------------------------------------------
def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from err


def validate(value: Any, schema: dict, path: Path | str) -> Any:
    """Validate against ``schema``; the first error becomes one line naming file, key and expectation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            expected = sorted(err.schema.get("properties", {}))
            what = f"unknown key(s) {', '.join(map(repr, extra))}; expected one of {', '.join(expected)}"
        elif err.validator == "required":
            what = err.message.replace("is a required property", "is required but missing")
        else:
            what = err.message
        raise ManifestError(f"{path}: at {key}: {what}")
    return value


def _resolve(name_or_path: str | Path, folder: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ManifestError(f"{candidate}: no such manifest file")
        return candidate
    packaged = manifest_dir() / folder / f"{name_or_path}.yaml"
    if not packaged.exists():
        known = sorted(p.stem for p in (manifest_dir() / folder).glob("*.yaml"))
        raise ManifestError(f"unknown {folder[:-1]} {str(name_or_path)!r}; known: {', '.join(known)} (or give a path to a .yaml file)")
    return packaged


def load_task(name_or_path: str | Path) -> dict:
    """A task manifest by name (``jsquad``) or path (``my_task.yaml``), validated, defaults filled.

    Relative ``file`` source URIs are resolved against the manifest's folder, so a user's task is a
    YAML file next to its JSONL data.
    """
    path = _resolve(name_or_path, "tasks")
    task = validate(read_yaml(path), TASK_SCHEMA, path)
    task = copy.deepcopy(task)
    task.setdefault("description", "")
    task.setdefault("sampling", {}).setdefault("unique_field", None)
    task["generation"].setdefault("stop", [])
    task["prompt"].setdefault("truncate_field", None)
    task["prompt"].setdefault("variants", {})
    task.setdefault("primary_metric", task["metrics"][0])
    for role in ("sources", "bundled"):
        for source in task.get(role, {}).values():
            source.setdefault("type", "file")
            if source["type"] == "file" and not Path(source["uri"]).is_absolute():
                source["uri"] = str((path.parent / source["uri"]).resolve())
    _check_task_fields(task, path)
    task["manifest_path"] = str(path)
    task["store_key"] = task_store_key(task["name"], path)
    return task


def task_store_key(name: str, path: Path) -> str:
    """The task's folder in the store: its name for a packaged task, else its name and a hash of the
    manifest's bytes, so two task files with the same ``name:`` never share (and overwrite) a folder."""
    if Path(path).resolve() == (manifest_dir() / "tasks" / f"{name}.yaml").resolve():
        return name
    return f"{name}-{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]}"


def _check_task_fields(task: dict, path: Path) -> None:
    import string

    inputs = set(task["fields"]["inputs"])
    used = {f for _, f, _, _ in string.Formatter().parse(task["prompt"]["input_template"]) if f}
    unknown = used - inputs
    if unknown:
        raise ManifestError(f"{path}: at prompt.input_template: placeholder(s) {sorted(unknown)} are not in fields.inputs {sorted(inputs)}")
    trunc = task["prompt"]["truncate_field"]
    if trunc is not None and trunc not in inputs:
        raise ManifestError(f"{path}: at prompt.truncate_field: {trunc!r} is not in fields.inputs {sorted(inputs)}")
    unique = task["sampling"]["unique_field"]
    if unique is not None and unique not in inputs:
        raise ManifestError(f"{path}: at sampling.unique_field: {unique!r} is not in fields.inputs {sorted(inputs)}")
    from switchpoint.core.metric_names import KNOWN_METRICS

    for metric in task["metrics"]:
        if metric not in KNOWN_METRICS:
            raise ManifestError(f"{path}: at metrics: unknown metric {metric!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
    if task["primary_metric"] not in task["metrics"]:
        raise ManifestError(f"{path}: at primary_metric: {task['primary_metric']!r} is not one of metrics")


MODEL_NAME = r"[a-z0-9][a-z0-9._-]*"
TINY_FAMILIES = ("gpt_neox", "llama")  # the families core/tiny.py builds
MODEL_ENTRY_SCHEMA: dict[str, Any] = MODELS_SCHEMA["properties"]["models"]["additionalProperties"]


def _check_model(name: str, entry: dict, where: str) -> dict:
    if entry["source"] == "hub" and "hub_id" not in entry:
        raise ManifestError(f"{where}: model {name!r}: source 'hub' needs hub_id")
    if entry["source"] == "local" and "path" not in entry:
        raise ManifestError(f"{where}: model {name!r}: source 'local' needs path")
    if entry["source"] == "tiny" and entry["family"] not in TINY_FAMILIES:
        raise ManifestError(f"{where}: model {name!r}: a tiny model's family must be one of {', '.join(TINY_FAMILIES)}, "
                            f"got {entry['family']!r}")
    return entry


def load_models(path: Path | None = None) -> dict[str, dict]:
    path = path or manifest_dir() / "models.yaml"
    models = validate(read_yaml(path), MODELS_SCHEMA, path)["models"]
    for name, entry in models.items():
        _check_model(name, entry, f"{path}: at models.{name}")
        entry["name"] = name
    return models


def get_model(name: str, path: Path | None = None) -> dict:
    models = load_models(path)
    if name not in models:
        raise ManifestError(f"unknown model {name!r}; known in models.yaml: {', '.join(sorted(models))}")
    return models[name]


def load_api_models(path: Path | None = None) -> dict[str, dict]:
    path = path or manifest_dir() / "api_models.yaml"
    models = validate(read_yaml(path), API_MODELS_SCHEMA, path)["api_models"]
    for name, entry in models.items():
        entry["name"] = name
    return models


def get_api_model(name: str, path: Path | None = None) -> dict:
    models = load_api_models(path)
    if name not in models:
        raise ManifestError(f"unknown API model {name!r}; known in api_models.yaml: {', '.join(sorted(models))}")
    return models[name]


def load_prices(path: Path | None = None) -> dict:
    path = path or manifest_dir() / "prices.yaml"
    return validate(read_yaml(path), PRICES_SCHEMA, path)


SWEEP_DEFAULTS: dict[str, Any] = {
    "tasks": [],
    "data": {"source": "remote", "eval_size": None, "sizes": {}},
    "api_models": [],
    "fewshot_local": {"enabled": False, "shots": []},
    "fewshot_api": {"shots": None, "variants": {}, "mode": "auto", "max_usd": None, "role_arn": None,
                    "s3_prefix": None, "region": None},
    # Only where jobs run: the train and infer-local jobs' own settings take their defaults from the
    # jobs' settings models (switchpoint.train.settings, switchpoint.infer_local.settings).
    "train": {"instance_type": "ml.g5.2xlarge", "spot": False, "max_runtime_s": 86400},
    "infer": {"instance_type": "ml.g5.2xlarge"},
    "score": {"bootstrap": 10000, "instance_type": "ml.m5.xlarge"},
    "adaptive": {"enabled": False, "margin": 1.0, "max_gpu_hours": None, "max_usd": None},
    "images": {},
    "sagemaker": {"role_arn": None, "region": None, "volume_gb": 100},
}


def load_sweep(name_or_path: str | Path, models_file: str | Path | None = None) -> dict:
    """A sweep by name (``smoke``) or path, validated, with every section's defaults filled.

    ``models`` may name packaged models or define a user's own (a mapping with ``name`` and the
    fields of a models.yaml entry); ``models_file`` (a YAML in models.yaml's shape) adds more. The
    resolved entries travel as ``sweep["model_entries"]`` / ``sweep["api_model_entries"]`` and, from
    the data step on, in the data folder's models.json: no job reads them from a host path.
    """
    path = _resolve(name_or_path, "sweeps")
    raw = validate(read_yaml(path), SWEEP_SCHEMA, path)
    sweep = copy.deepcopy(SWEEP_DEFAULTS)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(sweep.get(key), dict):
            sweep[key].update(value)
        else:
            sweep[key] = value
    sweep["sizes"] = sorted(sweep["sizes"])
    known_models = load_models()
    if models_file is not None:
        known_models.update(load_models(Path(models_file)))
    sweep["models"], sweep["model_entries"] = _resolve_models(sweep["models"], known_models, path)
    known_api = load_api_models()
    for name in sweep["api_models"]:
        if name not in known_api:
            raise ManifestError(f"{path}: at api_models: unknown API model {name!r}; known: {', '.join(sorted(known_api))}")
    sweep["api_model_entries"] = {name: known_api[name] for name in sweep["api_models"]}
    sweep["manifest_path"] = str(path)
    return sweep


def _resolve_models(items: list, known: dict[str, dict], path: Path) -> tuple[list[str], dict[str, dict]]:
    """Names and entries of a sweep's ``models`` list (names of known models, or own entries)."""
    names: list[str] = []
    entries: dict[str, dict] = {}
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item not in known:
                raise ManifestError(f"{path}: at models: unknown model {item!r}; known: {', '.join(sorted(known))} "
                                    "(or define your own: {name: ..., source: hub, hub_id: ..., revision: ..., ...})")
            name, entry = item, copy.deepcopy(known[item])
        else:
            own = dict(item)
            name = own.pop("name", None)
            if not isinstance(name, str) or not re.fullmatch(MODEL_NAME, name):
                raise ManifestError(f"{path}: at models.{i}.name: an own model needs a name matching {MODEL_NAME}")
            validate(own, MODEL_ENTRY_SCHEMA, f"{path} (models.{i})")
            entry = _check_model(name, own, f"{path}: at models.{i}")
        if name in entries:
            raise ManifestError(f"{path}: at models.{i}: model {name!r} is listed twice")
        names.append(name)
        entries[name] = {**entry, "name": name}
    return names, entries


def seeds_at(n: int, seeds: list[int], seeds_up_to_n: int | None) -> list[int]:
    """The seeds drawn at size ``n``: all of them up to ``seeds_up_to_n``, the smallest beyond it.

    Which N examples are drawn matters most at small N; at large N the draw averages out and a
    second seed costs as much as the first, so a sweep may stop repeating seeds there.
    """
    if seeds_up_to_n is None or n <= seeds_up_to_n:
        return list(seeds)
    return [min(seeds)] if seeds else []


def prepared_sizes(sweep: dict, task_name: str) -> list[int]:
    """Every size the data step must prepare for one task: training sizes and every shot count of the
    few-shot arms (few-shot-local when enabled, few-shot-API when the sweep has API models)."""
    sizes = set(sweep_sizes(sweep, task_name))
    if sweep["fewshot_local"]["enabled"]:
        sizes.update(sweep["fewshot_local"]["shots"] or [])
    if sweep["api_models"]:
        shots = sweep["fewshot_api"]["shots"]
        sizes.update(shots if shots is not None else sweep_sizes(sweep, task_name))
    return sorted(sizes)


def sweep_sizes(sweep: dict, task_name: str) -> list[int]:
    """Sizes for one task: ``data.sizes.<task>`` when given (XLSum stops at 1024 in the study), else ``sizes``."""
    return sorted(sweep["data"]["sizes"].get(task_name, sweep["sizes"]))
