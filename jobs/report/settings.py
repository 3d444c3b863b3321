"""The report job's settings: every default and range of the analysis in one place (its public entry)."""

from __future__ import annotations

from pydantic import Field, field_validator
from switchpoint.core.settings import JobSettings
from switchpoint.core.stats import DEFAULT_RESAMPLES

EXTRAPOLATE_MAX = 8.0  # an extrapolated N is shown only up to this multiple of the largest measured N


class ReportSettings(JobSettings):
    """Where the run is, and how the report turns its scores and dollars into an answer."""

    run: str | None = Field(None, description="The run: a folder or store URI holding STORE/<sweep>/<task>/ "
                                              "[default: <ml-root>/processing/input/run].")
    store: str | None = Field(None, description="Store (folder or s3://bucket/prefix); with --sweep and --task reads "
                                                "STORE/<sweep>/<task>/ and publishes the report to its report/.")
    task: str | None = Field(None, description="Task name or YAML (with --store): its folder in the store.")
    sweep: str | None = Field(None, description="Sweep name or YAML: models, sizes, seeds, instance types and "
                                                "resamples, where the run's data folder carries no sweep.json.")
    out: str | None = Field(None, description="Write the report here [default: <ml-root>/processing/output; "
                                              "STORE/<sweep>/<task>/report with --store].")

    reference: str = Field("best", description="Prompting level: 'best' (each prompting arm's best shot count) "
                                               "or a shot count such as 8.")
    margin: float = Field(1.0, ge=0, le=100, description="Non-inferiority margin in points of the primary metric: "
                                                         "fine-tuned matches when its paired 95% lower bound is >= -margin.")
    amortize_months: float = Field(1.0, gt=0, le=120, description="Months the one-off cost (training, labelling) is "
                                                                  "spread over in the monthly cost.")
    resamples: int | None = Field(None, ge=100, le=200_000, description="Bootstrap resamples (default: the sweep's "
                                                                        f"score.bootstrap, else {DEFAULT_RESAMPLES}).")
    volume: float | None = Field(None, ge=0, description="Requests a month: turns the verdict into one sentence for "
                                                         "this volume.")
    label_usd: float = Field(0.0, ge=0, description="Dollars to label one training example, added to the fine-tuned "
                                                    "side's one-off cost.")
    seed: int = Field(0, ge=0, description="Bootstrap seed.")

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        text = str(value).strip().lower()
        if text != "best" and not text.isdigit():
            raise ValueError("expected 'best' or a shot count such as 8")
        return text


Settings = ReportSettings  # the name the orchestration looks for
