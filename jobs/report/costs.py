"""The cost model: dollars per arm from measured seconds and tokens, and the break-even volume.

Instances: seconds x the instance's hourly price in ``manifests/prices.yaml``. The seconds are
SageMaker's billable seconds where the orchestration recorded them (``runs/<step>.json``), else the
wall seconds the job measured itself. Instances bill wall-clock time, so wall seconds are priced and
GPU seconds are only reported. A job (one train or infer-local run per model) is shared among its
adapters/arms in proportion to their own wall seconds, so the base-model load is spread over them.

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
from typing import Any, Iterable

from switchpoint.core.contract import JobError
from switchpoint.core.predictions import Arm
from switchpoint.core.pricing import (
    HOURS_PER_MONTH,
    JobTime,
    batch_usd,
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
    text = text[:-len(".jsonl")] if text.endswith(".jsonl") else text
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


# --- reading the run folder ------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise JobError(f"{path}: cannot read ({err.strerror or err})") from err
    except json.JSONDecodeError as err:
        raise JobError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); re-run the step that wrote it") from err


def read_runs(run_dir: Path) -> dict[str, dict]:
    """``runs/<step>.json`` by step name (empty when the orchestration wrote none)."""
    folder = Path(run_dir) / "runs"
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        value = _read_json(path)
        if isinstance(value, dict):
            out[str(value.get("step") or path.stem)] = {**value, "_file": f"runs/{path.name}"}
    return out


def find_run(runs: dict[str, dict], job: str, model: str) -> dict | None:
    """The run of ``job`` for ``model``: a step named ``<job><sep><model>`` (sep one of - _ / :)."""
    for step, value in runs.items():
        if step.startswith(job) and len(step) > len(job) + len(model) and step.endswith(model) \
                and step[len(job)] in "-_/:" and step[-len(model) - 1] in "-_/:":
            return value
    return None


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


def collect(run_dir: Path, prices: dict, api_models: dict, sweep: dict | None) -> RunCosts:
    """Read train/infer/bedrock metrics and runs/*.json under a run folder into dollar figures."""
    run_dir = Path(run_dir)
    out = RunCosts()
    runs = read_runs(run_dir)
    if not runs:
        out.notes.append("no runs/*.json: dollars use the wall seconds the jobs measured, not SageMaker billable seconds")
    train_type = sweep["train"]["instance_type"] if sweep else None
    train_spot = bool(sweep["train"].get("spot")) if sweep else False
    infer_type = sweep["infer"]["instance_type"] if sweep else None
    _collect_train(run_dir, runs, prices, train_type, train_spot, out)
    _collect_local(run_dir, runs, prices, infer_type, out)
    _collect_api(run_dir, api_models, out)
    return out


def _collect_train(run_dir: Path, runs: dict, prices: dict, instance_type: str | None, spot: bool, out: RunCosts) -> None:
    # The train step's store prefix is train/<model>/, holding the job's /opt/ml/checkpoints (see DESIGN.md).
    root = run_dir / "train"
    models = sorted(p.name for p in root.iterdir() if (p / "checkpoints" / "adapters").is_dir()) if root.is_dir() else []
    if not models:
        out.notes.append("no train/*/checkpoints/adapters/: training seconds and dollars unknown")
    for model in models:
        adapters = root / model / "checkpoints" / "adapters"
        rel = f"train/{model}/checkpoints/adapters"
        metrics = {}
        for path in sorted(adapters.glob("seed=*/n=*/train_metrics.json")):
            value = _read_json(path)
            seed, n = int(path.parent.parent.name[5:]), int(path.parent.name[2:])
            metrics[(model, seed, n)] = value
        summary_path = adapters / "train_summary.json"
        summary = _read_json(summary_path) if summary_path.exists() else {}
        for entry in summary.get("adapters", []):
            if entry.get("skipped"):
                out.skipped.append({"arm": f"finetune {model} n={entry.get('n')} seed={entry.get('seed')}",
                                    "reason": str(entry["skipped"]), "source": f"{rel}/train_summary.json"})
        if not metrics:
            out.notes.append(f"{rel}/: no train_metrics.json, training dollars unknown")
            continue
        job_wall = summary.get("wall_s")
        if job_wall is None:
            job_wall = sum(float(m.get("wall_s") or 0) for m in metrics.values())
        job = _job_time(find_run(runs, "train", model), instance_type, spot, job_wall,
                        f"{rel}/train_summary.json" if summary else f"{rel}/*/train_metrics.json")
        total_od, total_spot, basis = job_usd(job, prices)
        weights = {k: float(m.get("wall_s") or 0) for k, m in metrics.items()}
        od, sp = split(total_od, weights), split(total_spot, weights)
        for key, m in metrics.items():
            out.train[key] = {"train_usd": od[key], "train_usd_spot": sp[key], "train_wall_s": m.get("wall_s"),
                              "gpu_seconds": m.get("gpu_seconds"), "trained_tokens": m.get("trained_tokens"),
                              "train_basis": basis, "train_instance": job.instance_type}


def _collect_local(run_dir: Path, runs: dict, prices: dict, instance_type: str | None, out: RunCosts) -> None:
    root = run_dir / "predictions" / "local"
    for path in sorted(root.glob("*/infer_metrics.json")) if root.is_dir() else []:
        model = path.parent.name
        rel = f"predictions/local/{model}/infer_metrics.json"
        metrics = _read_json(path)
        job = _job_time(find_run(runs, "infer-local", model), instance_type, False, metrics.get("wall_s"), rel)
        total_od, total_spot, basis = job_usd(job, prices)
        out.infer_hourly[model] = instance_rates(prices, job.instance_type)[0]
        arms = {}
        for i, entry in enumerate(metrics.get("arms", [])):
            arm = parse_arm(entry.get("arm"), f"{rel} arms[{i}]")
            if entry.get("skipped"):
                out.skipped.append({"arm": arm.label, "reason": str(entry["skipped"]), "source": rel})
                continue
            arms[arm_key(arm)] = entry
        weights = {k: float(e.get("wall_s") or e.get("examples") or 0) for k, e in arms.items()}
        od, sp = split(total_od, weights), split(total_spot, weights)
        for key, entry in arms.items():
            examples = int(entry.get("examples") or 0)
            per_1k = None if od[key] is None or not examples else od[key] / examples * 1000
            per_1k_spot = None if sp[key] is None or not examples else sp[key] / examples * 1000
            out.local[key] = {"infer_usd": od[key], "infer_usd_spot": sp[key], "infer_wall_s": entry.get("wall_s"),
                              "examples": examples, "input_tokens": entry.get("input_tokens"),
                              "output_tokens": entry.get("output_tokens"), "infer_per_1k": per_1k,
                              "infer_per_1k_spot": per_1k_spot, "infer_basis": basis, "infer_instance": job.instance_type}
    if not out.local:
        out.notes.append("no predictions/local/*/infer_metrics.json: local inference seconds and dollars unknown")


def _collect_api(run_dir: Path, api_models: dict, out: RunCosts) -> None:
    root = run_dir / "predictions" / "bedrock"
    files = sorted(root.glob("*/bedrock_metrics.json")) if root.is_dir() else []
    if not files:
        out.notes.append("no predictions/bedrock/*/bedrock_metrics.json: no API arm was run (offline or no credentials)")
    for path in files:
        rel = f"predictions/bedrock/{path.parent.name}/bedrock_metrics.json"
        metrics = _read_json(path)
        name = metrics.get("api_model") or path.parent.name
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


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]
