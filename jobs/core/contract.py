"""The job contract: SageMaker's container layout, with a movable root.

Every job reads its inputs from and writes its outputs to the folders below, whether it runs in a
venv, under ``docker run -v …:/opt/ml`` or as a SageMaker training/processing job. Orchestration only
moves folders in and out of the store; a job never knows who runs it.

    <root>/input/config/hyperparameters.json   settings, every value a string (training jobs)
    <root>/input/data/<channel>/               training-job inputs
    <root>/model/                              final model artefacts (-> model.tar.gz)
    <root>/checkpoints/                        synced to S3 uncompressed, restored after spot stops
    <root>/output/data/                        other training outputs (-> output.tar.gz)
    <root>/output/failure                      one-line reason when the job fails
    <root>/processing/input/<name>/            processing-job inputs
    <root>/processing/output/                  processing-job outputs

The root is ``/opt/ml`` unless ``SWITCHPOINT_ML_ROOT`` or a job's ``--ml-root`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

DEFAULT_ROOT = "/opt/ml"


class JobError(Exception):
    """A failure the user can act on: the message is one line naming what, where and what to do."""


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

    def processing_input(self, name: str) -> Path:
        return self.root / "processing" / "input" / name

    @property
    def processing_output(self) -> Path:
        return self.root / "processing" / "output"


def job_paths(root: str | Path | None = None) -> JobPaths:
    """The contract folders under ``root``, else ``$SWITCHPOINT_ML_ROOT``, else ``/opt/ml``."""
    chosen = root if root not in (None, "") else os.environ.get("SWITCHPOINT_ML_ROOT", DEFAULT_ROOT)
    return JobPaths(Path(chosen).expanduser().resolve())


def read_hyperparameters(paths: JobPaths) -> dict[str, str]:
    """SageMaker's hyperparameters.json (all values strings); empty when the file is absent."""
    path = paths.hyperparameters
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: not readable as JSON ({err})") from err
    if not isinstance(raw, dict):
        raise JobError(f"{path}: expected a JSON object of hyperparameters, got {type(raw).__name__}")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def write_hyperparameters(paths: JobPaths, values: Mapping[str, Any]) -> dict[str, str]:
    """Write settings the way SageMaker delivers them: every value a string of at most 256 chars."""
    encoded = {k: encode_value(v) for k, v in values.items() if v is not None}
    for key, text in encoded.items():
        if len(text) > 256:
            raise JobError(f"hyperparameter {key!r} is {len(text)} characters long; SageMaker allows 256")
    paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters.write_text(json.dumps(encoded, indent=2, sort_keys=True), encoding="utf-8")
    return encoded


def encode_value(value: Any) -> str:
    """One setting as a hyperparameter string: lists as comma-separated, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(encode_value(v) for v in value)
    return str(value)


S = TypeVar("S")


def typed_settings(cls: type[S], raw: Mapping[str, Any], source: str) -> S:
    """Parse string (or already typed) values into the dataclass ``cls``.

    Unknown keys and unparsable values raise JobError naming ``source`` and the key, because a
    misspelt hyperparameter silently falling back to a default would waste a GPU job.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    aliases = {name.replace("_", "-"): name for name in fields}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = aliases.get(key, key)
        if name not in fields:
            raise JobError(f"{source}: unknown setting {key!r}; expected one of {', '.join(sorted(fields))}")
        if value is None:
            continue
        try:
            values[name] = _parse(value, hints[name])
        except (TypeError, ValueError) as err:
            raise JobError(f"{source}: setting {key!r}={value!r} is not a valid {_type_name(hints[name])}") from err
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise JobError(f"{source}: missing required setting(s) {', '.join(missing)}")
    return cls(**values)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return _parse(value, inner[0])
    if origin in (list, tuple):
        (item_type, *_) = args or (str,)
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        else:
            items = list(value)
        return [_parse(v, item_type) for v in items]
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(value)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    return value


def settings_from(cls: type[S], paths: JobPaths, cli_values: Mapping[str, Any]) -> S:
    """Settings from hyperparameters.json, overridden by options given on the command line."""
    merged: dict[str, Any] = dict(read_hyperparameters(paths))
    merged.update({k: v for k, v in cli_values.items() if v is not None and v != ()})
    return typed_settings(cls, merged, source=f"settings ({paths.hyperparameters} + command line)")


def run_job(paths: JobPaths, body: Callable[[], None], *, name: str) -> None:
    """Run a job body; on failure write its one-line reason to the failure file and exit 1.

    JobError messages are for users and are printed as they are; any other exception is a bug or an
    environment problem, so its traceback goes to stderr and its last line to the failure file.
    """
    try:
        body()
    except JobError as err:
        _fail(paths, f"{name}: {err}")
    except KeyboardInterrupt:
        _fail(paths, f"{name}: interrupted")
    except Exception as err:  # noqa: BLE001 - the contract wants every failure written down
        traceback.print_exc()
        _fail(paths, f"{name}: {type(err).__name__}: {err}".splitlines()[0])


def _fail(paths: JobPaths, reason: str) -> None:
    reason = " ".join(reason.split())
    if paths.root.exists():  # only inside a job layout; a plain CLI run must not create /opt/ml
        try:
            paths.failure.parent.mkdir(parents=True, exist_ok=True)
            paths.failure.write_text(reason + "\n", encoding="utf-8")
        except OSError:
            pass
    print(f"error: {reason}", file=sys.stderr)
    raise SystemExit(1)
