"""Every dollar figure in one place: instance time and API tokens.

``plan`` (before a sweep), ``status`` (during it), the infer-bedrock job (its bill) and the report
(after it) all price through these functions, so the same seconds, instance and tokens give the same
dollars everywhere.

Instances (``manifests/prices.yaml``): SageMaker bills *billable seconds at the on-demand rate*, also
for managed spot (the spot saving shows as fewer billable seconds, 1 - billable/training seconds).
So measured seconds are always priced on-demand; ``spot_per_hour`` is only used to *estimate* a spot
job before it runs (``plan``) or when no billable seconds were recorded.

API (``manifests/api_models.yaml``): tokens x price per million; batch = on-demand x (1 -
batch_discount) where the model has batch inference; prompt caching only where the manifest gives
cache prices and the cached prefix reaches the model's minimum cacheable length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOURS_PER_MONTH = 730.0  # AWS's convention for monthly instance prices


# --- instances -------------------------------------------------------------------------------
def instance_rates(prices: dict, instance_type: str | None) -> tuple[float | None, float | None]:
    """(on-demand, spot) dollars per hour; None where the instance or its spot price is unknown."""
    entry = prices["instances"].get(instance_type) if instance_type else None
    if entry is None:
        return None, None
    spot = entry.get("spot_per_hour")
    return float(entry["on_demand_per_hour"]), None if spot is None else float(spot)


def hours_usd(seconds: float | None, per_hour: float | None) -> float | None:
    if seconds is None or per_hour is None:
        return None
    return float(seconds) / 3600.0 * per_hour


@dataclass
class JobTime:
    """The seconds one instance job ran, as far as they are known, and where they came from."""

    instance_type: str | None
    wall_s: float | None
    billable_s: float | None = None  # SageMaker's BillableTimeInSeconds (or processing seconds)
    spot: bool = False
    source: str = ""


def job_usd(job: JobTime, prices: dict) -> tuple[float | None, float | None, str]:
    """(on-demand $, spot $, basis) of one finished job.

    With billable seconds the bill is exact: billable seconds at the on-demand rate (for a spot job
    that is the spot figure, and the wall seconds on-demand show what it would have cost without spot).
    Without them both figures are estimates from the wall seconds.
    """
    on_demand, spot = instance_rates(prices, job.instance_type)
    if on_demand is None:
        return None, None, f"no price for instance {job.instance_type!r}"
    if job.billable_s is not None and job.spot:
        return hours_usd(job.wall_s, on_demand), hours_usd(job.billable_s, on_demand), f"spot billable_s ({job.source})"
    if job.billable_s is not None:
        return hours_usd(job.billable_s, on_demand), hours_usd(job.wall_s, spot), f"billable_s ({job.source})"
    return hours_usd(job.wall_s, on_demand), hours_usd(job.wall_s, spot), f"wall_s ({job.source})"


def spent_usd(job: JobTime, prices: dict) -> float:
    """What a finished (or failed) job cost: the figure ``status`` shows (0 for an unknown instance)."""
    on_demand, spot, _ = job_usd(job, prices)
    figure = spot if job.spot and job.billable_s is not None else on_demand
    return figure or 0.0


def estimate_usd(seconds: float, instance_type: str, prices: dict, *, spot: bool) -> float:
    """A plan's estimate for a job of ``seconds``: at the spot rate for a spot job (expected saving)."""
    on_demand, spot_rate = instance_rates(prices, instance_type)
    rate = (spot_rate if spot and spot_rate is not None else on_demand) or 0.0
    return seconds / 3600.0 * rate


# --- API tokens ------------------------------------------------------------------------------
def token_usd(input_tokens: float, output_tokens: float, api: dict, *, batch: bool = False) -> float:
    """Dollars for tokens at the model's on-demand prices, or its batch price for batch records."""
    price = input_tokens / 1e6 * float(api["input_per_mtok"]) + output_tokens / 1e6 * float(api["output_per_mtok"])
    return price * (1.0 - float(api.get("batch_discount") or 0.0)) if batch else price


def batch_usd(input_tokens: float, output_tokens: float, api: dict) -> float | None:
    """Batch price, or None when the model has no batch discount (no batch inference)."""
    if float(api.get("batch_discount") or 0.0) <= 0:
        return None
    return token_usd(input_tokens, output_tokens, api, batch=True)


def cacheable(prefix_tokens: float | None, api: dict) -> bool:
    """Whether a shared prefix this long is cached at all: Bedrock ignores a cache checkpoint below
    the model's minimum cacheable length (``cache_min_tokens``), so a short shot prefix pays full price."""
    if prefix_tokens is None or api.get("cache_write_per_mtok") is None or api.get("cache_read_per_mtok") is None:
        return False
    return prefix_tokens >= float(api.get("cache_min_tokens") or 0)


def cached_usd(records: float, input_tokens: float, output_tokens: float, prefix_tokens: float | None,
               api: dict) -> float | None:
    """On-demand price with the shared shot prefix cached: one cache write, then a read per request.

    Assumes the requests run back to back, so the cache (5-minute lifetime) stays warm. None when the
    model has no cache prices, the prefix is unknown, or it is below the minimum cacheable length.
    """
    if records <= 0 or not cacheable(prefix_tokens, api):
        return None
    prefix = min(max(float(prefix_tokens), 0.0), input_tokens / records)
    uncached_input = input_tokens - prefix * records
    return (prefix / 1e6 * api["cache_write_per_mtok"] + prefix * (records - 1) / 1e6 * api["cache_read_per_mtok"]
            + uncached_input / 1e6 * api["input_per_mtok"] + output_tokens / 1e6 * api["output_per_mtok"])


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of Claude's token count for ``text``.

    Claude's tokenizer is not public, so we count characters. Japanese kana and kanji come out at
    roughly 0.7-1 token per character with Claude 3/4 tokenizers; counting every non-ASCII
    character as one token keeps us at or above the truth. ASCII runs (numbers, Latin words,
    markup) average about 4 characters per token in English; we use 3 to stay on the high side.
    A high estimate makes the context guard skip rather than overflow and ``--max-usd`` refuse
    rather than overspend.
    """
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return (len(text) - ascii_chars) + math.ceil(ascii_chars / 3)
