"""The cost model: dollars per arm from measured seconds and tokens, and the break-even volume.

Instances: seconds x the instance's hourly price in ``manifests/prices.yaml``. The seconds are
SageMaker's billable seconds where the orchestration recorded them (``runs/<step>.json``), else the
wall seconds the job measured itself. Instances bill wall-clock time, so wall seconds are priced and
GPU seconds are only reported. A job (one train or infer-local run per model) is shared among its
adapters/passes in proportion to their own wall seconds, so the base-model load is spread over them;
a generation pass shared by several arms (the base model's 0-shot pass) is charged once, split
among them, while its per-request price is the pass's own.

Every file is found through ``switchpoint.core.layout`` from the run's models, sizes and seeds
(``RunContents``): no globs over the run folder and no parsing of step names.

Spot: SageMaker bills a managed-spot job's billable seconds at the on-demand rate (the saving shows
as fewer billable seconds; saving = 1 - billable/training seconds), so a spot run with billable
seconds is priced exactly; without them the spot figure is an estimate at ``spot_per_hour``.

API: tokens x the model's prices in ``manifests/api_models.yaml``; batch = on-demand x (1 -
batch_discount) (no batch figure when the discount is 0); prompt caching of the shared shot prefix
(see ``cached_usd``) only where the manifest gives cache prices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchpoint.core import layout
from switchpoint.core.contract import JobError
from switchpoint.core.predictions import Arm
from switchpoint.core.pricing import (
    HOURS_PER_MONTH,
    JobTime,
    batch_usd,
    cacheable,
    cached_usd,
    instance_rates,
    job_usd,
    token_usd,
)

ArmKey = tuple  # (kind, model, n, seed, variant): Arm's fields as a hashable tuple


def arm_key(arm: Arm) -> ArmKey:
    return (arm.kind, arm.model, arm.n, arm.seed, arm.variant)


def parse_arm(value: Any, where: str) -> Arm:
    """An arm from a metrics file: a dict of Arm fields or an Arm file name (``.jsonl`` optional)."""
    if isinstance(value, dict):
        try:
            return Arm.from_dict(value)
        except (KeyError, TypeError, ValueError) as err:
            raise JobError(f"{where}: arm {value!r} lacks kind/model/n/seed ({err})") from err
    text = str(value)
    text = text.removesuffix(".jsonl")
    parts = text.split("__")
    try:
        kind, model, n_part, seed_part, *rest = parts
        if not (n_part.startswith("n=") and seed_part.startswith("seed=")):
            raise ValueError(text)
        return Arm(kind, model, int(n_part[2:]), int(seed_part[5:]), rest[0] if rest else None)
    except (ValueError, JobError) as err:
        raise JobError(f"{where}: arm {value!r} is neither an arm object nor a name like "
                       "'finetune__model__n=8__seed=0'") from err


# --- instances ---------------------------------------------------------------------------------
def split(total: float | None, weights: dict[Any, float]) -> dict[Any, float | None]:
    """Share a job's dollars among its parts in proportion to ``weights`` (equal if all are 0)."""
    whole = sum(weights.values())
    if total is None:
        return {k: None for k in weights}
    if whole <= 0:
        return {k: total / len(weights) for k in weights} if weights else {}
    return {k: total * w / whole for k, w in weights.items()}


# --- API -------------------------------------------------------------------------------------
@dataclass
class ApiUsage:
    records: int
    input_tokens: int
    output_tokens: int
    prefix_tokens: float | None = None  # shared shot prefix per request (for the caching estimate)


def api_costs(usage: ApiUsage, api: dict) -> dict[str, float | None]:
    """Dollars for the evaluation run and per 1,000 requests, on-demand, batch and cached."""
    r, i, o = usage.records, usage.input_tokens, usage.output_tokens
    out: dict[str, float | None] = {
        "api_usd": token_usd(i, o, api),
        "api_usd_batch": batch_usd(i, o, api),
        "api_usd_cached": cached_usd(r, i, o, usage.prefix_tokens, api),
    }
    if r > 0:
        scale = 1000.0 / r
        out["api_per_1k"] = token_usd(i * scale, o * scale, api)
        out["api_per_1k_batch"] = batch_usd(i * scale, o * scale, api)
        out["api_per_1k_cached"] = cached_usd(1000, i * scale, o * scale, usage.prefix_tokens, api)
    else:
        out.update(api_per_1k=None, api_per_1k_batch=None, api_per_1k_cached=None)
    return out


# --- break-even ------------------------------------------------------------------------------
def break_even_requests(train_usd: float | None, ft_per_request: float | None, other_per_request: float | None,
                        months: float = 1.0) -> float | None:
    """Monthly requests above which fine-tuning (training amortised over ``months``) costs less.

    Fine-tuned per month: train/months + V x ft_per_request; prompting: V x other_per_request.
    Returns ``math.inf`` when prompting is as cheap or cheaper per request (never breaks even),
    None when a figure is unknown.
    """
    if train_usd is None or ft_per_request is None or other_per_request is None:
        return None
    margin = other_per_request - ft_per_request
    if margin <= 0:
        return 0.0 if train_usd <= 0 and margin == 0 else math.inf
    return train_usd / months / margin


def break_even_endpoint(train_usd: float | None, hourly: float | None, other_per_request: float | None,
                        months: float = 1.0) -> float | None:
    """Monthly requests above which an always-on instance (730 h/month) plus training costs less.

    Assumes one instance serves the whole volume; the report checks that against measured throughput.
    """
    if train_usd is None or hourly is None or other_per_request is None:
        return None
    if other_per_request <= 0:
        return math.inf
    return (train_usd / months + hourly * HOURS_PER_MONTH) / other_per_request


# --- monthly cost at a request volume ------------------------------------------------------------
@dataclass(frozen=True)
class MonthlyCost:
    """What one tier costs a month at V requests, per side (None where a figure is unknown)."""

    one_off_usd: float | None  # training + labelling, before amortising
    months: float
    ft_per_request: float | None  # fine-tuned, billed per request at the measured throughput
    endpoint_per_month: float | None  # one always-on instance, 730 h
    prompt_per_request: float | None

    def prompting(self, volume: float) -> float | None:
        return None if self.prompt_per_request is None else volume * self.prompt_per_request

    def per_request(self, volume: float) -> float | None:
        if self.one_off_usd is None or self.ft_per_request is None:
            return None
        return self.one_off_usd / self.months + volume * self.ft_per_request

    def endpoint(self, volume: float) -> float | None:
        if self.one_off_usd is None or self.endpoint_per_month is None:
            return None
        return self.one_off_usd / self.months + self.endpoint_per_month

    def break_even_per_request(self) -> float | None:
        return break_even_requests(self.one_off_usd, self.ft_per_request, self.prompt_per_request, self.months)

    def break_even_endpoint(self) -> float | None:
        hourly = None if self.endpoint_per_month is None else self.endpoint_per_month / HOURS_PER_MONTH
        return break_even_endpoint(self.one_off_usd, hourly, self.prompt_per_request, self.months)


# --- reading the run folder (every path from the store layout) ---------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise JobError(f"{path}: cannot read ({err.strerror or err})") from err
    except json.JSONDecodeError as err:
        raise JobError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); re-run the step that wrote it") from err


def _optional_json(run_dir: Path, rel: str) -> Any:
    path = run_dir / rel
    return _read_json(path) if path.exists() else None


def read_run(run_dir: Path, step: str) -> dict | None:
    """What the orchestration recorded for ``step`` (``runs/<step>.json``), or None."""
    rel = layout.run_record(step)
    value = _optional_json(run_dir, rel)
    return {**value, "_file": rel} if isinstance(value, dict) else None


def _job_time(run: dict | None, instance_type: str | None, spot: bool, wall_s: float | None, source: str) -> JobTime:
    if run is not None:
        return JobTime(run.get("instance_type") or instance_type,
                       run.get("wall_s") if run.get("wall_s") is not None else wall_s,
                       run.get("billable_s"), bool(run.get("spot", spot)), run["_file"])
    return JobTime(instance_type, wall_s, None, spot, source)


@dataclass
class RunCosts:
    """Everything the report needs from metrics files, keyed by arm key, plus what was missing."""

    train: dict[tuple, dict] = field(default_factory=dict)  # (model, seed, n) -> figures
    local: dict[ArmKey, dict] = field(default_factory=dict)  # local arm -> figures
    api: dict[ArmKey, dict] = field(default_factory=dict)  # API arm -> figures
    infer_hourly: dict[str, float | None] = field(default_factory=dict)  # model -> on-demand $/h
    skipped: list[dict] = field(default_factory=list)  # {arm, reason, source}
    notes: list[str] = field(default_factory=list)  # missing inputs, stated in the report


def collect(run_dir: Path, contents: layout.RunContents, prices: dict, api_models: dict,
            sweep: dict | None) -> RunCosts:
    """Read the train/infer/bedrock metrics and run records of ``contents`` into dollar figures."""
    run_dir = Path(run_dir)
    out = RunCosts()
    steps = [layout.train_step(m) for m in contents.models] + [layout.infer_local_step(m) for m in contents.models]
    if not any((run_dir / layout.run_record(s)).exists() for s in steps):
        out.notes.append("no runs/*.json: dollars use the wall seconds the jobs measured, not SageMaker billable seconds")
    train_type = sweep["train"]["instance_type"] if sweep else None
    train_spot = bool(sweep["train"].get("spot")) if sweep else False
    infer_type = sweep["infer"]["instance_type"] if sweep else None
    for model in contents.models:
        _collect_train(run_dir, contents, model, prices, train_type, train_spot, out)
        _collect_local(run_dir, model, prices, infer_type, out)
    if contents.models and not out.local:
        out.notes.append("no predictions/local/*/infer_metrics.json: local inference seconds and dollars unknown")
    if not contents.api_models:
        out.notes.append("no predictions/bedrock/*/bedrock_metrics.json: no API arm was run (offline or no credentials)")
    for api_model in contents.api_models:
        _collect_api(run_dir, api_model, api_models, out)
    return out


def _collect_train(run_dir: Path, contents: layout.RunContents, model: str, prices: dict,
                   instance_type: str | None, spot: bool, out: RunCosts) -> None:
    rel = layout.adapters_prefix(model)
    metrics = {}
    for seed, n, path in contents.train_metrics(model):
        value = _optional_json(run_dir, path)
        if value is not None:
            metrics[(model, seed, n)] = value
    summary = _optional_json(run_dir, f"{rel}/{layout.TRAIN_SUMMARY}") or {}
    for entry in summary.get("adapters", []):
        if entry.get("skipped"):
            out.skipped.append({"arm": f"finetune {model} n={entry.get('n')} seed={entry.get('seed')}",
                                "reason": str(entry["skipped"]), "source": f"{rel}/{layout.TRAIN_SUMMARY}"})
    if not metrics:
        if any(n > 0 for n in contents.sizes):
            out.notes.append(f"{rel}/: no train_metrics.json, training seconds and dollars unknown")
        return
    job_wall = summary.get("wall_s")
    if job_wall is None:
        job_wall = sum(float(m.get("wall_s") or 0) for m in metrics.values())
    job = _job_time(read_run(run_dir, layout.train_step(model)), instance_type, spot, job_wall,
                    f"{rel}/{layout.TRAIN_SUMMARY}" if summary else f"{rel}/*/{layout.TRAIN_METRICS}")
    total_od, total_spot, basis = job_usd(job, prices)
    weights = {k: float(m.get("wall_s") or 0) for k, m in metrics.items()}
    od, sp = split(total_od, weights), split(total_spot, weights)
    for key, m in metrics.items():
        out.train[key] = {"train_usd": od[key], "train_usd_spot": sp[key], "train_wall_s": m.get("wall_s"),
                          "gpu_seconds": m.get("gpu_seconds"), "trained_tokens": m.get("trained_tokens"),
                          "train_basis": basis, "train_instance": job.instance_type}


def _passes(arms: dict[ArmKey, dict]) -> dict[ArmKey, tuple]:
    """Which arms share one generation pass (the base model's 0-shot pass serves several arms).

    infer-local marks such arms ``shared_pass`` and repeats the pass's own figures on each; arms with
    the same model, N=0 and identical figures are one pass, to be charged once."""
    out = {}
    for key, e in arms.items():
        figures = (e.get("wall_s"), e.get("examples"), e.get("input_tokens"), e.get("output_tokens"))
        out[key] = ("shared", key[1], figures) if e.get("shared_pass") else ("own", key)
    return out


def _collect_local(run_dir: Path, model: str, prices: dict, instance_type: str | None, out: RunCosts) -> None:
    rel = f"{layout.local_predictions_prefix(model)}/{layout.INFER_METRICS}"
    metrics = _optional_json(run_dir, rel)
    if metrics is None:
        return
    job = _job_time(read_run(run_dir, layout.infer_local_step(model)), instance_type, False, metrics.get("wall_s"), rel)
    total_od, total_spot, basis = job_usd(job, prices)
    out.infer_hourly[model] = instance_rates(prices, job.instance_type)[0]
    arms = {}
    for i, entry in enumerate(metrics.get("arms", [])):
        arm = parse_arm(entry.get("arm"), f"{rel} arms[{i}]")
        if entry.get("skipped"):
            out.skipped.append({"arm": arm.label, "reason": str(entry["skipped"]), "source": rel})
            continue
        arms[arm_key(arm)] = entry
    pass_of = _passes(arms)
    passes = {p: next(e for k, e in arms.items() if pass_of[k] == p) for p in set(pass_of.values())}
    weights = {p: float(e.get("wall_s") or e.get("examples") or 0) for p, e in passes.items()}
    od, sp = split(total_od, weights), split(total_spot, weights)
    sharers = {p: sum(1 for k in arms if pass_of[k] == p) for p in passes}
    for key, entry in arms.items():
        p, examples = pass_of[key], int(entry.get("examples") or 0)
        share = 1.0 / sharers[p]
        per_1k = None if od[p] is None or not examples else od[p] / examples * 1000
        per_1k_spot = None if sp[p] is None or not examples else sp[p] / examples * 1000
        out.local[key] = {"infer_usd": None if od[p] is None else od[p] * share,
                          "infer_usd_spot": None if sp[p] is None else sp[p] * share,
                          "infer_wall_s": entry.get("wall_s"), "examples": examples,
                          "input_tokens": entry.get("input_tokens"), "output_tokens": entry.get("output_tokens"),
                          "infer_per_1k": per_1k, "infer_per_1k_spot": per_1k_spot, "infer_basis": basis,
                          "infer_instance": job.instance_type, "shared_by": sharers[p]}


def _collect_api(run_dir: Path, name: str, api_models: dict, out: RunCosts) -> None:
    rel = f"{layout.bedrock_predictions_prefix(name)}/{layout.BEDROCK_METRICS}"
    metrics = _optional_json(run_dir, rel)
    if metrics is None:
        out.notes.append(f"{rel}: missing: the API arm of {name} was not run (offline or no credentials)")
        return
    name = metrics.get("api_model") or name
    api = api_models.get(name)
    if api is None:
        out.notes.append(f"{rel}: API model {name!r} is not in api_models.yaml, its dollars are unknown")
    if metrics.get("records_error"):
        out.notes.append(f"{rel}: {metrics['records_error']} API record(s) returned an error")
    usages: dict[ArmKey, tuple[Arm, dict]] = {}
    for i, entry in enumerate(metrics.get("arms", [])):
        arm = parse_arm(entry.get("arm"), f"{rel} arms[{i}]")
        if entry.get("skipped"):
            out.skipped.append({"arm": arm.label, "reason": str(entry["skipped"]), "source": rel})
            continue
        usages[arm_key(arm)] = (arm, entry)
    for key, (arm, entry) in usages.items():
        records = int(entry.get("records") or 0)
        usage = ApiUsage(records, int(entry.get("input_tokens") or 0), int(entry.get("output_tokens") or 0),
                         shot_prefix_tokens(arm, entry, usages))
        figures: dict[str, Any] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                                   "examples": records, "api_mode": entry.get("mode"),
                                   "api_usd_billed": entry.get("usd"), "prefix_tokens": usage.prefix_tokens}
        if api is not None:
            figures.update(api_costs(usage, api))
            if usage.prefix_tokens and not cacheable(usage.prefix_tokens, api) and api.get("cache_read_per_mtok"):
                out.notes.append(f"{arm.label}: its shot prefix ({usage.prefix_tokens:,.0f} tokens) is below {name}'s "
                                 f"minimum cacheable length ({api.get('cache_min_tokens')} tokens): no caching discount")
        out.api[key] = figures


def shot_prefix_tokens(arm: Arm, entry: dict, usages: dict[ArmKey, tuple[Arm, dict]]) -> float | None:
    """Tokens per request that the k shots add: this arm's mean input minus the 0-shot arm's.

    Both arms prompt the same evaluation examples, so the difference is the shared shot prefix. None
    without a 0-shot arm of the same model, seed and variant (then no caching estimate).
    """
    if arm.n == 0:
        return 0.0
    # Same seed first; any 0-shot arm of the model otherwise (a deduplicated arm may carry no tokens).
    candidates = [u for k, u in sorted(usages.items(), key=lambda kv: kv[0][3] != arm.seed)
                  if k[1] == arm.model and k[2] == 0 and k[4] == arm.variant and u[1].get("input_tokens")]
    zero = candidates[0] if candidates else None
    records = int(entry.get("records") or 0)
    if zero is None or not records or not zero[1].get("records"):
        return None
    return max(0.0, int(entry.get("input_tokens") or 0) / records
               - int(zero[1].get("input_tokens") or 0) / int(zero[1]["records"]))
