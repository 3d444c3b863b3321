"""Reading a data folder written by the ``data`` job: every later job's view of its ``data`` channel.

The layout (``task.json``, ``data.json``, ``eval.jsonl``, ``pool.jsonl``, ``train/seed=S/n=N.jsonl``)
is the data job's output contract; these readers live in the core so that jobs depend on the
contract, not on the data job.
"""

from __future__ import annotations

import json
from pathlib import Path

from switchpoint.core.contract import JobError


def read_jsonl(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise JobError(f"{path}: cannot read ({err.strerror or err}); is this the output of `switchpoint data`?") from err
    out = []
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise JobError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    return out


def _read_object(path: Path) -> dict:
    """A JSON object the data job wrote; a missing or damaged file is a one-line error naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise JobError(f"{path}: missing; the data channel must be the output of `switchpoint data`") from err
    except json.JSONDecodeError as err:
        raise JobError(f"{path}: not valid JSON ({err.msg}); re-run the data step") from err
    if not isinstance(value, dict):
        raise JobError(f"{path}: expected a JSON object; re-run the data step")
    return value


def load_task_from_data(data_dir: Path) -> dict:
    return _read_object(Path(data_dir) / "task.json")


def data_info(data_dir: Path) -> dict:
    return _read_object(Path(data_dir) / "data.json")


def read_eval_set(data_dir: Path) -> list[dict]:
    return read_jsonl(Path(data_dir) / "eval.jsonl")


def read_train_set(data_dir: Path, seed: int, n: int) -> list[dict]:
    """The N training examples of ``seed`` (also the N few-shot shots, in order); [] for N=0."""
    if n == 0:
        return []
    path = Path(data_dir) / "train" / f"seed={seed}" / f"n={n}.jsonl"
    if not path.exists():
        info = data_info(data_dir)
        raise JobError(f"{path}: no training set for seed={seed}, N={n}; the data job prepared sizes "
                       f"{info.get('sizes')} and seeds {info.get('seeds')}")
    return read_jsonl(path)


# --- the run's resolved manifests, carried in the data folder -----------------------------------
MODELS_FILE = "models.json"  # {"models": {name: entry}, "api_models": {name: entry}} of the sweep
SWEEP_FILE = "sweep.json"  # the resolved sweep the data folder was prepared for


def _resolved(data_dir: Path, name: str) -> dict | None:
    path = Path(data_dir) / name
    return _read_object(path) if path.exists() else None


def model_entry(data_dir: Path, name: str) -> dict:
    """A model's manifest entry as the sweep resolved it (a user's own model travels with the data
    folder, never as a host path); the packaged models.yaml for a data folder without one."""
    resolved = _resolved(data_dir, MODELS_FILE)
    if resolved is not None and name in resolved.get("models", {}):
        return {**resolved["models"][name], "name": name}
    from switchpoint.core.manifests import get_model

    return get_model(name)


def api_model_entry(data_dir: Path, name: str) -> dict:
    """An API model's manifest entry as the sweep resolved it (else the packaged api_models.yaml)."""
    resolved = _resolved(data_dir, MODELS_FILE)
    if resolved is not None and name in resolved.get("api_models", {}):
        return {**resolved["api_models"][name], "name": name}
    from switchpoint.core.manifests import get_api_model

    return get_api_model(name)


def resolved_sweep(data_dir: Path) -> dict | None:
    """The sweep this data folder was prepared for (None when the data job ran without one)."""
    return _resolved(data_dir, SWEEP_FILE)
