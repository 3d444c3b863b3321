"""The infer-bedrock job's settings (its public entry, with ``job.command``), and ``arm_mode``.

Defaults and ranges live here only: the click options, ``--help``, SageMaker's string
hyperparameters and a sweep's section are all parsed by ``load_settings(Settings, ...)``.
``arm_mode`` is pure (no boto3) so that the orchestration's ``plan`` can ask, before anything is
spent, how an API model would run and whether it can be called at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator
from switchpoint.core.settings import JobSettings

Mode = Literal["auto", "batch", "on-demand"]
ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
S3_PREFIX = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
REGION = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$"
UNAVAILABLE = "unavailable"  # arm_mode's mode for an arm that cannot run (retired model, impossible forced batch)


class Settings(JobSettings):
    """What one infer-bedrock run asks of Bedrock, how, and how much it may spend."""

    api_model: str = Field(..., min_length=1, description="Key in api_models.yaml (or the data folder's models.json), "
                           "e.g. claude-haiku-4.5: model id, context window, prices, batch support, availability.")
    model_id: str | None = Field(None, min_length=1, description="Override the Bedrock model id or inference-profile "
                                 "ARN (default: the entry's inference_profile, else bedrock_model_id).")
    shots: list[int] | None = Field(None, description="Comma-separated shot counts N (default: the data "
                                            "folder's sizes).")
    seeds: list[int] | None = Field(None, description="Comma-separated seeds (default: the data folder's seeds).")
    variants: list[str] | None = Field(None, description="Comma-separated prompt variants of the task (XLSum: "
                                       "full,summary-only); 'none' is the plain layout. Default: the plain layout only.")
    mode: Mode = Field("auto", description="auto: batch where the model supports it, --role-arn and --s3-prefix are "
                       "given and an arm has at least --batch-min-records records, else on-demand (with a notice); "
                       "batch or on-demand: forced (batch fails without its role and prefix).")
    role_arn: str | None = Field(None, pattern=ROLE_ARN, description="IAM role Bedrock assumes for batch jobs "
                                 "(trusts bedrock.amazonaws.com; see manifests/iam/README.md).")
    s3_prefix: str | None = Field(None, pattern=S3_PREFIX, description="s3://bucket/prefix for batch input and "
                                  "output files.")
    state: str | None = Field(None, min_length=1, description="Folder or store URI of the append-only resume state "
                              "(batch jobs, paid answers); default: the --s3-prefix.")
    max_usd: float | None = Field(None, ge=0, description="Refuse to start when the estimated cost is above this "
                                  "many dollars.")
    dry_run: bool = Field(False, description="Print records, estimated tokens and dollars per arm; call no AWS API.")
    concurrency: int = Field(4, ge=1, le=256, description="On-demand requests in flight at once.")
    poll_seconds: float = Field(60.0, gt=0, le=3600, description="First interval between batch job polls; grows "
                                "1.5x up to 5 minutes.")
    max_retries: int = Field(5, ge=0, le=20, description="botocore retries per call (adaptive mode) for throttling "
                             "and server errors; a record still failing is recorded as an error.")
    region: str | None = Field(None, pattern=REGION, description="AWS region (default: from the model ARN, else the "
                               "api model entry, else your AWS configuration).")
    batch_min_records: int = Field(100, ge=1, le=50_000, description="Bedrock's minimum records per batch job "
                                   "(an adjustable service quota).")
    job_timeout_hours: int = Field(72, ge=24, le=168, description="Batch job timeout (24-168 hours); jobs not done "
                                   "by then end Expired.")
    skip_without_credentials: bool = Field(False, description="With no AWS credentials, record every arm as skipped "
                                           "('no AWS credentials') and exit 0 instead of failing.")
    api_models_file: str | None = Field(None, min_length=1, description="Read the api model entry from this "
                                        "api_models.yaml instead of the data folder's models.json or the bundled one.")

    @field_validator("shots", "seeds")
    @classmethod
    def _non_negative(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v < 0 for v in values):
            raise ValueError("every value must be >= 0")
        return values

    @field_validator("shots", "seeds", "variants")
    @classmethod
    def _distinct(cls, values: list | None) -> list | None:
        """A repeated value would be a second arm writing the same predictions file."""
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"values must be distinct, got {','.join(map(str, values))}")
        return values


def supports_batch(entry: Mapping[str, Any]) -> bool:
    """The manifest's ``batch`` flag; an older entry without it: whether it has a batch discount."""
    if "batch" in entry:
        return bool(entry["batch"])
    return float(entry.get("batch_discount") or 0) > 0


def availability_notice(entry: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(callable, notice): a retired model cannot be called (the notice names its replacement); a
    legacy one can, with a notice."""
    info = entry.get("availability") or {}
    status = info.get("status", "legacy" if entry.get("legacy") else "active")
    name = entry.get("name", "this model")
    replacement = f"; use {info['replacement']} instead" if info.get("replacement") else ""
    since = f" since {info['date']}" if info.get("date") else ""
    source = f" ({info['source']})" if info.get("source") else ""
    if status == "retired":
        return False, f"api model {name} is retired{since}{source}{replacement}"
    if status == "legacy":
        return True, f"api model {name} is legacy{since}{source} and may be unavailable in your account{replacement}"
    return True, None


def _get(settings: Any, key: str, default: Any = None) -> Any:
    if isinstance(settings, Mapping):
        return settings.get(key, default)
    return getattr(settings, key, default)


def arm_mode(api_model_entry: Mapping[str, Any], settings: Settings | Mapping[str, Any],
             records: int | None = None) -> tuple[str, str | None]:
    """How this model's arms run: ("batch" | "on-demand" | "unavailable", one-line notice or None).

    ``settings`` is a ``Settings`` or a mapping with ``mode``, ``role_arn``, ``s3_prefix`` (and
    optionally ``batch_min_records``); ``records`` is an arm's request count when known. Batch only
    where the model supports it and a role and S3 prefix are configured; ``auto`` otherwise falls back
    to on-demand with a notice, never fails. "unavailable" (the notice says why, as an error line): a
    retired model (naming its replacement), or a forced ``--mode batch`` that cannot run.
    """
    callable_, availability = availability_notice(api_model_entry)
    if not callable_:
        return UNAVAILABLE, availability
    mode = _get(settings, "mode") or "auto"
    name = api_model_entry.get("name", "this model")
    missing = [opt for opt, key in (("--role-arn", "role_arn"), ("--s3-prefix", "s3_prefix")) if not _get(settings, key)]
    if mode == "on-demand":
        return "on-demand", availability
    if mode == "batch":
        if not supports_batch(api_model_entry):
            return UNAVAILABLE, (f"--mode batch: api model {name} has no batch inference on Bedrock (batch: false); "
                                 "use --mode auto or on-demand")
        if missing:
            return UNAVAILABLE, f"--mode batch needs {' and '.join(missing)}; give them, or use --mode auto or on-demand"
        return "batch", availability
    minimum = int(_get(settings, "batch_min_records") or Settings.model_fields["batch_min_records"].default)
    reason = None
    if not supports_batch(api_model_entry):
        reason = f"{name} has no batch inference on Bedrock"
    elif missing:
        reason = f"no {' and '.join(missing)} given"
    elif records is not None and records < minimum:
        reason = f"{records} records are fewer than the batch minimum of {minimum}"
    if reason is None:
        return "batch", availability
    notice = f"on-demand for {name}: {reason}"
    return "on-demand", notice + (f"; {availability}" if availability else "")
