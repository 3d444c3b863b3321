"""The infer-local job's settings (its public entry, with ``job.command``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InferSettings:
    model: str
    sizes: list[int] | None = None  # default: data.json's sizes
    seeds: list[int] | None = None  # default: data.json's seeds
    arms: list[str] = field(default_factory=lambda: ["finetune"])
    shots: list[int] | None = None  # fewshot-local shot counts; default: the sizes
    engine: str = "hf"
    batch_size: int = 8
    max_new_tokens: int | None = None  # default: the task's generation.max_new_tokens
