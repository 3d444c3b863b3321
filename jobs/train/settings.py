"""The train job's settings: one typed model, its defaults, ranges and ``--help`` texts in one place.

The orchestration passes these as SageMaker hyperparameters (strings), a user as command-line
options; both go through ``switchpoint.core.settings.load_settings``. A sweep's ``train:`` section
may also hold orchestration keys (instance type, spot, run time): those are not job settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from switchpoint.core.settings import JobSettings

Count = Annotated[int, Field(ge=0)]


class Settings(JobSettings):
    """Every setting of ``switchpoint train``; ``None`` means "taken from the data folder / model"."""

    model: str = Field(description="Model key in models.yaml (e.g. qwen2.5-1.5b-instruct, tiny-gpt-neox).")
    sizes: list[Count] | None = Field(None, description="Comma-separated N values to train (N=0 is skipped) "
                                                        "[default: data.json's sizes].")
    seeds: list[Count] | None = Field(None, description="Comma-separated seeds [default: data.json's seeds].")
    every_seed_at: list[Count] | None = Field(
        None, description="Comma-separated N that train every seed; other N train the smallest seed only (an "
                          "adaptive sweep's rounds: more seeds only where N*'s interval needs them) [default: every N].")
    epochs: int = Field(3, ge=1, description="Passes over the N examples.")
    batch_size: int = Field(4, ge=1, description="Examples per optimiser step, across all GPUs.")
    micro_batch_size: int | None = Field(None, ge=1, description="Examples per forward/backward pass on one device; "
                                         "gradients are accumulated up to --batch-size [default: --batch-size].")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW peak learning rate (no weight decay).")
    min_steps: int = Field(20, ge=0, description="Lower bound on optimiser steps, so tiny N still get a real fit.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Linear warm-up as a fraction of the steps, then "
                                                             "linear decay to 0.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the gradient norm of each step to this (0: no clipping).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32, gt=0, description="LoRA alpha (scaling alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    cutoff_len: int = Field(512, ge=16, description="Max tokens per training text (capped at the model's context); "
                                                     "longer prompts lose input text, the answer is kept.")
    load_in_4bit: bool | None = Field(None, description="true/false: QLoRA 4-bit base (bitsandbytes, CUDA only) "
                                                        "[default: the model's load_in_4bit in models.yaml].")
    load_in_8bit: bool = Field(False, description="true/false: 8-bit base (bitsandbytes, CUDA only).")
    gradient_checkpointing: Literal["auto"] | bool = Field(
        "auto", description="auto/true/false: recompute activations to save memory; auto turns it on when the "
                            "memory estimate (weights + LoRA states + activations) exceeds 90% of the GPU's.")
    group_by_length: bool = Field(True, description="true/false: batch examples of similar length together (less "
                                                    "padding; each epoch still sees every example once).")
    packing: bool = Field(False, description="true/false: concatenate each micro-batch's examples into one row "
                                             "without padding, attention kept within each example (position_ids); "
                                             "off by default: with sdpa's block mask a row's attention grows with its "
                                             "whole length (slower than grouped batches on the tiny CPU models, bench/bench_train.py).")
    threads: int | None = Field(None, ge=1, description="torch CPU threads [default: the cores this process may "
                                                        "run on, os.sched_getaffinity].")

    @property
    def micro_batch(self) -> int:
        """Examples per forward pass (on one device): never more than a step's batch."""
        return min(self.micro_batch_size or self.batch_size, self.batch_size)
