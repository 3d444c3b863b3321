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

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

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
    return {str(k): v if isinstance(v, str) else encode_value(v) for k, v in raw.items()}


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
