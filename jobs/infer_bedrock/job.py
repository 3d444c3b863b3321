"""The ``infer-bedrock`` job: few-shot Claude on Amazon Bedrock, batch or on-demand, with exact costs.

Inputs : the data folder (``--data``, default ``<ml-root>/processing/input/data``): task.json,
         eval.jsonl and train/seed=S/n=N.jsonl, whose first N examples are the N shots, in order.
Outputs (``--out``, default ``<ml-root>/processing/output``)::

    fewshot-api__<api model>__n=N__seed=S[__variant].jsonl   one per arm, the predictions contract
    bedrock_metrics.json                                     jobs, records, tokens, dollars, skipped arms

An arm is (N shots, seed, variant). Each eval example becomes one request: the task's instruction as
system text, the N shots as earlier user/assistant turns, then the question; temperature 0 and the
task's max_new_tokens. Arms with at least ``--batch-min-records`` requests (auto mode) go through
Bedrock batch inference (half price for Claude): records are written as JSONL under ``--s3-prefix``,
one ``create_model_invocation_job`` per at most 50,000 records, polled with backoff until a final
state, and the ``*.jsonl.out`` files are joined back on recordId (their order is not guaranteed).
Records that came back with an error are retried on-demand. Other arms use the Converse API with
botocore's adaptive retries and a thread pool of ``--concurrency``.

Money: every request's identity is a hash of (model id, request body). The state folder (``--state``,
default the S3 prefix) records each submitted job and its record hashes the moment it is submitted,
and caches on-demand answers, so a re-run polls the jobs it already has and never pays for a record
twice; identical requests in different arms (N=0 for every seed) are sent once. A job that ends
Failed, Stopped or Expired fails this run (metrics still written) and its unanswered records are
resubmitted by the next run.

Records that still fail after retries get ``prediction: ""`` and a one-line ``error`` (scored 0). An
answer cut at ``max_tokens`` is kept as it is (``error`` null) and counted in ``truncated_outputs``.
Logs carry counts, states and ids only: no credentials and no prompt text.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, run_job, settings_from
from switchpoint.core.datafolder import (
    data_info,
    load_task_from_data,
    read_eval_set,
    read_train_set,
)
from switchpoint.core.predictions import Arm, prediction_record, write_predictions
from switchpoint.core.pricing import token_usd
from switchpoint.core.prompts import postprocess, variant_spec
from switchpoint.core.store import S3Store, Store, open_store
from switchpoint.infer_bedrock.requests import (
    BATCH_MAX_FILE_BYTES,
    BATCH_MAX_RECORDS,
    ArmPlan,
    Request,
    batch_line,
    build_arm_requests,
    context_guard,
    converse_kwargs,
    max_output_tokens,
    messages_body,
    split_batches,
)

NAME = "infer-bedrock"
METRICS_FILE = "bedrock_metrics.json"
GOOD_FINAL = ("Completed", "PartiallyCompleted")
BAD_FINAL = ("Failed", "Stopped", "Expired")
FINAL = GOOD_FINAL + BAD_FINAL
MAX_POLL_INTERVAL_S = 300.0
NO_CREDENTIALS = "no AWS credentials"


@dataclass
class Settings:
    api_model: str
    model_id: str | None = None
    shots: list[int] | None = None
    seeds: list[int] | None = None
    variants: list[str] | None = None
    mode: str = "auto"
    role_arn: str | None = None
    s3_prefix: str | None = None
    state: str | None = None
    max_usd: float | None = None
    dry_run: bool = False
    concurrency: int = 4
    poll_seconds: float = 60.0
    max_retries: int = 5
    region: str | None = None
    batch_min_records: int = 100
    job_timeout_hours: int = 72
    skip_without_credentials: bool = False
    api_models_file: str | None = None


@dataclass
class Answer:
    """Claude's reply to one request, however it was obtained, and what it cost."""

    text: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    latency_s: float | None = None
    error: str | None = None
    mode: str = "on-demand"  # the price it was paid at: batch | on-demand
    retried: bool = False  # a batch record that erred and was asked again on-demand

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Context:
    settings: Settings
    task: dict
    api_model: dict
    model_id: str
    max_tokens: int
    region: str | None = None
    bedrock: Any = None
    runtime: Any = None
    work: S3Store | None = None  # batch files: <s3 prefix>/<task>__<api model>/
    state: Store | None = None  # jobs.json and ondemand.json: <state>/<task>__<api model>/
    jobs: list[dict] = field(default_factory=list)
    cached: dict[str, Answer] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    hash_of: dict[str, str] = field(default_factory=dict)  # record id -> request hash, computed once


def log(message: str) -> None:
    click.echo(f"{NAME}: {message}", err=True)


# Polling sleeps through this name so tests can interrupt a run between polls (a "kill").
_sleep = time.sleep


# --- planning (no AWS) ------------------------------------------------------------------------
def load_api_model(settings: Settings) -> dict:
    path = Path(settings.api_models_file) if settings.api_models_file else None
    return manifests.get_api_model(settings.api_model, path)


def resolve_model_id(settings: Settings, api_model: dict) -> str:
    """``--model-id``, else the manifest's inference profile (newer Claude needs one), else its model id."""
    return settings.model_id or api_model.get("inference_profile") or api_model["bedrock_model_id"]


def resolve_region(settings: Settings, api_model: dict, model_id: str) -> str | None:
    if settings.region:
        return settings.region
    arn = re.match(r"arn:aws[^:]*:bedrock:([a-z0-9-]+):", model_id)
    return arn.group(1) if arn else api_model.get("region")


def _variants(settings: Settings) -> list[str | None]:
    if not settings.variants:
        return [None]
    return [None if v.lower() in ("none", "null", "-") else v for v in settings.variants]


def plan_arms(settings: Settings, data_dir: Path, api_model: dict) -> tuple[dict, list[ArmPlan], int]:
    """The task, one ArmPlan per (variant, seed, N) with its requests, mode, estimate or skip reason."""
    if settings.mode not in ("auto", "batch", "on-demand"):
        raise JobError(f"--mode {settings.mode!r} must be auto, batch or on-demand")
    task = load_task_from_data(data_dir)
    info = data_info(data_dir)
    eval_set = read_eval_set(data_dir)
    shots = settings.shots if settings.shots is not None else list(info["sizes"])
    seeds = settings.seeds if settings.seeds is not None else list(info["seeds"])
    if not shots or not seeds:
        raise JobError(f"no arms to run: shots {shots}, seeds {seeds}; give --shots and --seeds")
    variants = _variants(settings)
    for variant in variants:
        variant_spec(task, variant)  # unknown variant -> JobError naming the known ones
    has_batch = float(api_model["batch_discount"]) > 0
    if settings.mode == "batch" and not has_batch:
        raise JobError(f"api model {api_model['name']} has no batch inference (batch_discount 0 in api_models.yaml); "
                       "use --mode on-demand")
    max_tokens = max_output_tokens(task, api_model)
    plans: list[ArmPlan] = []
    for variant in variants:
        for seed in seeds:
            for n in shots:
                arm = Arm("fewshot-api", api_model["name"], int(n), int(seed), variant)
                train = read_train_set(data_dir, seed, n)
                requests = build_arm_requests(task, arm, len(plans), eval_set, train, max_tokens)
                plan = ArmPlan(arm, requests)
                plan.skipped = context_guard(requests, max_tokens, api_model, n)
                if settings.mode == "auto":
                    plan.mode = "batch" if has_batch and len(requests) >= settings.batch_min_records else "on-demand"
                else:
                    plan.mode = settings.mode
                plan.est_input_tokens = sum(r.est_input_tokens for r in requests)
                plan.est_output_tokens = sum(r.est_output_tokens for r in requests)
                plan.est_usd = token_usd(plan.est_input_tokens, plan.est_output_tokens, api_model, batch=plan.mode == "batch")
                plans.append(plan)
    return task, plans, max_tokens


def print_plan(plans: Sequence[ArmPlan], api_model: dict, model_id: str) -> float:
    """Per arm: mode, records, estimated tokens and dollars (ceilings: see estimate_tokens); returns the total."""
    click.echo(f"{NAME} plan: {api_model['name']} ({model_id}), prices of {api_model['price_date']}, "
               f"batch discount {float(api_model['batch_discount']):.0%}; estimates are upper bounds")
    click.echo(f"  {'arm':<52} {'mode':<9} {'records':>7} {'est. in tok':>12} {'est. out tok':>12} {'est. USD':>10}")
    total = 0.0
    for plan in plans:
        if plan.skipped:
            click.echo(f"  {plan.arm.label:<52} skipped: {plan.skipped}")
            continue
        total += plan.est_usd
        click.echo(f"  {plan.arm.label:<52} {plan.mode:<9} {len(plan.requests):>7} {plan.est_input_tokens:>12} "
                   f"{plan.est_output_tokens:>12} {plan.est_usd:>10.4f}")
    click.echo(f"  {'total':<52} {'':<9} {sum(len(p.requests) for p in plans if not p.skipped):>7} "
               f"{sum(p.est_input_tokens for p in plans if not p.skipped):>12} "
               f"{sum(p.est_output_tokens for p in plans if not p.skipped):>12} {total:>10.4f}")
    return total


def request_hash(model_id: str, request: Request, max_tokens: int) -> str:
    """Identity of a request: same model and body -> same answer (temperature 0) -> pay once."""
    body = json.dumps(messages_body(request, max_tokens), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(f"{model_id}\n{body}".encode("utf-8")).hexdigest()[:24]


# --- state (resume) ---------------------------------------------------------------------------
def load_state(ctx: Context) -> None:
    if ctx.state is None:
        return
    if ctx.state.exists("jobs.json"):
        ctx.jobs = list(ctx.state.read_json("jobs.json").get("jobs", []))
    if ctx.state.exists("ondemand.json"):
        raw = ctx.state.read_json("ondemand.json")
        ctx.cached = {h: Answer(**a) for h, a in raw.get("answers", {}).items()}


def save_jobs(ctx: Context) -> None:
    """Write every submitted job (ARN, name, record hashes) to the state; called right after submission."""
    if ctx.state is not None:
        ctx.state.write_json("jobs.json", {"model_id": ctx.model_id, "jobs": ctx.jobs})


def save_cache(ctx: Context) -> None:
    if ctx.state is not None:
        answers = {h: asdict(a) for h, a in ctx.cached.items() if a.ok}
        ctx.state.write_json("ondemand.json", {"model_id": ctx.model_id, "answers": answers})


# --- on-demand ----------------------------------------------------------------------------------
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


def run_on_demand(ctx: Context, todo: dict[str, Request], what: str) -> dict[str, Answer]:
    """Ask every request once (bounded concurrency); successes go into the resumable cache."""
    from tqdm import tqdm

    answers: dict[str, Answer] = {}
    if not todo:
        return answers
    log(f"{what}: {len(todo)} on-demand requests, concurrency {ctx.settings.concurrency}")
    with ThreadPoolExecutor(max_workers=max(1, ctx.settings.concurrency)) as pool:
        futures = {pool.submit(converse_one, ctx, request): h for h, request in todo.items()}
        for i, future in enumerate(tqdm(as_completed(futures), total=len(futures), desc=what, unit="req",
                                        disable=None), start=1):
            h = futures[future]
            answers[h] = future.result()
            if answers[h].ok:
                ctx.cached[h] = answers[h]
            if i % 200 == 0:
                save_cache(ctx)  # a killed run keeps what it already paid for
    save_cache(ctx)
    return answers


# --- batch --------------------------------------------------------------------------------------
def job_name(task: str, api_model: str, key: str, index: int) -> str:
    """At most 63 characters of [a-zA-Z0-9+.-], starting alphanumeric; the key keeps it unique."""
    tail = f"-{key[:10]}-{index}"
    head = re.sub(r"[^a-zA-Z0-9+.-]", "-", f"sp-{task[:20]}-{api_model}")[: 63 - len(tail)]
    return head + tail


def submit_batch(ctx: Context, todo: dict[str, Request]) -> None:
    """Upload the records no live or finished job covers and create one job per <= 50,000 records."""
    order = sorted(todo)
    lines = [batch_line(todo[h], ctx.max_tokens) for h in order]
    assert ctx.work is not None
    for start, end in split_batches([len(line) for line in lines], BATCH_MAX_RECORDS, BATCH_MAX_FILE_BYTES):
        chunk = lines[start:end]
        # The token depends on the records and on how many jobs the state knows, so a re-run after a
        # kill between create and state write gets the same job back (idempotent), while a resubmission
        # after a Failed/Expired job gets a new one.
        key = hashlib.sha256(b"".join(chunk) + f"|{ctx.model_id}|{len(ctx.jobs)}".encode()).hexdigest()
        folder = ctx.work.child(key[:16])
        folder.write_bytes("input.jsonl", b"".join(chunk))
        name = job_name(ctx.task["name"], ctx.api_model["name"], key, len(ctx.jobs))
        response = _aws(f"submitting batch job {name}", ctx.bedrock.create_model_invocation_job,
                        jobName=name, roleArn=ctx.settings.role_arn, modelId=ctx.model_id,
                        clientRequestToken=key[:64], timeoutDurationInHours=ctx.settings.job_timeout_hours,
                        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"{folder.uri}/input.jsonl", "s3InputFormat": "JSONL"}},
                        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"{folder.uri}/output/"}})
        record_ids = {todo[h].record_id: h for h in order[start:end]}
        ctx.jobs.append({"job_arn": response["jobArn"], "job_name": name, "status": "Submitted", "message": "",
                         "records": len(record_ids), "output_uri": f"{folder.uri}/output/", "record_hashes": record_ids})
        save_jobs(ctx)
        log(f"submitted batch job {name} ({len(record_ids)} records): {response['jobArn']}")


def _aws(what: str, fn, **kwargs) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as err:
        info = err.response.get("Error", {})
        raise JobError(f"{what} failed ({info.get('Code')}: {info.get('Message')}); check --role-arn, --s3-prefix, "
                       "the model id and your IAM policy (manifests/iam/README.md)") from err
    except BotoCoreError as err:
        raise JobError(f"{what} failed ({err})") from err


def poll_jobs(ctx: Context, jobs: list[dict]) -> None:
    """Poll until every job is final, backing off from --poll-seconds to 5 minutes between rounds."""
    interval = max(ctx.settings.poll_seconds, 0.0)
    cap = max(interval, MAX_POLL_INTERVAL_S)
    waiting = [j for j in jobs if j["status"] not in FINAL]
    while waiting:
        changed = False
        for job in waiting:
            got = _aws(f"polling batch job {job['job_name']}", ctx.bedrock.get_model_invocation_job,
                       jobIdentifier=job["job_arn"])
            if got["status"] != job["status"]:
                job["status"], job["message"] = got["status"], got.get("message", "") or ""
                changed = True
                log(f"batch job {job['job_name']}: {job['status']}" + (f" ({job['message']})" if job["message"] else ""))
        if changed:
            save_jobs(ctx)
        waiting = [j for j in waiting if j["status"] not in FINAL]
        if waiting:
            _sleep(interval)
            interval = min(interval * 1.5, cap)


def read_job_outputs(ctx: Context, job: dict) -> tuple[dict[str, Answer], dict | None]:
    """Answers by request hash from every ``*.jsonl.out`` of the job, and its ``manifest.json.out``."""
    bucket_prefix = job["output_uri"].rstrip("/")
    job_id = job["job_arn"].rsplit("/", 1)[-1]
    out = open_store(f"{bucket_prefix}/{job_id}")
    answers: dict[str, Answer] = {}
    manifest = None
    for rel in out.list():
        if rel.endswith("manifest.json.out"):
            manifest = json.loads(out.read_text(rel))
        elif rel.endswith(".jsonl.out"):
            for lineno, line in enumerate(out.read_text(rel).splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise JobError(f"{out.uri}/{rel}:{lineno}: not valid JSON ({err.msg})") from err
                h = job["record_hashes"].get(str(row.get("recordId")))
                if h is None:
                    continue  # not ours (or a record this run does not need)
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


def run_batch_phase(ctx: Context, needed: dict[str, Request], on_demand: dict[str, Request]) -> tuple[dict[str, Answer], list[dict]]:
    """Submit what is not covered, run on-demand arms while the jobs run, poll, read, retry errors."""
    answers: dict[str, Answer] = {}
    needed_set = set(needed)
    relevant = [j for j in ctx.jobs if not needed_set.isdisjoint(j["record_hashes"].values())]
    # Records already answered by a job that later failed/expired/stopped were paid: keep them.
    for job in relevant:
        if job["status"] in BAD_FINAL:
            got, _ = read_job_outputs(ctx, job)
            answers.update({h: a for h, a in got.items() if a.ok})
    covered = {h for j in relevant if j["status"] not in BAD_FINAL for h in j["record_hashes"].values()}
    todo = {h: r for h, r in needed.items() if h not in covered and h not in answers}
    if todo and len(todo) < ctx.settings.batch_min_records:
        log(f"{len(todo)} batch records are fewer than the batch minimum ({ctx.settings.batch_min_records}); "
            "asking them on-demand")
        on_demand = {**on_demand, **todo}
        todo = {}
    polled_before = {j["job_arn"] for j in relevant if j["status"] in FINAL}
    if todo:
        submit_batch(ctx, todo)
    relevant = [j for j in ctx.jobs if not needed_set.isdisjoint(j["record_hashes"].values())]

    answers.update(run_on_demand(ctx, on_demand, "on-demand arms"))  # runs while the batch jobs wait

    poll_jobs(ctx, relevant)
    manifests_by_job: dict[str, dict | None] = {}
    for job in relevant:
        if job["status"] in GOOD_FINAL:
            got, manifest = read_job_outputs(ctx, job)
            manifests_by_job[job["job_arn"]] = manifest
            if not got:  # retrying a whole job on-demand would double its price: stop and say so
                ctx.problems.append(f"batch job {job['job_name']} is {job['status']} but no output lines were found "
                                    f"under {job['output_uri']}; check the bucket (and the service role's s3:PutObject)")
                continue
            for h in job["record_hashes"].values():
                if h in needed and not (h in answers and answers[h].ok):
                    answers[h] = got.get(h) or Answer(error="batch: no output line for this record", mode="batch")
        elif job["status"] in BAD_FINAL and job["job_arn"] not in polled_before:
            missing = [h for h in job["record_hashes"].values() if h in needed and not (h in answers and answers[h].ok)]
            if missing:
                ctx.problems.append(f"batch job {job['job_name']} ended {job['status']}"
                                    + (f" ({job['message']})" if job.get("message") else "")
                                    + f" with {len(missing)} records unanswered; re-run to resubmit only those")

    # Records that erred in a finished batch job: ask again on-demand (botocore's retries bound it).
    retry = {h: needed[h] for h, a in answers.items() if h in needed and not a.ok and a.mode == "batch"}
    if retry:
        batch_errors = {h: answers[h].error for h in retry}
        for h, answer in run_on_demand(ctx, retry, "retrying batch errors").items():
            answer.retried = True
            if not answer.ok:
                answer.error = f"{batch_errors[h]}; then {answer.error}"
            answers[h] = answer
    job_rows = []
    for job in relevant:
        manifest = manifests_by_job.get(job["job_arn"]) or {}
        job_rows.append({"job_arn": job["job_arn"], "job_name": job["job_name"], "status": job["status"],
                         "message": job.get("message", ""), "records": job["records"],
                         "records_ok": manifest.get("successRecordCount"), "records_error": manifest.get("errorRecordCount"),
                         "input_tokens": manifest.get("inputTokenCount"), "output_tokens": manifest.get("outputTokenCount")})
    return answers, job_rows


# --- the job ------------------------------------------------------------------------------------
def infer_bedrock(settings: Settings, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run every arm and write predictions + bedrock_metrics.json into ``out_dir``; returns the metrics."""
    started = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    api_model = load_api_model(settings)
    model_id = resolve_model_id(settings, api_model)
    task, plans, max_tokens = plan_arms(settings, data_dir, api_model)
    estimate = print_plan(plans, api_model, model_id)
    if settings.max_usd is not None and estimate > settings.max_usd:
        raise JobError(f"estimated cost ${estimate:.4f} is above --max-usd ${settings.max_usd:.4f}; "
                       "raise --max-usd, or run fewer shots, seeds or variants")
    if settings.dry_run:
        return {"dry_run": True, "usd_estimate": estimate}

    ctx = Context(settings, task, api_model, model_id, max_tokens, region=resolve_region(settings, api_model, model_id))
    live = [p for p in plans if not p.skipped]
    if live and not _has_credentials(ctx.region):
        if not settings.skip_without_credentials:
            raise JobError("no AWS credentials found (environment, ~/.aws, instance or task role); configure them, "
                           "or pass --skip-without-credentials to record the API arms as not measured")
        log("no AWS credentials: every arm is recorded as skipped")
        for plan in live:
            plan.skipped = NO_CREDENTIALS
        return write_metrics(ctx, plans, {}, [], out_dir, started)

    ctx.hash_of = {r.record_id: request_hash(model_id, r, max_tokens) for p in live for r in p.requests}
    batch_needed = {ctx.hash_of[r.record_id]: r for p in live if p.mode == "batch" for r in p.requests}
    on_demand = {ctx.hash_of[r.record_id]: r for p in live if p.mode == "on-demand" for r in p.requests}
    on_demand = {h: r for h, r in on_demand.items() if h not in batch_needed}  # one request, one price
    if batch_needed:
        if settings.mode == "batch" and len(batch_needed) < settings.batch_min_records:
            raise JobError(f"--mode batch: {len(batch_needed)} distinct records are fewer than Bedrock's minimum of "
                           f"{settings.batch_min_records} per job; use --mode auto or on-demand")
        if not settings.role_arn:
            raise JobError("batch mode needs --role-arn: an IAM role Bedrock assumes to read and write the S3 prefix "
                           "(see manifests/iam/README.md), or use --mode on-demand")
        if not settings.s3_prefix:
            raise JobError("batch mode needs --s3-prefix s3://bucket/prefix for its input and output files, "
                           "or use --mode on-demand")
    _connect(ctx)

    answers = {h: ctx.cached[h] for h in list(batch_needed) + list(on_demand) if h in ctx.cached}
    if answers:
        log(f"{len(answers)} requests already answered on-demand by an earlier run (not asked again)")
    todo_on_demand = {h: r for h, r in on_demand.items() if h not in answers}
    todo_batch = {h: r for h, r in batch_needed.items() if h not in answers}
    jobs: list[dict] = []
    if todo_batch:
        got, jobs = run_batch_phase(ctx, todo_batch, todo_on_demand)
        answers.update(got)
    else:
        answers.update(run_on_demand(ctx, todo_on_demand, "on-demand arms"))
    metrics = write_metrics(ctx, plans, answers, jobs, out_dir, started)
    if ctx.problems:
        raise JobError("; ".join(ctx.problems))
    return metrics


def _has_credentials(region: str | None) -> bool:
    import boto3

    return boto3.Session(region_name=region).get_credentials() is not None


def _connect(ctx: Context) -> None:
    import boto3
    from botocore.config import Config

    settings = ctx.settings
    # Adaptive mode (client-side rate limiting on throttles) set explicitly: botocore's default
    # changed from legacy to standard in 1.44, and neither slows down under a shared token quota.
    config = Config(retries={"mode": "adaptive", "total_max_attempts": max(1, settings.max_retries + 1)},
                    max_pool_connections=max(10, settings.concurrency + 2), read_timeout=300, connect_timeout=10)
    session = boto3.Session(region_name=ctx.region)
    ctx.bedrock = session.client("bedrock", config=config)
    ctx.runtime = session.client("bedrock-runtime", config=config)
    folder = f"{ctx.task['name']}__{ctx.api_model['name']}"
    if settings.s3_prefix:
        store = open_store(settings.s3_prefix)
        if not isinstance(store, S3Store):
            raise JobError(f"--s3-prefix {settings.s3_prefix!r} must be s3://bucket/prefix (Bedrock reads batch files from S3)")
        ctx.work = store.child(folder)
    state = settings.state or settings.s3_prefix
    ctx.state = open_store(state).child(folder) if state else None
    load_state(ctx)


def write_metrics(ctx: Context, plans: Sequence[ArmPlan], answers: dict[str, Answer], jobs: list[dict],
                  out_dir: Path, started: float) -> dict[str, Any]:
    """Predictions per complete arm, then bedrock_metrics.json (written last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    api, model_id, max_tokens = ctx.api_model, ctx.model_id, ctx.max_tokens
    arms = []
    for plan in plans:
        row: dict[str, Any] = {"arm": plan.arm.to_dict(), "file": None, "mode": plan.mode, "records": len(plan.requests),
                               "input_tokens": 0, "output_tokens": 0, "usd": 0.0, "records_ok": 0, "records_error": 0,
                               "records_retried": 0, "truncated_outputs": 0, "est_input_tokens": plan.est_input_tokens,
                               "est_output_tokens": plan.est_output_tokens, "est_usd": round(plan.est_usd, 6),
                               "skipped": plan.skipped}
        arms.append(row)
        if plan.skipped:
            continue
        hashes = [ctx.hash_of[r.record_id] for r in plan.requests]
        if any(h not in answers for h in hashes):
            row["skipped"] = "incomplete: its batch job did not finish; re-run to resubmit the missing records"
            continue
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
            # below counts each distinct request once, which is the bill.
            row["usd"] += token_usd(a.input_tokens or 0, a.output_tokens or 0, api, batch=a.mode == "batch")
            row["records_ok" if a.ok else "records_error"] += 1
            row["records_retried"] += int(a.retried)
            row["truncated_outputs"] += int(a.stop_reason == "max_tokens")
        write_predictions(out_dir / plan.arm.filename, records)
        row["file"] = plan.arm.filename
        row["usd"] = round(row["usd"], 6)

    used = {ctx.hash_of[r.record_id] for p in plans if not p.skipped for r in p.requests}
    paid = [answers[h] for h in used if h in answers]
    metrics = {
        "api_model": api["name"], "model_id": model_id, "region": ctx.region, "task": ctx.task["name"],
        "max_tokens": max_tokens, "price_date": api["price_date"], "input_per_mtok": api["input_per_mtok"],
        "output_per_mtok": api["output_per_mtok"], "batch_discount": api["batch_discount"],
        "jobs": jobs,
        "requests_distinct": len(used),
        "records_ok": sum(r["records_ok"] for r in arms), "records_error": sum(r["records_error"] for r in arms),
        "records_retried": sum(r["records_retried"] for r in arms),
        "truncated_outputs": sum(r["truncated_outputs"] for r in arms),
        "input_tokens": sum(a.input_tokens or 0 for a in paid), "output_tokens": sum(a.output_tokens or 0 for a in paid),
        "usd": round(sum(token_usd(a.input_tokens or 0, a.output_tokens or 0, api, batch=a.mode == "batch") for a in paid), 6),
        "wall_s": round(time.time() - started, 3),
        "arms": arms,
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    done = [r for r in arms if not r["skipped"]]
    log(f"{len(done)} arms written, {len(arms) - len(done)} skipped; {metrics['records_ok']} ok, "
        f"{metrics['records_error']} errors, {metrics['records_retried']} retried; "
        f"{metrics['input_tokens']} in / {metrics['output_tokens']} out tokens, ${metrics['usd']:.4f} -> {out_dir}")
    return metrics


# --- CLI ----------------------------------------------------------------------------------------
@click.command(NAME, context_settings={"show_default": True})
@click.option("--api-model", default=None, help="Key in manifests/api_models.yaml (e.g. claude-haiku-4.5): model id, "
              "context window, prices and batch discount.")
@click.option("--model-id", default=None, help="Override the Bedrock model id or inference-profile ARN "
              "(default: the manifest's inference_profile, else bedrock_model_id).")
@click.option("--shots", default=None, help="Comma-separated shot counts N (default: the data folder's sizes).")
@click.option("--seeds", default=None, help="Comma-separated seeds (default: the data folder's seeds).")
@click.option("--variants", default=None, help="Comma-separated prompt variants of the task (XLSum: full,summary-only); "
              "'none' is the plain layout. Default: the plain layout only.")
@click.option("--mode", default=None, type=click.Choice(["auto", "batch", "on-demand"]),
              help="auto: batch for arms with at least --batch-min-records records, else on-demand. [default: auto]")
@click.option("--role-arn", default=None, help="IAM role Bedrock assumes for batch jobs (trusts bedrock.amazonaws.com; "
              "see manifests/iam/README.md).")
@click.option("--s3-prefix", default=None, help="s3://bucket/prefix for batch input and output files.")
@click.option("--state", default=None, help="Folder or store URI for resume state (job ARNs, on-demand answers); "
              "default: the --s3-prefix.")
@click.option("--max-usd", default=None, help="Refuse to start when the estimated cost is above this many dollars.")
@click.option("--dry-run", is_flag=True, default=None, help="Print records, estimated tokens and dollars per arm; "
              "call no AWS API.")
@click.option("--concurrency", default=None, help="On-demand requests in flight at once. [default: 4]")
@click.option("--poll-seconds", default=None, help="First interval between batch job polls; grows 1.5x up to 5 min. "
              "[default: 60]")
@click.option("--max-retries", default=None, help="botocore retries per call (adaptive mode) for throttling and "
              "server errors; a record still failing is recorded as an error. [default: 5]")
@click.option("--region", default=None, help="AWS region (default: from the model ARN, else api_models.yaml, else "
              "your AWS configuration).")
@click.option("--batch-min-records", default=None, help="Bedrock's minimum records per batch job (a service quota). "
              "[default: 100]")
@click.option("--job-timeout-hours", default=None, help="Batch job timeout (24-168); unstarted jobs then expire. "
              "[default: 72]")
@click.option("--skip-without-credentials", is_flag=True, default=None, help="With no AWS credentials, record every "
              "arm as skipped ('no AWS credentials') and exit 0 instead of failing.")
@click.option("--api-models-file", default=None, help="Use this api_models.yaml instead of the bundled one.")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
              help="Data folder from `switchpoint data` (default: <ml-root>/processing/input/data).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: <ml-root>/processing/output).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(data_dir, out_dir, ml_root, **options):
    """Few-shot Claude on Amazon Bedrock: one predictions file per arm, with exact token and dollar accounting.

    \b
    Inputs : the data folder (task.json, eval.jsonl, train/seed=S/n=N.jsonl); the first N training
             examples of a seed are the N shots, as user/assistant turns before the question.
    Outputs: fewshot-api__<api model>__n=N__seed=S[__variant].jsonl per arm (predictions contract)
             and bedrock_metrics.json (jobs and final states, records ok/error/retried, tokens,
             dollars per arm and in total, skipped arms with the reason).
    Arms whose prompts do not fit the context window are skipped, never truncated. Batch jobs are
    recorded in the state folder at submission: a re-run polls them instead of paying again.
    Needs AWS credentials with the policy in manifests/iam/ (not for --dry-run).
    """
    paths = job_paths(ml_root)

    def body() -> None:
        values = {k: v for k, v in options.items() if v is not None}
        settings = settings_from(Settings, paths, values)
        data = Path(data_dir) if data_dir else paths.processing_input("data")
        out = Path(out_dir) if out_dir else paths.processing_output
        infer_bedrock(settings, data, out)

    run_job(paths, body, name=NAME)
