"""On-demand requests (Converse), each answer durable before its worker sends the next request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from switchpoint.infer_bedrock.context import Context, log
from switchpoint.infer_bedrock.requests import Request, converse_kwargs
from switchpoint.infer_bedrock.state import Answer


def converse_one(ctx: Context, request: Request) -> Answer:
    """One Converse call; botocore retries throttling and 5xx (adaptive mode), then we record the error."""
    from botocore.exceptions import BotoCoreError, ClientError

    start = time.perf_counter()
    try:
        response = ctx.runtime.converse(**converse_kwargs(request, ctx.model_id, ctx.max_tokens))
    except ClientError as err:
        info = err.response.get("Error", {})
        return Answer(error=f"on-demand {info.get('Code', 'error')}: {str(info.get('Message', ''))[:200]}",
                      latency_s=time.perf_counter() - start)
    except BotoCoreError as err:
        return Answer(error=f"on-demand {type(err).__name__}: {str(err)[:200]}", latency_s=time.perf_counter() - start)
    content = response.get("output", {}).get("message", {}).get("content", [])
    usage = response.get("usage", {})
    return Answer(text="".join(block.get("text", "") for block in content), input_tokens=usage.get("inputTokens"),
                  output_tokens=usage.get("outputTokens"), stop_reason=response.get("stopReason"),
                  latency_s=time.perf_counter() - start, mode="on-demand")


def ask_and_save(ctx: Context, request_hash: str, request: Request, retried: bool) -> Answer:
    """Ask once; a paid answer is marked (retried or not) and made durable before this worker goes on.

    Errors are not saved: Bedrock bills no tokens for a refused or throttled call, and a later run
    should ask again."""
    answer = converse_one(ctx, request)
    answer.retried = retried
    if answer.ok:
        ctx.state.save_answer(request_hash, answer)
    return answer


def run_on_demand(ctx: Context, todo: dict[str, Request], what: str, *, retried: bool = False) -> dict[str, Answer]:
    """Ask every request once with ``--concurrency`` workers. Each worker saves its answer before it
    takes the next request, so a kill loses at most the calls in flight, none that were answered."""
    from tqdm import tqdm

    answers: dict[str, Answer] = {}
    if not todo:
        return answers
    log(f"{what}: {len(todo)} on-demand requests, concurrency {ctx.settings.concurrency}")
    with ThreadPoolExecutor(max_workers=ctx.settings.concurrency) as pool:
        futures = {pool.submit(ask_and_save, ctx, h, request, retried): h for h, request in todo.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc=what, unit="req", disable=None):
            answers[futures[future]] = future.result()
    return answers
