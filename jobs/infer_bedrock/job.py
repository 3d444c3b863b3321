"""The ``infer-bedrock`` job: few-shot Claude on Amazon Bedrock, batch or on-demand, with exact costs.

Inputs : the data folder (``--data``, default ``<ml-root>/processing/input/data``): task.json,
         data.json, eval.jsonl and train/seed=S/n=N.jsonl, whose first N examples are the N shots, in
         order; the API model's entry from the data folder's models.json (a user's own model travels
         there), else the bundled api_models.yaml, or ``--api-models-file``.
Outputs (``--out``, default ``<ml-root>/processing/output``)::

    fewshot-api__<api model>__n=N__seed=S[__variant].jsonl   one per arm, the predictions contract
    bedrock_metrics.json                                     jobs, records, tokens, dollars, skipped arms

The recipe (``infer_bedrock``): settings -> the model entry and its mode (``arm_mode``: batch only
where the model has it and a role and S3 prefix are given; a retired model is refused naming its
replacement) -> the arms and their estimate (``--max-usd``, ``--dry-run``) -> the work (batch jobs in
``batch.py``, Converse calls in ``on_demand.py``) -> the outputs (``outputs.py``).

Money: every request's identity is a hash of (model id, request body), and every paid answer and
batch job is appended to the durable state (``state.py``; ``--state``, default the S3 prefix) before
the next request is sent, so a killed run re-run pays for nothing twice and reports the same metrics.
Identical requests in different arms (N=0 for every seed) are sent once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, read_hyperparameters, run_job
from switchpoint.core.datafolder import MODELS_FILE, api_model_entry
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.core.store import S3Store, open_store
from switchpoint.core.store_s3 import import_boto3
from switchpoint.infer_bedrock.arms import (
    plan_arms,
    print_plan,
    resolve_model_id,
    resolve_region,
)
from switchpoint.infer_bedrock.batch import run_batch_phase
from switchpoint.infer_bedrock.context import NAME, Context, log, request_hash
from switchpoint.infer_bedrock.on_demand import run_on_demand
from switchpoint.infer_bedrock.outputs import METRICS_FILE, write_metrics
from switchpoint.infer_bedrock.settings import UNAVAILABLE, Settings, arm_mode
from switchpoint.infer_bedrock.state import open_state

__all__ = ["METRICS_FILE", "NAME", "Settings", "arm_mode", "command", "infer_bedrock"]
NO_CREDENTIALS = "no AWS credentials"
DATA_FILES = ("task.json", "data.json", "eval.jsonl")


# --- settings -> the model entry ------------------------------------------------------------------
def check_data_folder(data_dir: Path) -> None:
    """The data folder is the data step's output: say so before any file in it is parsed."""
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "no such folder"
        raise JobError(f"--data {data_dir}: {what}; give the output folder of `switchpoint data`")
    for name in DATA_FILES:
        if not (data_dir / name).is_file():
            raise JobError(f"{data_dir / name}: missing; the data folder must be the output of `switchpoint data`")
    task, info = _json_object(data_dir / "task.json"), _json_object(data_dir / "data.json")
    generation = task.get("generation")
    if not isinstance(task.get("name"), str) or not isinstance(generation, dict) \
            or not isinstance(generation.get("max_new_tokens"), int) or generation["max_new_tokens"] < 1:
        raise JobError(f"{data_dir / 'task.json'}: expected a task with 'name' and a positive integer "
                       "'generation.max_new_tokens' (the data step's task.json)")
    for key in ("sizes", "seeds"):
        if not isinstance(info.get(key), list) or not all(isinstance(v, int) for v in info[key]):
            raise JobError(f"{data_dir / 'data.json'}: at {key}: expected a list of integers (the data step's data.json)")


def check_out_dir(out_dir: Path) -> None:
    """The output folder can be written (checked before anything is paid for, without creating it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise JobError(f"--out {out_dir}: exists and is not a folder")
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(f"--out {out_dir}: cannot write into {existing} (permission denied)")


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: not readable as JSON ({getattr(err, 'msg', err)}); re-run the data step") from err
    if not isinstance(value, dict):
        raise JobError(f"{path}: expected a JSON object, got {type(value).__name__}; re-run the data step")
    return value


def load_api_model(settings: Settings, data_dir: Path) -> dict:
    """``--api-models-file``, else the data folder's resolved models.json, else the bundled manifest;
    validated against the same schema either way."""
    if settings.api_models_file:
        path = Path(settings.api_models_file)
        if not path.is_file():
            raise JobError(f"--api-models-file {path}: no such file")
        return manifests.get_api_model(settings.api_model, path)
    entry = api_model_entry(data_dir, settings.api_model)
    body = {k: v for k, v in entry.items() if k != "name"}
    manifests.validate({"api_models": {settings.api_model: body}}, manifests.API_MODELS_SCHEMA, data_dir / MODELS_FILE)
    return entry


def check_callable(settings: Settings, api_model: dict) -> None:
    """Refuse what cannot run (a retired model, naming its replacement; a forced batch without its needs)."""
    mode, notice = arm_mode(api_model, settings)
    if mode == UNAVAILABLE:
        raise JobError(notice or f"api model {api_model['name']} cannot be called")


def mode_notices(settings: Settings, api_model: dict, plans: list) -> list[str]:
    """One line per distinct reason an arm runs as it does (on-demand instead of batch, legacy model)."""
    notices: list[str] = []
    for plan in plans:
        _, notice = arm_mode(api_model, settings, len(plan.requests))
        if notice and notice not in notices:
            notices.append(notice)
            log(f"notice: {notice}")
    return notices


# --- the recipe -----------------------------------------------------------------------------------
def infer_bedrock(settings: Settings, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run every arm and write predictions + bedrock_metrics.json into ``out_dir``; returns the metrics."""
    started = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    check_data_folder(data_dir)
    api_model = load_api_model(settings, data_dir)
    check_callable(settings, api_model)
    model_id = resolve_model_id(settings, api_model)
    task, plans, max_tokens = plan_arms(settings, data_dir, api_model)
    notices = mode_notices(settings, api_model, [p for p in plans if not p.skipped])
    estimate = print_plan(plans, api_model, model_id)
    if settings.max_usd is not None and estimate > settings.max_usd:
        raise JobError(f"estimated cost ${estimate:.4f} is above --max-usd ${settings.max_usd:.4f}; "
                       "raise --max-usd, or run fewer shots, seeds or variants")
    if settings.dry_run:
        return {"dry_run": True, "usd_estimate": estimate}

    check_out_dir(out_dir)
    ctx = Context(settings, task, api_model, model_id, max_tokens, region=resolve_region(settings, api_model, model_id))
    live = [p for p in plans if not p.skipped]
    if live and not _has_credentials(ctx.region):
        if not settings.skip_without_credentials:
            raise JobError("no AWS credentials found (environment, ~/.aws, instance or task role); configure them, "
                           "or pass --skip-without-credentials to record the API arms as not measured")
        log("no AWS credentials: every arm is recorded as skipped")
        for plan in live:
            plan.skipped = NO_CREDENTIALS
        return write_metrics(ctx, plans, {}, [], out_dir, started, notices)

    ctx.hash_of = {r.record_id: request_hash(model_id, r, max_tokens) for p in live for r in p.requests}
    batch_needed = {ctx.hash_of[r.record_id]: r for p in live if p.mode == "batch" for r in p.requests}
    on_demand = {ctx.hash_of[r.record_id]: r for p in live if p.mode == "on-demand" for r in p.requests}
    on_demand = {h: r for h, r in on_demand.items() if h not in batch_needed}  # one request, one price
    if batch_needed and settings.mode == "batch" and len(batch_needed) < settings.batch_min_records:
        raise JobError(f"--mode batch: {len(batch_needed)} distinct records are fewer than Bedrock's minimum of "
                       f"{settings.batch_min_records} per job; use --mode auto or on-demand")
    _connect(ctx)
    try:
        answers, jobs = _work(ctx, batch_needed, on_demand)
    finally:
        ctx.state.close()
    metrics = write_metrics(ctx, plans, answers, jobs, out_dir, started, notices)
    if ctx.problems:
        raise JobError("; ".join(ctx.problems))
    return metrics


def _work(ctx: Context, batch_needed: dict, on_demand: dict) -> tuple[dict, list[dict]]:
    """Answers for every request: from the state, then batch jobs and on-demand calls for the rest."""
    answers = {h: ctx.state.answers[h] for h in list(batch_needed) + list(on_demand) if h in ctx.state.answers}
    if answers:
        log(f"{len(answers)} requests already answered and paid for by an earlier run (not asked again)")
    todo_on_demand = {h: r for h, r in on_demand.items() if h not in answers}
    todo_batch = {h: r for h, r in batch_needed.items() if h not in answers}
    if todo_batch:
        got, jobs = run_batch_phase(ctx, todo_batch, todo_on_demand)
        answers.update(got)
        return answers, jobs
    answers.update(run_on_demand(ctx, todo_on_demand, "on-demand arms"))
    return answers, []


def _has_credentials(region: str | None) -> bool:
    boto3 = import_boto3("infer-bedrock", "infer-bedrock")
    return boto3.Session(region_name=region).get_credentials() is not None


def _connect(ctx: Context) -> None:
    boto3 = import_boto3("infer-bedrock", "infer-bedrock")
    from botocore.config import Config

    settings = ctx.settings
    # Adaptive mode (client-side rate limiting on throttles) set explicitly: botocore's default
    # changed from legacy to standard in 1.44, and neither slows down under a shared token quota.
    config = Config(retries={"mode": "adaptive", "total_max_attempts": settings.max_retries + 1},
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
    ctx.state = open_state(settings.state or settings.s3_prefix, folder)
    if ctx.state.journal is None:
        log("notice: no --state and no --s3-prefix: answers are not kept for a re-run")


# --- CLI ----------------------------------------------------------------------------------------
@click.command(NAME, context_settings={"show_default": True})
@options(Settings, flags=("dry_run", "skip_without_credentials"))
@click.option("--data", "data_dir", default=None, metavar="FOLDER",
              help="Data folder from `switchpoint data` (default: <ml-root>/processing/input/data).")
@click.option("--out", "out_dir", default=None, metavar="FOLDER",
              help="Output folder (default: <ml-root>/processing/output).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(data_dir, out_dir, ml_root, **values):
    """Few-shot Claude on Amazon Bedrock: one predictions file per arm, with exact token and dollar accounting.

    \b
    Inputs : the data folder (task.json, eval.jsonl, train/seed=S/n=N.jsonl); the first N training
             examples of a seed are the N shots, as user/assistant turns before the question.
    Outputs: fewshot-api__<api model>__n=N__seed=S[__variant].jsonl per arm (predictions contract)
             and bedrock_metrics.json (jobs and final states, records ok/error/retried, tokens,
             dollars per arm and in total, skipped arms with the reason).
    Arms whose prompts do not fit the context window are skipped, never truncated. Every paid answer
    and batch job is saved in the state folder before the next request: a re-run pays nothing twice.
    Needs AWS credentials with the policy in manifests/iam/ (not for --dry-run).
    """
    paths = job_paths(ml_root)

    def body() -> None:
        sources = [(COMMAND_LINE, values)]
        if paths.hyperparameters.is_file():
            sources.insert(0, (str(paths.hyperparameters), read_hyperparameters(paths)))
        settings = load_settings(Settings, *sources)
        data = Path(data_dir) if data_dir else paths.processing_input("data")
        if not data_dir and not data.is_dir():
            raise JobError(f"no --data given and no data folder at the job layout's {data}; "
                           "give --data <the output folder of `switchpoint data`>")
        out = Path(out_dir) if out_dir else paths.processing_output
        infer_bedrock(settings, data, out)

    run_job(paths, body, name=NAME)
