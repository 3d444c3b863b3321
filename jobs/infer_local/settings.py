"""The infer-local job's settings (its public entry, with ``job.command``): defaults, ranges and
``--help`` texts in one place, parsed by ``switchpoint.core.settings.load_settings``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from switchpoint.core.settings import JobSettings

Count = Annotated[int, Field(ge=0)]


class Settings(JobSettings):
    """Every setting of ``switchpoint infer-local``; ``None`` means "from the data folder / task / model"."""

    model: str = Field(description="Model key in models.yaml (e.g. tiny-gpt-neox, qwen2.5-1.5b-instruct).")
    sizes: list[Count] | None = Field(None, description="Comma-separated N for the finetune arm (0 = base model) "
                                                        "[default: data.json's sizes].")
    seeds: list[Count] | None = Field(None, description="Comma-separated seeds [default: data.json's seeds].")
    every_seed_at: list[Count] | None = Field(
        None, description="Comma-separated N whose adapters run for every seed; other N run the smallest seed's "
                          "only (an adaptive sweep's rounds; few-shot arms are not affected) [default: every N].")
    arms: list[Literal["finetune", "fewshot-local"]] = Field(["finetune"], min_length=1,
                                                             description="Comma-separated arms: finetune, fewshot-local.")
    shots: list[Count] | None = Field(None, description="Comma-separated shot counts k for fewshot-local "
                                                        "[default: the sizes].")
    engine: Literal["auto", "hf", "vllm", "lm-eval"] = Field(
        "auto", description="auto: vLLM on a GPU where it serves LoRA for the model's architecture, else hf; "
                            "hf: transformers+peft; vllm: GPU, LoRA requests; lm-eval: lm-evaluation-harness per pass.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch (hf, lm-eval).")
    max_new_tokens: int | None = Field(None, ge=1, description="Generation cap [default: the task's "
                                                              "generation.max_new_tokens].")
    load_in_4bit: bool | None = Field(None, description="true/false: 4-bit base (bitsandbytes, CUDA only) "
                                                        "[default: the model's load_in_4bit in models.yaml].")
    threads: int | None = Field(None, ge=1, description="torch CPU threads [default: the cores this process may "
                                                        "run on, os.sched_getaffinity].")


# Which engine serves which architecture, for `plan` (orchestration reaches a job only through its
# settings or its command): the knowledge itself lives in engines.py.
from switchpoint.infer_local.engines import (  # noqa: E402,F401
    ARCHITECTURES,
    VLLM_LORA,
    unsupported,
)
