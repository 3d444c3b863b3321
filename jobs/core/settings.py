"""One settings mechanism for every job: a typed pydantic model per job, read from any source.

A job's settings arrive as SageMaker hyperparameters (every value a string), as command-line
options, or as a sweep's section (YAML values). Each job declares them once, as a subclass of
``JobSettings`` whose fields carry the type, the default, the allowed range and the help text:

    class Settings(JobSettings):
        epochs: int = Field(3, ge=1, description="Passes over the N examples.")

From that one declaration come the parser (``load_settings``: merges sources, coerces strings, and
names the key and the source of a bad value), the click options (``options``: so ``--help`` shows
the model's own default), the hyperparameters a runner writes (``hyperparameters``) and the JSON
schema a manifest section is validated with (``Settings.model_json_schema()``). Pydantic v2 is
used because it already does typed coercion, ranges and schema generation well (see docs/DESIGN.md).
"""

from __future__ import annotations

import json
import typing
from typing import Any, Callable, Mapping, TypeVar

import click
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.fields import FieldInfo
from switchpoint.core.contract import JobError, encode_value

S = TypeVar("S", bound="JobSettings")
F = TypeVar("F", bound=Callable[..., Any])
NULLS = ("", "none", "null")
COMMAND_LINE = "command line"  # the source name under which errors show --option names


def _is_list(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (list, tuple) or any(_is_list(a) for a in args if a is not type(None))


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or bool in typing.get_args(annotation)


class JobSettings(BaseModel):
    """Base of every job's settings: unknown keys are errors (a misspelt key must not fall back to a
    default and waste a GPU job), floats must be finite, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              validate_default=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _from_strings(cls, value: Any, info: Any) -> Any:
        """SageMaker delivers every hyperparameter as a string: "none" is None, lists are comma-separated."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in NULLS and type(None) in typing.get_args(annotation):
                return None
            if _is_list(annotation):
                return [v.strip() for v in text.split(",") if v.strip()] if text else []
            return text
        return value


def load_settings(cls: type[S], *sources: tuple[str, Mapping[str, Any]]) -> S:
    """Settings from ``sources`` ((where, values) pairs, later ones win; None means "not given").

    A key may be spelt with dashes or underscores. An error names the key, the value, the source it
    came from and what was expected, as one line.
    """
    fields = cls.model_fields
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, values in sources:
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise JobError(f"{where}: unknown setting {key!r}; expected one of {', '.join(sorted(fields))}")
            if value is None or value == ():
                continue
            merged[name], origin[name] = value, where
    try:
        return cls(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        where = origin.get(name, "settings")
        label = option_name(name) if where == COMMAND_LINE else repr(name)
        if first["type"] == "missing":
            raise JobError(f"missing required setting {label} ({_describe(fields[name])})") from None
        raise JobError(f"{where}: {label}={merged.get(name)!r} is invalid: {first['msg']}; "
                       f"expected {_describe(fields[name])}") from None


def _describe(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    bounds = _bounds(field.metadata)
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _bounds(metadata: list[Any]) -> list[str]:
    """The numeric ranges among pydantic/annotated-types constraints, as ">= 0"-style text."""
    return [f"{op} {getattr(m, attr)}" for m in metadata
            for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if getattr(m, attr, None) is not None]


def _type_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        inner = args[0] if args else str
        bounds = ""
        if typing.get_origin(inner) is typing.Annotated:  # e.g. Annotated[int, Field(ge=0)]: each item's range
            inner, *meta = typing.get_args(inner)
            bounds = ", ".join(_bounds([c for m in meta for c in getattr(m, "metadata", [m])]))
        item = {int: "integers", float: "numbers", str: "strings"}.get(inner, "values")
        return f"comma-separated {item}" + (f" (each {bounds})" if bounds else "")
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    if args and origin is not None:
        return " or ".join(_type_name(a) for a in args)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation,
                                                                                          getattr(annotation, "__name__", str(annotation)))


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def options(cls: type[JobSettings], *, exclude: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> Callable[[F], F]:
    """click options for every field of ``cls`` (but ``exclude``), built from the model itself.

    Every option defaults to None ("not given"), so a command can tell a user's value from the
    model's default and let hyperparameters.json or a sweep fill the gaps; the help text shows the
    model's default. Values stay strings until ``load_settings`` parses them, so the command line,
    SageMaker's strings and a sweep's YAML all go through the same checks. Fields in ``flags`` are
    on/off switches (``--dry-run``).
    """

    def decorate(fn: F) -> F:
        for name in reversed([n for n in cls.model_fields if n not in exclude]):
            field = cls.model_fields[name]
            help_text = (field.description or "").rstrip()
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            if default not in (None, [], ""):
                shown = ",".join(map(str, default)) if isinstance(default, list) else default
                help_text += f" [default: {str(shown).lower() if isinstance(shown, bool) else shown}]"
            elif field.is_required():
                help_text += " [required]"
            if name in flags:
                fn = click.option(option_name(name), name, is_flag=True, default=None, help=help_text)(fn)
            else:
                fn = click.option(option_name(name), name, default=None, metavar=_metavar(field), help=help_text)(fn)
        return fn

    return decorate


def _metavar(field: FieldInfo) -> str:
    annotation = field.annotation
    if _is_list(annotation):
        return "A,B,..."
    if typing.get_origin(annotation) is typing.Literal or any(typing.get_origin(a) is typing.Literal
                                                            for a in typing.get_args(annotation)):
        literal = annotation if typing.get_origin(annotation) is typing.Literal else next(
            a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)
        words = list(map(str, typing.get_args(literal)))
        if _is_bool(annotation):  # a word or a boolean (gradient_checkpointing: auto|true|false)
            words += ["true", "false"]
        return "[" + "|".join(words) + "]"
    if _is_bool(annotation):
        return "true|false"
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return {int: "INTEGER", float: "NUMBER"}.get(args[0], "TEXT")


def hyperparameters(settings: JobSettings, *, only_set: bool = True) -> dict[str, str]:
    """The settings as SageMaker delivers them (strings); by default only what was set explicitly."""
    values = settings.model_dump(exclude_unset=only_set, exclude_none=True)
    return {key: encode_value(value) for key, value in values.items()}


def schema(cls: type[JobSettings]) -> dict[str, Any]:
    """The JSON schema of ``cls`` (for a manifest section that holds these settings)."""
    return json.loads(json.dumps(cls.model_json_schema()))
