"""On-demand requests (Converse), each answer durable before its worker sends the next request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from switchpoint.core.contract import JobError
from switchpoint.infer_bedrock.context import Context, log
from switchpoint.infer_bedrock.requests import Request, converse_kwargs
from switchpoint.infer_bedrock.state import Answer

# The call itself is refused: every other request would be refused too, so the run stops (nothing paid).
FATAL_CODES = frozenset({"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException",
                         "ExpiredTokenException", "InvalidSignatureException", "MissingAuthenticationTokenException"})
# Worth another run: a record failing with these keeps its error, and the run does not stop.
TRANSIENT_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
                             "ModelTimeoutException", "ModelNotReadyException", "ServiceQuotaExceededException",
                             "ModelErrorException"})


def converse_one(ctx: Context, request: Request) -> Answer:
    """One Converse call; botocore retries throttling and 5xx (adaptive mode), then we record the error."""
    from botocore.exceptions import BotoCoreError, ClientError

    start = time.perf_counter()
    try:
        response = ctx.runtime.converse(**converse_kwargs(request, ctx.model_id, ctx.max_tokens))
    except ClientError as err:
        info = err.response.get("Error", {})
        if info.get("Code") in FATAL_CODES:
            raise JobError(f"on-demand call to {ctx.model_id} refused ({info.get('Code')}: "
                           f"{str(info.get('Message', ''))[:200]}); check the model id, region, model access and "
                           "your IAM policy (manifests/iam/README.md)") from err
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


def error_code(answer: Answer) -> str:
    """The service's error code (or the client exception's name) of a failed answer."""
    return (answer.error or "").removeprefix("on-demand ").split(":", 1)[0]


def run_on_demand(ctx: Context, todo: dict[str, Request], what: str, *, retried: bool = False) -> dict[str, Answer]:
    """Ask every request once with ``--concurrency`` workers. Each worker saves its answer before it
    takes the next request, so a kill loses at most the calls in flight, none that were answered.
    A failure that stops the run (or Ctrl-C) cancels every request not yet sent."""
    from tqdm import tqdm

    answers: dict[str, Answer] = {}
    if not todo:
        return answers
    log(f"{what}: {len(todo)} on-demand requests, concurrency {ctx.settings.concurrency}")
    pool = ThreadPoolExecutor(max_workers=ctx.settings.concurrency)
    try:
        futures = {pool.submit(ask_and_save, ctx, h, request, retried): h for h, request in todo.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc=what, unit="req", disable=None):
            answers[futures[future]] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not retried:
        check_not_all_failed(answers, what)
    return answers


def check_not_all_failed(answers: dict[str, Answer], what: str) -> None:
    """Every request failing alike (not throttling or a server error) is a setup problem, not
    a model's answers: stop with one line rather than score every record 0."""
    if not answers or any(a.ok for a in answers.values()):
        return
    codes = {error_code(a) for a in answers.values()}
    if len(codes) == 1 and not codes <= TRANSIENT_CODES:
        first = next(iter(answers.values())).error
        raise JobError(f"{what}: every one of {len(answers)} requests failed ({first}); nothing was paid; "
                       "check --model-id or the api model entry, --region and the request limits")
