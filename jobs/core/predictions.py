"""The predictions contract shared by every inference job and the scorer.

One JSON object per (arm, example)::

    {"id": "a1p0q0", "prediction": "小笠原諸島", "references": ["小笠原諸島", "小笠原諸島を除く日本"],
     "arm": {"kind": "finetune", "model": "tiny-gpt-neox", "n": 8, "seed": 0, "variant": null},
     "input_tokens": 412, "output_tokens": 6, "latency_s": 0.031, "error": null}

``prediction`` is post-processed text (stop strings cut, whitespace stripped). ``error`` is null or a
one-line message; a record in error scores 0 and is counted. One file holds one arm, named by
``Arm.filename``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal

from annotated_types import Ge
from pydantic import (
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from switchpoint.core.contract import JobError
from typing_extensions import (
    TypedDict,  # pydantic needs it (not typing.TypedDict) before Python 3.12
)

ARM_KINDS = ("finetune", "fewshot-local", "fewshot-api")

ARM_SCHEMA = {
    "type": "object",
    "required": ["kind", "model", "n", "seed", "variant"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": list(ARM_KINDS)},
        "model": {"type": "string", "minLength": 1},
        "n": {"type": "integer", "minimum": 0},
        "seed": {"type": "integer", "minimum": 0},
        "variant": {"type": ["string", "null"]},
    },
}

PREDICTION_SCHEMA = {
    "type": "object",
    "required": ["id", "prediction", "references", "arm", "input_tokens", "output_tokens", "latency_s", "error"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "prediction": {"type": "string"},
        "references": {"type": "array", "items": {"type": "string"}},
        "arm": ARM_SCHEMA,
        "input_tokens": {"type": ["integer", "null"], "minimum": 0},
        "output_tokens": {"type": ["integer", "null"], "minimum": 0},
        "latency_s": {"type": ["number", "null"], "minimum": 0},
        "error": {"type": ["string", "null"]},
    },
}


@dataclass(frozen=True, order=True)
class Arm:
    """What produced a prediction: fine-tuned or prompted, which model, N examples, which seed."""

    kind: str
    model: str
    n: int
    seed: int
    variant: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ARM_KINDS:
            raise JobError(f"arm kind {self.kind!r} is not one of {', '.join(ARM_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Arm":
        return cls(value["kind"], value["model"], int(value["n"]), int(value["seed"]), value.get("variant"))

    @property
    def filename(self) -> str:
        """``finetune__tiny-gpt-neox__n=8__seed=0.jsonl``; the variant, when set, comes last."""
        model = self.model.replace("/", "_")
        tail = f"__{self.variant}" if self.variant else ""
        return f"{self.kind}__{model}__n={self.n}__seed={self.seed}{tail}.jsonl"

    @property
    def label(self) -> str:
        tail = f" [{self.variant}]" if self.variant else ""
        return f"{self.kind} {self.model} n={self.n} seed={self.seed}{tail}"


def prediction_record(arm: Arm, example_id: str, prediction: str, references: list[str], *,
                      input_tokens: int | None = None, output_tokens: int | None = None,
                      latency_s: float | None = None, error: str | None = None) -> dict[str, Any]:
    return {
        "id": str(example_id),
        "prediction": prediction,
        "references": list(references),
        "arm": arm.to_dict(),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "latency_s": None if latency_s is None else round(float(latency_s), 6),
        "error": None if error is None else " ".join(str(error).split()),
    }


@with_config(ConfigDict(extra="forbid", strict=True))
class _ArmFields(TypedDict):
    kind: Literal["finetune", "fewshot-local", "fewshot-api"]
    model: Annotated[str, StringConstraints(min_length=1)]
    n: Annotated[int, Ge(0)]
    seed: Annotated[int, Ge(0)]
    variant: str | None


@with_config(ConfigDict(extra="forbid", strict=True))
class _RecordFields(TypedDict):
    id: Annotated[str, StringConstraints(min_length=1)]
    prediction: str
    references: list[str]
    arm: _ArmFields
    input_tokens: Annotated[int, Ge(0)] | None
    output_tokens: Annotated[int, Ge(0)] | None
    latency_s: Annotated[float, Ge(0)] | None
    error: str | None


# PREDICTION_SCHEMA as a compiled pydantic-core validator: parsing and checking a line in one pass is
# several times faster than json.loads plus a Python walk, and records are checked once, where they
# enter a job. (The JSON schema stays the contract's readable form and gives the error messages.)
_RECORD = TypeAdapter(_RecordFields)


def parse_record(line: str | bytes, where: str) -> dict[str, Any]:
    """One predictions line, parsed and checked against the contract; errors name ``where`` and the field."""
    try:
        return _RECORD.validate_json(line)
    except ValidationError:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise JobError(f"{where}: not valid JSON ({err.msg})") from None
        raise _contract_error(record, where) from None


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(PREDICTION_SCHEMA)


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it meets the contract (the same compiled check readers use), else a JobError."""
    try:
        _RECORD.validate_python(record)
    except ValidationError:
        raise _contract_error(record, where) from None
    return record


def _contract_error(record: Any, where: str) -> JobError:
    """The error for a record that fails the contract: the field and what was expected, in the JSON
    schema's words (readable), else a general sentence (a value only the strict check refuses)."""
    errors = list(_validator().iter_errors(record))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(record)"
        return JobError(f"{where}: field {field}: {err.message}")
    return JobError(f"{where}: not a predictions record (strict types: integers, not 3.0; see core/predictions.py)")


def write_predictions(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Validate and write one arm's records (atomically: a killed job leaves no partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    count = 0
    with tmp.open("w", encoding="utf-8") as out:
        for i, record in enumerate(records, start=1):
            check_record(record, f"{path} record {i}")
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def iter_predictions(path: Path, display: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each line, checked once against the contract; malformed JSON or a
    violation names file:line (``display``: the name to use for the file, e.g. its store URI)."""
    path = Path(path)
    name = display or str(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise JobError(f"{name}: cannot read ({err.strerror or err})") from err
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield lineno, parse_record(line, f"{name}:{lineno}")


def read_predictions(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in iter_predictions(path)]


def prediction_files(path: Path) -> list[Path]:
    """A predictions file, or every ``*.jsonl`` under a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        if not files:
            raise JobError(f"{path}: folder holds no predictions (*.jsonl) files")
        return files
    if not path.exists():
        raise JobError(f"{path}: no such predictions file or folder")
    return [path]
