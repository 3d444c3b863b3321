"""The score job's settings: one typed model, its defaults and ranges in one place (its public entry)."""

from __future__ import annotations

from pydantic import Field
from switchpoint.core.settings import JobSettings
from switchpoint.core.stats import DEFAULT_RESAMPLES


class Settings(JobSettings):
    """Every setting of ``switchpoint score``."""

    task: str | None = Field(None, description="Task name (jsquad, xlsum), task YAML, data folder or its task.json: "
                                               "which metrics to compute. A data folder also cross-checks every "
                                               "prediction's id and references against its eval.jsonl.")
    predictions: list[str] | None = Field(None, description="Predictions JSONL files, folders of them, or store URIs "
                                                            "[default: <ml-root>/processing/input/predictions].")
    out: str | None = Field(None, description="Output folder [default: <ml-root>/processing/output].")
    bootstrap: int = Field(DEFAULT_RESAMPLES, ge=1, le=1_000_000, description="Bootstrap resamples for the 95% "
                                                                              "intervals (one set shared by every arm).")
    seed: int = Field(0, ge=0, description="Bootstrap seed.")
    compare: str | None = Field(None, description="Instead of scoring: compare two arms in this scores.jsonl (or its "
                                                  "folder); needs --arm-a and --arm-b.")
    arm_a: str | None = Field(None, description="Arm A for --compare, e.g. 'finetune tiny-gpt-neox n=8 seed=0'.")
    arm_b: str | None = Field(None, description="Arm B for --compare, e.g. 'fewshot-api claude-haiku-4.5 n=8 seed=0 [full]'.")
    metric: str | None = Field(None, description="Metric for --compare [default: the only metric in the scores].")


ScoreSettings = Settings
