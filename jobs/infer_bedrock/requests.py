"""What the infer-bedrock job sends to Claude, what it should cost, and how batch inputs are split.

Kept apart from the job so that ``switchpoint plan`` (and tests) can estimate tokens and dollars
without boto3. One ``Request`` per (arm, eval example); the same system text and turns become the
batch record body (Anthropic Messages) and the on-demand Converse call, so both modes ask the same
question.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from switchpoint.core.contract import JobError
from switchpoint.core.predictions import Arm
from switchpoint.core.pricing import estimate_tokens
from switchpoint.core.prompts import build_turns

ANTHROPIC_VERSION = "bedrock-2023-05-31"
# Bedrock batch limits (the minimum records per job is an adjustable quota: a setting, --batch-min-records).
BATCH_MAX_RECORDS = 50_000
BATCH_MAX_FILE_BYTES = 1_000_000_000  # 1 GB per input file
# Record ids: "R" + 3-digit arm index + 7-digit example index = 11 alphanumeric characters, the
# form the Bedrock user guide shows ("CALL0000001"), so they pass its validation.
MAX_ARMS = 1000
MAX_EXAMPLES = 10_000_000


@dataclass
class Request:
    """One question for Claude: which arm and example it is for, and the text it carries."""

    record_id: str
    arm_index: int
    example: dict[str, Any]
    system: str
    turns: list[dict[str, str]]
    est_input_tokens: int = 0
    est_output_tokens: int = 0


@dataclass
class ArmPlan:
    arm: Arm
    requests: list[Request] = field(default_factory=list)
    mode: str = "on-demand"  # batch | on-demand
    skipped: str | None = None
    est_input_tokens: int = 0
    est_output_tokens: int = 0
    est_usd: float = 0.0


def record_id(arm_index: int, example_index: int) -> str:
    if not 0 <= arm_index < MAX_ARMS or not 0 <= example_index < MAX_EXAMPLES:
        raise JobError(f"record id out of range (arm {arm_index}, example {example_index}); "
                       f"at most {MAX_ARMS} arms and {MAX_EXAMPLES} eval examples per run; split the run")
    return f"R{arm_index:03d}{example_index:07d}"


# Per-message framing (role markers) and the request's own framing, in tokens; generous guesses.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16


def estimate_request_tokens(system: str, turns: Sequence[dict[str, str]]) -> int:
    total = REQUEST_OVERHEAD_TOKENS + estimate_tokens(system)
    for turn in turns:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(turn["content"])
    return total


def max_output_tokens(task: dict, api_model: dict) -> int:
    """The task's generation budget, capped by what the model may emit."""
    wanted = int(task["generation"]["max_new_tokens"])
    cap = api_model.get("max_output_tokens")
    return min(wanted, int(cap)) if cap else wanted


def build_arm_requests(task: dict, arm: Arm, arm_index: int, eval_set: Sequence[dict], shots: Sequence[dict],
                       max_tokens: int) -> list[Request]:
    requests = []
    for i, example in enumerate(eval_set):
        system, turns = build_turns(task, example, shots, arm.variant)
        requests.append(Request(record_id(arm_index, i), arm_index, example, system, turns,
                                est_input_tokens=estimate_request_tokens(system, turns),
                                est_output_tokens=max_tokens))
    return requests


def context_guard(requests: Sequence[Request], max_tokens: int, api_model: dict, n_shots: int) -> str | None:
    """Why an arm cannot run (its longest prompt plus the output budget exceeds the context window), or None."""
    if not requests:
        return None
    longest = max(r.est_input_tokens for r in requests)
    window = int(api_model["context_window"])
    if longest + max_tokens > window:
        return (f"context guard: {n_shots} shots need about {longest} input tokens (estimated) + {max_tokens} output "
                f"tokens, more than the {window}-token context window of {api_model['name']}; not truncated")
    return None


# --- request bodies ------------------------------------------------------------------------------
def messages_body(request: Request, max_tokens: int) -> dict[str, Any]:
    """Anthropic Messages body for InvokeModel and batch records; temperature 0 for repeatable answers."""
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": t["role"], "content": [{"type": "text", "text": t["content"]}]} for t in request.turns],
    }
    if request.system:
        body["system"] = request.system
    return body


def batch_line(request: Request, max_tokens: int) -> bytes:
    record = {"recordId": request.record_id, "modelInput": messages_body(request, max_tokens)}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def converse_kwargs(request: Request, model_id: str, max_tokens: int) -> dict[str, Any]:
    """The same question as ``messages_body``, shaped for bedrock-runtime Converse."""
    kwargs: dict[str, Any] = {
        "modelId": model_id,
        "messages": [{"role": t["role"], "content": [{"text": t["content"]}]} for t in request.turns],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0},
    }
    if request.system:
        kwargs["system"] = [{"text": request.system}]
    return kwargs


# --- batch splitting -----------------------------------------------------------------------------
def split_batches(sizes: Sequence[int], max_records: int = BATCH_MAX_RECORDS,
                  max_bytes: int = BATCH_MAX_FILE_BYTES) -> list[tuple[int, int]]:
    """Split records (given by their byte sizes, in order) into contiguous [start, end) jobs.

    Bedrock takes at most ``max_records`` records and ``max_bytes`` per input file. We use the
    fewest jobs that satisfy both and make them about equal in count, rather than filling jobs
    greedily, because a greedy split of 50,001 records would leave a 1-record job below the
    100-record minimum.
    """
    total = len(sizes)
    if total == 0:
        return []
    if max(sizes) > max_bytes:
        raise JobError(f"one batch record is {max(sizes)} bytes, above Bedrock's {max_bytes}-byte input file limit; "
                       "use fewer shots or --mode on-demand")
    parts = max(math.ceil(total / max_records), math.ceil(sum(sizes) / max_bytes))
    while True:
        bounds = [(total * i // parts, total * (i + 1) // parts) for i in range(parts)]
        if all(sum(sizes[a:b]) <= max_bytes for a, b in bounds):
            return bounds
        parts += 1  # uneven record sizes: one more part until every file fits
