"""What a sweep will cost before it runs: GPU hours per job and API tokens and dollars per API model.

Rough on purpose (FLOPs at an assumed utilisation; Claude tokens by ``pricing.estimate_tokens``, a
deliberately high count), but on realistic lengths: a task may state the typical length of its real
inputs (``lengths:``) where its bundled sample is shorter (XL-Sum's sample keeps short articles only).
Every dollar comes from ``switchpoint.core.pricing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from switchpoint.core import manifests, pricing
from switchpoint.core.pricing import estimate_tokens
from switchpoint.orchestration.steps import (
    Step,
    api_mode,
    bedrock_setting,
    model_entries,
    plan_steps,
    train_settings,
)

TRAIN_MFU = 0.35
INFER_EFFICIENCY = 0.05  # decoding is memory-bound: a small fraction of peak FLOPs
UNCAPPED_EVAL = 1000  # eval examples assumed when the sweep does not cap the eval set
MAX_USD_HEADROOM = 1.5  # a default API budget: the estimate plus half again


@dataclass(frozen=True)
class Lengths:
    """Estimated tokens of one example: the rendered input (with the instruction) and one reference."""

    input_tokens: float
    reference_tokens: float
    basis: str


def example_lengths(task: dict) -> Lengths:
    """Tokens of a typical example: the bundled sample's mean, or the task's stated real lengths when
    those are longer (rough defaults for a task with neither)."""
    from switchpoint.core.prompts import render_input
    from switchpoint.data.job import read_source, to_canonical

    instruction = estimate_tokens(task["prompt"]["instruction"])
    stated = task.get("lengths")
    sample_in = sample_ref = 0.0
    if "bundled" in task:
        source = {**task["bundled"]["eval"], "type": task["bundled"]["eval"].get("type", "bundled")}
        rows = to_canonical(read_source(source, "eval"), task, "eval")
        sample_in = sum(estimate_tokens(render_input(task, r)) for r in rows) / len(rows)
        sample_ref = sum(estimate_tokens(r["references"][0]) for r in rows) / len(rows)
    if stated and stated.get("input_chars", 0) > sample_in:
        return Lengths(stated["input_chars"] + instruction, max(stated.get("reference_chars", 0), sample_ref),
                       "the task's stated lengths (lengths: in its manifest)")
    if sample_in:
        return Lengths(sample_in + instruction, sample_ref, "the bundled sample")
    return Lengths(1000.0 + instruction, 50.0, "defaults (1,000 input and 50 reference tokens)")


def eval_count(sweep: dict, task: dict | None = None) -> int:
    """Eval examples per arm: the sweep's cap, else the task's stated eval rows, else a round guess."""
    rows = ((task or {}).get("lengths") or {}).get("eval_rows")
    cap = sweep["data"]["eval_size"]
    if cap is not None:
        return min(cap, rows) if rows else cap
    return rows or UNCAPPED_EVAL


def api_estimate(sweep: dict, task: dict, api_model: str, lengths: Lengths | None = None) -> dict[str, Any]:
    """Records, tokens, mode and dollars of one API model's arms."""
    from switchpoint.infer_bedrock.settings import arm_mode

    lengths = lengths or example_lengths(task)
    entry = sweep.get("api_model_entries", {}).get(api_model) or manifests.get_api_model(api_model)
    fs = sweep["fewshot_api"]
    shots = fs["shots"] if fs["shots"] is not None else manifests.sweep_sizes(sweep, task["name"])
    variants = max(1, len(fs["variants"].get(task["name"], []) or [None]))
    seeds = len(sweep["seeds"])
    count = eval_count(sweep, task)
    records = count * len(shots) * seeds * variants
    per_seed = sum((k + 1) * lengths.input_tokens + k * lengths.reference_tokens for k in shots)
    input_tokens = count * per_seed * seeds * variants
    output_tokens = records * lengths.reference_tokens * 1.2
    settings = {"mode": api_mode(sweep, api_model), "role_arn": bedrock_setting(sweep, "role_arn"),
                "s3_prefix": bedrock_setting(sweep, "s3_prefix")}
    mode, notice = arm_mode({**entry, "name": api_model}, settings, count)
    usd = pricing.token_usd(input_tokens, output_tokens, entry, batch=mode == "batch")
    on_demand_usd = pricing.token_usd(input_tokens, output_tokens, entry)
    largest = max(shots, default=0)
    return {"api_model": api_model, "records": records, "input_tokens": int(input_tokens),
            "output_tokens": int(output_tokens), "mode": mode, "notice": notice, "usd": usd,
            "on_demand_usd": on_demand_usd,
            "largest_prompt_tokens": int((largest + 1) * lengths.input_tokens + largest * lengths.reference_tokens),
            "entry": entry}


def default_max_usd(estimate_usd: float) -> float:
    """A budget for an API arm whose sweep sets none: the estimate plus headroom, in whole dollars."""
    return float(max(1, math.ceil(estimate_usd * MAX_USD_HEADROOM)))


def _train_hours(sweep: dict, step: Step, entry: dict, sizes: list[int], lengths: Lengths, tflops: float) -> float:
    t = train_settings(sweep, step.hyperparameters)
    params = float(entry.get("params_b") or 1.0) * 1e9
    steps = sum(max(t.min_steps, math.ceil(t.epochs * math.ceil(n / t.batch_size))) for n in sizes if n > 0)
    tokens = steps * t.batch_size * (lengths.input_tokens + lengths.reference_tokens) * len(sweep["seeds"])
    return (6 * params * tokens / (tflops * 1e12 * TRAIN_MFU) + 300) / 3600 if tflops else 0.0


def _infer_hours(sweep: dict, task: dict, entry: dict, sizes: list[int], lengths: Lengths, tflops: float) -> float:
    params = float(entry.get("params_b") or 1.0) * 1e9
    seeds, count = len(sweep["seeds"]), eval_count(sweep, task)
    shots = sweep["fewshot_local"]["shots"] if sweep["fewshot_local"]["enabled"] else []
    prompt_tokens = count * (len(sizes) * seeds * lengths.input_tokens
                             + sum((k + 1) * lengths.input_tokens for k in shots) * seeds)
    gen_tokens = count * (len(sizes) * seeds + len(shots) * seeds) * task["generation"]["max_new_tokens"]
    seconds = (2 * params * prompt_tokens / (tflops * 1e12 * TRAIN_MFU)
               + 2 * params * gen_tokens / (tflops * 1e12 * INFER_EFFICIENCY) + 300) if tflops else 0.0
    return seconds / 3600


def estimate_plan(sweep: dict, task: dict) -> list[dict[str, Any]]:
    """Rows of (step, instance, hours, dollars, API records/tokens) before anything runs."""
    prices = manifests.load_prices()
    entries = model_entries(sweep)
    sizes = manifests.sweep_sizes(sweep, task["name"])
    lengths = example_lengths(task)
    rows = []
    for step in plan_steps(sweep, task):
        tflops = prices["instances"].get(step.instance_type, {}).get("gpu_tflops_bf16") or 0
        row: dict[str, Any] = {"step": step.name, "job": step.job, "instance": step.instance_type, "hours": 0.0,
                               "usd": 0.0, "api_records": 0, "api_input_tokens": 0, "api_output_tokens": 0}
        if step.job == "train":
            row["hours"] = _train_hours(sweep, step, entries[step.model], sizes, lengths, tflops)
        elif step.job == "infer-local":
            row["hours"] = _infer_hours(sweep, task, entries[step.model], sizes, lengths, tflops)
        elif step.job == "infer-bedrock":
            api = api_estimate(sweep, task, step.model, lengths)
            row.update(api_records=api["records"], api_input_tokens=api["input_tokens"],
                       api_output_tokens=api["output_tokens"], usd=api["usd"], mode=api["mode"])
        else:
            row["hours"] = 0.05 if step.instance_type != "local" else 0.0
        row["usd"] += pricing.estimate_usd(row["hours"] * 3600, step.instance_type, prices, spot=step.spot)
        rows.append(row)
    return rows
