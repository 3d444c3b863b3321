"""The job's outputs: one predictions file per complete arm, then ``bedrock_metrics.json`` (written last)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchpoint.core.predictions import prediction_record, write_predictions
from switchpoint.core.pricing import token_usd
from switchpoint.core.prompts import postprocess
from switchpoint.infer_bedrock.context import Context, log
from switchpoint.infer_bedrock.requests import ArmPlan
from switchpoint.infer_bedrock.state import Answer

METRICS_FILE = "bedrock_metrics.json"
INCOMPLETE = "incomplete: its batch job did not finish; re-run to resubmit the missing records"


def _arm_row(plan: ArmPlan) -> dict[str, Any]:
    return {"arm": plan.arm.to_dict(), "file": None, "mode": plan.mode, "records": len(plan.requests),
            "input_tokens": 0, "output_tokens": 0, "usd": 0.0, "records_ok": 0, "records_error": 0,
            "records_retried": 0, "truncated_outputs": 0, "est_input_tokens": plan.est_input_tokens,
            "est_output_tokens": plan.est_output_tokens, "est_usd": round(plan.est_usd, 6), "skipped": plan.skipped}


def write_arm(ctx: Context, plan: ArmPlan, answers: dict[str, Answer], out_dir: Path) -> dict[str, Any]:
    """An arm's predictions file (when every request has an answer) and its row of the metrics."""
    row = _arm_row(plan)
    if plan.skipped:
        return row
    hashes = [ctx.hash_of[r.record_id] for r in plan.requests]
    if any(h not in answers for h in hashes):
        row["skipped"] = INCOMPLETE
        return row
    records = []
    for request, h in zip(plan.requests, hashes):
        a = answers[h]
        records.append(prediction_record(
            plan.arm, request.example["id"], postprocess(ctx.task, a.text) if a.ok else "",
            request.example.get("references", []), input_tokens=a.input_tokens, output_tokens=a.output_tokens,
            latency_s=a.latency_s, error=a.error))
        row["input_tokens"] += a.input_tokens or 0
        row["output_tokens"] += a.output_tokens or 0
        # What this arm costs on its own (its share of duplicates included); the top-level usd
        # counts each distinct request once, which is the bill.
        row["usd"] += token_usd(a.input_tokens or 0, a.output_tokens or 0, ctx.api_model, batch=a.mode == "batch")
        row["records_ok" if a.ok else "records_error"] += 1
        row["records_retried"] += int(a.retried)
        row["truncated_outputs"] += int(a.stop_reason == "max_tokens")
    write_predictions(out_dir / plan.arm.filename, records)
    row["file"] = plan.arm.filename
    row["usd"] = round(row["usd"], 6)
    return row


def write_metrics(ctx: Context, plans: Sequence[ArmPlan], answers: dict[str, Answer], jobs: list[dict],
                  out_dir: Path, started: float, notices: Sequence[str] = ()) -> dict[str, Any]:
    """Predictions per complete arm, then bedrock_metrics.json (written last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    api = ctx.api_model
    arms = [write_arm(ctx, plan, answers, out_dir) for plan in plans]
    used = {ctx.hash_of[r.record_id] for p in plans if not p.skipped for r in p.requests}
    paid = [answers[h] for h in sorted(used) if h in answers]
    metrics = {
        "api_model": api["name"], "model_id": ctx.model_id, "region": ctx.region, "task": ctx.task["name"],
        "max_tokens": ctx.max_tokens, "price_date": api["price_date"], "input_per_mtok": api["input_per_mtok"],
        "output_per_mtok": api["output_per_mtok"], "batch_discount": api["batch_discount"],
        "notices": list(notices),
        "jobs": jobs,
        "requests_distinct": len(used),
        "records_ok": sum(r["records_ok"] for r in arms), "records_error": sum(r["records_error"] for r in arms),
        "records_retried": sum(r["records_retried"] for r in arms),
        "truncated_outputs": sum(r["truncated_outputs"] for r in arms),
        "input_tokens": sum(a.input_tokens or 0 for a in paid), "output_tokens": sum(a.output_tokens or 0 for a in paid),
        "usd": round(sum(token_usd(a.input_tokens or 0, a.output_tokens or 0, api, batch=a.mode == "batch")
                         for a in paid), 6),
        "wall_s": round(time.time() - started, 3),
        "arms": arms,
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    done = [r for r in arms if not r["skipped"]]
    log(f"{len(done)} arms written, {len(arms) - len(done)} skipped; {metrics['records_ok']} ok, "
        f"{metrics['records_error']} errors, {metrics['records_retried']} retried; "
        f"{metrics['input_tokens']} in / {metrics['output_tokens']} out tokens, ${metrics['usd']:.4f} -> {out_dir}")
    return metrics
