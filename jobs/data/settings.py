"""The data job's settings (its public entry, with ``job.command``): one typed model, one set of ranges.

Errors name the option or key: ``--seeds -1``, ``--eval-size 0`` and ``--sizes 2,2`` are refused
before any source is read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from switchpoint.core import manifests
from switchpoint.core.settings import JobSettings

NonNegative = Annotated[int, Field(ge=0)]


def _unique(values: list[int], what: str) -> list[int]:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value} is given twice")
        seen.add(value)
    return values


class Settings(JobSettings):
    """What the data job prepares for one task."""

    task: str = Field(description="Task name in manifests/tasks (jsquad, xlsum) or a path to a task YAML.")
    sizes: list[NonNegative] = Field(default_factory=lambda: [0], min_length=1,
                                     description="Training-set sizes N and few-shot shot counts to prepare.")
    seeds: list[NonNegative] = Field(default_factory=lambda: [0], min_length=1,
                                     description="Seeds: one nested ordering of the training pool per seed.")
    source: Literal["remote", "bundled"] = Field(
        "remote", description="remote: the task's Hub/URL/file sources; bundled: the small offline sample.")
    eval_size: int | None = Field(None, ge=1, description="Cap on evaluation examples (none: the whole eval split).")
    seeds_up_to_n: int | None = Field(
        None, ge=0, description="Draw every seed only for N up to this; larger N use the smallest seed (none: every N).")

    @field_validator("sizes")
    @classmethod
    def _sizes_unique(cls, value: list[int]) -> list[int]:
        return _unique(value, "size")

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, value: list[int]) -> list[int]:
        return _unique(value, "seed")


def seeds_at(n: int, settings: Settings) -> list[int]:
    """The seeds that have a training set of size ``n``."""
    return manifests.seeds_at(n, settings.seeds, settings.seeds_up_to_n)


def sweep_values(sweep: dict, task_name: str) -> dict:
    """What a sweep asks of the data step for one task: every size any arm reads (training sizes,
    few-shot-local and few-shot-API shot counts), its seeds, eval cap and source."""
    return {"sizes": manifests.prepared_sizes(sweep, task_name), "seeds": list(sweep["seeds"]),
            "source": sweep["data"]["source"], "eval_size": sweep["data"]["eval_size"],
            "seeds_up_to_n": sweep.get("seeds_up_to_n")}


def settings_for_sweep(task: str, task_name: str, sweep: dict) -> Settings:
    """The data settings of ``sweep`` for one task (``task`` is its name or manifest path)."""
    from switchpoint.core.settings import load_settings

    where = f"sweep {sweep.get('manifest_path') or sweep['name']}"
    return load_settings(Settings, (where, {"task": task, **sweep_values(sweep, task_name)}))
