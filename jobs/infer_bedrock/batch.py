"""Bedrock batch inference: submit (recorded before the call), poll, read outputs, retry record errors.

Records of every batch arm go to ``<s3 prefix>/<task>__<api model>/<key>/input.jsonl``, one job per
at most 50,000 records; Bedrock writes ``<output uri>/<job id>/input.jsonl.out`` (any order, joined on
recordId) and ``manifest.json.out``. Each job is written to the durable state as an *intent* (name,
client token, files, record hashes) before CreateModelInvocationJob and as *submitted* (its ARN)
after, so a kill at any point leads a re-run to the same job, never to a second one.
"""

from __future__ import annotations

import hashlib
import json
import re

from switchpoint.core.contract import JobError
from switchpoint.core.store import open_store
from switchpoint.infer_bedrock import context
from switchpoint.infer_bedrock.context import Context, aws_call, log
from switchpoint.infer_bedrock.on_demand import run_on_demand
from switchpoint.infer_bedrock.requests import (
    BATCH_MAX_FILE_BYTES,
    BATCH_MAX_RECORDS,
    Request,
    batch_line,
    split_batches,
)
from switchpoint.infer_bedrock.state import Answer

GOOD_FINAL = ("Completed", "PartiallyCompleted")
BAD_FINAL = ("Failed", "Stopped", "Expired")
FINAL = GOOD_FINAL + BAD_FINAL
MAX_POLL_INTERVAL_S = 300.0


def job_name(task: str, api_model: str, key: str, index: int) -> str:
    """At most 63 characters of [a-zA-Z0-9+.-], starting alphanumeric; the key keeps it unique."""
    tail = f"-{key[:10]}-{index}"
    head = re.sub(r"[^a-zA-Z0-9+.-]", "-", f"sp-{task[:20]}-{api_model}")[: 63 - len(tail)]
    return head + tail


# --- submission ---------------------------------------------------------------------------------
def submit_batch(ctx: Context, todo: dict[str, Request]) -> None:
    """Upload the records no live or finished job covers and create one job per <= 50,000 records."""
    assert ctx.work is not None
    order = sorted(todo)
    lines = [batch_line(todo[h], ctx.max_tokens) for h in order]
    for start, end in split_batches([len(line) for line in lines], BATCH_MAX_RECORDS, BATCH_MAX_FILE_BYTES):
        chunk = b"".join(lines[start:end])
        # The key depends on the records, the prefix and how many jobs the state knows: a re-run
        # after a kill gets the same key (and client token), a resubmission after a failed job a new one.
        index = len(ctx.state.jobs)
        key = hashlib.sha256(chunk + f"|{ctx.model_id}|{ctx.work.uri}|{index}".encode()).hexdigest()
        folder = ctx.work.child(key[:16])
        folder.write_bytes("input.jsonl", chunk)
        job = ctx.state.job_intent({
            "key": key, "job_name": job_name(ctx.task["name"], ctx.api_model["name"], key, index),
            "token": key[:64], "input_uri": f"{folder.uri}/input.jsonl", "output_uri": f"{folder.uri}/output/",
            "records": end - start, "record_hashes": {todo[h].record_id: h for h in order[start:end]}})
        create_job(ctx, job)


def create_job(ctx: Context, job: dict) -> None:
    """CreateModelInvocationJob for a recorded intent; its client token makes a repeat return the same job."""
    response = aws_call(f"submitting batch job {job['job_name']}", ctx.bedrock.create_model_invocation_job,
                        jobName=job["job_name"], roleArn=ctx.settings.role_arn, modelId=ctx.model_id,
                        clientRequestToken=job["token"], timeoutDurationInHours=ctx.settings.job_timeout_hours,
                        inputDataConfig={"s3InputDataConfig": {"s3Uri": job["input_uri"], "s3InputFormat": "JSONL"}},
                        outputDataConfig={"s3OutputDataConfig": {"s3Uri": job["output_uri"]}})
    ctx.state.job_submitted(job["key"], response["jobArn"])
    log(f"submitted batch job {job['job_name']} ({job['records']} records): {response['jobArn']}")


# --- polling and outputs ------------------------------------------------------------------------
def poll_jobs(ctx: Context, jobs: list[dict]) -> None:
    """Poll until every job is final, backing off from --poll-seconds to 5 minutes between rounds."""
    interval = ctx.settings.poll_seconds
    cap = max(interval, MAX_POLL_INTERVAL_S)
    waiting = [j for j in jobs if j["status"] not in FINAL]
    while waiting:
        for job in waiting:
            got = aws_call(f"polling batch job {job['job_name']}", ctx.bedrock.get_model_invocation_job,
                           jobIdentifier=job["job_arn"])
            if got["status"] != job["status"]:
                ctx.state.job_status(job["key"], got["status"], got.get("message", "") or "")
                log(f"batch job {job['job_name']}: {job['status']}" + (f" ({job['message']})" if job["message"] else ""))
        waiting = [j for j in waiting if j["status"] not in FINAL]
        if waiting:
            context.sleep(interval)
            interval = min(interval * 1.5, cap)


def read_job_outputs(job: dict) -> tuple[dict[str, Answer], dict | None]:
    """Answers by request hash from every ``*.jsonl.out`` of the job, and its ``manifest.json.out``."""
    job_id = job["job_arn"].rsplit("/", 1)[-1]
    out = open_store(f"{job['output_uri'].rstrip('/')}/{job_id}")
    answers: dict[str, Answer] = {}
    manifest = None
    for rel in out.list():
        if rel.endswith("manifest.json.out"):
            try:
                manifest = json.loads(out.read_text(rel))
            except json.JSONDecodeError as err:
                raise JobError(f"{out.uri}/{rel}: not valid JSON ({err.msg})") from err
        elif rel.endswith(".jsonl.out"):
            for lineno, line in enumerate(out.read_text(rel).splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise JobError(f"{out.uri}/{rel}:{lineno}: not valid JSON ({err.msg})") from err
                h = job["record_hashes"].get(str(row.get("recordId")))
                if h is not None:  # else not ours
                    answers[h] = parse_batch_line(row)
    return answers, manifest


def parse_batch_line(row: dict) -> Answer:
    if row.get("error"):
        err = row["error"]
        return Answer(error=f"batch {err.get('errorCode')}: {str(err.get('errorMessage', ''))[:200]}", mode="batch")
    output = row.get("modelOutput") or {}
    usage = output.get("usage") or {}
    text = "".join(block.get("text", "") for block in output.get("content", []) if block.get("type", "text") == "text")
    return Answer(text=text, input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"),
                  stop_reason=output.get("stop_reason"), mode="batch")


# --- the phase ----------------------------------------------------------------------------------
def relevant_jobs(ctx: Context, needed: dict[str, Request]) -> list[dict]:
    return [j for j in ctx.state.jobs.values() if not set(needed).isdisjoint(j["record_hashes"].values())]


def paid_in_ended_jobs(jobs: list[dict]) -> dict[str, Answer]:
    """Records a Failed/Stopped/Expired job still answered were paid: keep them."""
    answers: dict[str, Answer] = {}
    for job in jobs:
        if job["status"] in BAD_FINAL:
            got, _ = read_job_outputs(job)
            answers.update({h: a for h, a in got.items() if a.ok})
    return answers


def submit_uncovered(ctx: Context, needed: dict[str, Request], answers: dict[str, Answer],
                     on_demand: dict[str, Request]) -> dict[str, Request]:
    """Create recorded-but-unsubmitted jobs, then submit what no job covers; returns the on-demand
    requests (plus batch leftovers below the batch minimum)."""
    jobs = relevant_jobs(ctx, needed)
    for job in jobs:
        if job["job_arn"] is None:  # killed between the intent and the create call
            create_job(ctx, job)
    covered = {h for j in jobs if j["status"] not in BAD_FINAL for h in j["record_hashes"].values()}
    todo = {h: r for h, r in needed.items() if h not in covered and h not in answers}
    if todo and len(todo) < ctx.settings.batch_min_records:
        log(f"{len(todo)} batch records are fewer than the batch minimum ({ctx.settings.batch_min_records}); "
            "asking them on-demand")
        return {**on_demand, **todo}
    if todo:
        submit_batch(ctx, todo)
    return on_demand


def collect_outputs(ctx: Context, jobs: list[dict], needed: dict[str, Request], answers: dict[str, Answer],
                    ended_before: set[str]) -> dict[str, dict | None]:
    """Fill ``answers`` from finished jobs' outputs; note jobs that ended without answering. Returns
    each job's manifest."""
    manifests: dict[str, dict | None] = {}
    for job in jobs:
        unanswered = [h for h in job["record_hashes"].values() if h in needed and not (h in answers and answers[h].ok)]
        if job["status"] in GOOD_FINAL:
            got, manifests[job["key"]] = read_job_outputs(job)
            if not got:  # retrying a whole job on-demand would double its price: stop and say so
                ctx.problems.append(f"batch job {job['job_name']} is {job['status']} but no output lines were found "
                                    f"under {job['output_uri']}; check the bucket (and the service role's s3:PutObject)")
                continue
            for h in unanswered:
                answers[h] = got.get(h) or Answer(error="batch: no output line for this record", mode="batch")
        elif job["status"] in BAD_FINAL and job["key"] not in ended_before and unanswered:
            ctx.problems.append(f"batch job {job['job_name']} ended {job['status']}"
                                + (f" ({job['message']})" if job.get("message") else "")
                                + f" with {len(unanswered)} records unanswered; re-run to resubmit only those")
    return manifests


def retry_batch_errors(ctx: Context, needed: dict[str, Request], answers: dict[str, Answer]) -> None:
    """Records that erred in a finished batch job are asked again on-demand, marked retried before saved."""
    retry = {h: needed[h] for h, a in answers.items() if h in needed and not a.ok and a.mode == "batch"}
    if not retry:
        return
    batch_errors = {h: answers[h].error for h in retry}
    for h, answer in run_on_demand(ctx, retry, "retrying batch errors", retried=True).items():
        if not answer.ok:
            answer.error = f"{batch_errors[h]}; then {answer.error}"
        answers[h] = answer


def job_rows(jobs: list[dict], manifests: dict[str, dict | None]) -> list[dict]:
    rows = []
    for job in jobs:
        manifest = manifests.get(job["key"]) or {}
        rows.append({"job_arn": job["job_arn"], "job_name": job["job_name"], "status": job["status"],
                     "message": job.get("message", ""), "records": job["records"],
                     "records_ok": manifest.get("successRecordCount"), "records_error": manifest.get("errorRecordCount"),
                     "input_tokens": manifest.get("inputTokenCount"), "output_tokens": manifest.get("outputTokenCount")})
    return rows


def run_batch_phase(ctx: Context, needed: dict[str, Request],
                    on_demand: dict[str, Request]) -> tuple[dict[str, Answer], list[dict]]:
    """Submit what is not covered, run on-demand arms while the jobs run, poll, read, retry errors."""
    answers = paid_in_ended_jobs(relevant_jobs(ctx, needed))
    ended_before = {j["key"] for j in relevant_jobs(ctx, needed) if j["status"] in FINAL}
    on_demand = submit_uncovered(ctx, needed, answers, on_demand)
    answers.update(run_on_demand(ctx, on_demand, "on-demand arms"))  # runs while the batch jobs wait
    jobs = relevant_jobs(ctx, needed)
    poll_jobs(ctx, jobs)
    manifests = collect_outputs(ctx, jobs, needed, answers, ended_before)
    retry_batch_errors(ctx, needed, answers)
    return answers, job_rows(jobs, manifests)
