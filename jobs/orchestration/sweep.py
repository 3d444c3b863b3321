"""Orchestration: ``switchpoint run``, ``plan`` and ``status``. It only moves folders.

A sweep for one task is five stages: data -> train (one job per model) -> infer-local (per model)
and infer-bedrock (per API model) -> score -> report. A step whose output prefix in the store has
``_SUCCESS`` is skipped, so a sweep killed at any point and started again does only what is left.
"""

from __future__ import annotations

import math
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import click
from switchpoint.core import manifests, pricing
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.pricing import estimate_tokens
from switchpoint.core.store import Store, open_store
from switchpoint.orchestration import runners as backends
from switchpoint.orchestration.steps import Step, plan_steps

STEP_JOBS = ("data", "train", "infer-local", "infer-bedrock", "score", "report")
HUB_HOST = "huggingface.co"


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


# --- pre-flight --------------------------------------------------------------------------------
def needed_hosts(sweep: dict, task: dict) -> dict[str, list[str]]:
    """Network hosts the sweep must reach, with what needs each (models, data sources)."""
    hosts: dict[str, list[str]] = {}
    models = manifests.load_models()
    for name in sweep["models"]:
        if models[name]["source"] == "hub":
            hosts.setdefault(HUB_HOST, []).append(f"model {models[name]['hub_id']}")
    if sweep["data"]["source"] == "remote":
        for role, source in task["sources"].items():
            if source.get("type") == "hub":
                hosts.setdefault(HUB_HOST, []).append(f"{role} data {source['uri']}")
            elif source.get("type") == "url":
                host = urlparse(source["uri"]).hostname or source["uri"]
                hosts.setdefault(host, []).append(f"{role} data {source['uri']}")
    return hosts


def reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def preflight(sweep: dict, task: dict, check: Callable[[str], bool] = reachable) -> None:
    """Stop at once, naming what cannot be reached, instead of failing an hour into a sweep."""
    missing = {host: needs for host, needs in needed_hosts(sweep, task).items() if not check(host)}
    if missing:
        detail = "; ".join(f"{host} (for {', '.join(needs)})" for host, needs in missing.items())
        raise JobError(f"sweep {sweep['name']}: cannot reach {detail}. Offline, run the bundled data and a tiny "
                       f"model with SWEEP=smoke (make sweep TASK={task['name']} SWEEP=smoke)")


# --- running ---------------------------------------------------------------------------------
def run_root(store: Store, sweep: dict, task: dict) -> Store:
    return store.child(sweep["name"], task.get("store_key", task["name"]))


def run_data_step(step: Step, run: Store, sweep: dict, task: dict) -> dict:
    """The data step runs here for every backend: light CPU work whose sources may be local files."""
    from switchpoint.data.job import prepare, settings_for_sweep

    backends.record_run(run, step, backend="local", status="running", started=time.time())
    started = time.monotonic()
    settings = settings_for_sweep(task["manifest_path"], task["name"], sweep)
    try:
        with tempfile.TemporaryDirectory(prefix="switchpoint-data-") as tmp:
            prepare(settings, Path(tmp), sweep)
            run.child("data").publish(Path(tmp))
    except JobError as err:
        backends.record_run(run, step, backend="local", status="failed", reason=str(err))
        raise
    return backends.record_run(run, step, backend="local", status="done", wall_s=round(time.monotonic() - started, 3),
                               billable_s=None)


def run_step(step: Step, run: Store, sweep: dict, task: dict, backend: str, options: dict) -> dict:
    if step.kind == "local":
        return run_data_step(step, run, sweep, task)
    if backend == "local":
        return backends.run_local(step, run)
    if backend == "docker":
        return backends.run_docker(step, run, sweep, registry=options.get("registry"))
    if backend == "sagemaker":
        return backends.run_sagemaker(step, run, sweep, role_arn=options.get("role_arn"),
                                      registry=options.get("registry"), poll_s=options.get("poll_s", 30))
    raise JobError(f"unknown backend {backend!r}; use local, docker or sagemaker")


def select_steps(steps: list[Step], job: str, models: tuple[str, ...]) -> list[Step]:
    if job == "sweep":
        chosen = steps
    else:
        chosen = [s for s in steps if s.job == job]
    if models:
        chosen = [s for s in chosen if s.job not in ("train", "infer-local", "infer-bedrock")
                  or any(s.name.endswith(f"-{m}") for m in models)]
    return chosen


def run_sweep(sweep: dict, task: dict, store: Store, *, job: str = "sweep", backend: str = "local",
              models: tuple[str, ...] = (), force: bool = False, options: dict | None = None,
              check_network: Callable[[str], bool] = reachable) -> list[dict]:
    """Run the chosen steps of one task in stage order, skipping steps already complete."""
    options = options or {}
    preflight(sweep, task, check_network)
    run = run_root(store, sweep, task)
    steps = select_steps(plan_steps(sweep, task), job, models)
    if not steps:
        raise JobError(f"no {job} step in sweep {sweep['name']} for task {task['name']}"
                       + (f" and models {', '.join(models)}" if models else ""))
    records = []
    for stage in sorted({s.stage for s in steps}):
        todo = []
        for step in (s for s in steps if s.stage == stage):
            if run.child(step.output).is_complete() and not force:
                _echo(f"[{task['name']}] {step.name}: done already ({run.child(step.output).uri}), skipped")
            else:
                todo.append(step)
        for step in todo:
            _echo(f"[{task['name']}] {step.name}: running on {backend if step.kind != 'local' else 'local'} "
                  f"({step.instance_type})")
        if backend == "sagemaker" and len(todo) > 1:
            # One SageMaker job per model at the same time; each waits on its own waiter.
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                futures = [pool.submit(run_step, s, run, sweep, task, backend, options) for s in todo]
                errors = []
                for future in futures:
                    try:
                        records.append(future.result())
                    except JobError as err:
                        errors.append(str(err))
                if errors:
                    raise JobError("; ".join(errors))
        else:
            for step in todo:
                records.append(run_step(step, run, sweep, task, backend, options))
                _echo(f"[{task['name']}] {step.name}: done")
    return records


def _tasks_for(sweep: dict, tasks: tuple[str, ...]) -> list[dict]:
    names = list(tasks) or sweep["tasks"]
    if not names:
        raise JobError(f"sweep {sweep['name']} names no tasks; pass --task")
    return [manifests.load_task(t) for t in names]


_common = [
    click.option("--sweep", "sweep_name", default="default", show_default=True, help="Sweep name in manifests/sweeps or a YAML path."),
    click.option("--task", "tasks", multiple=True, help="Task name or YAML (repeatable); default: the sweep's tasks."),
    click.option("--store", default="runs", show_default=True, help="Store: a folder or s3://bucket/prefix."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@click.command("run", context_settings={"show_default": True})
@click.argument("job", type=click.Choice(["sweep", *STEP_JOBS]))
@_with_common
@click.option("--backend", type=click.Choice(["local", "docker", "sagemaker"]), default="local",
              help="local: this environment; docker: the job's image with the folder at /opt/ml; sagemaker: SageMaker jobs (needs an s3:// store).")
@click.option("--model", "models", multiple=True, help="Only these open/API models (repeatable).")
@click.option("--force", is_flag=True, help="Run steps again even when their output is complete in the store.")
@click.option("--role-arn", default=None, help="SageMaker execution role (else sagemaker.role_arn or $SWITCHPOINT_SAGEMAKER_ROLE).")
@click.option("--registry", default=None, envvar="IMAGE_REGISTRY",
              help="Registry holding switchpoint-<image>:<version> images (what `make push` pushes), e.g. 123.dkr.ecr.us-east-1.amazonaws.com.")
@click.option("--poll-seconds", default=30, type=int, help="SageMaker waiter delay.")
def run_command(job, sweep_name, tasks, store, backend, models, force, role_arn, registry, poll_seconds):
    """Run one step (JOB) or the whole sweep, moving folders between the store and each job.

    \b
    Steps of a task, in order: data -> train (per model) -> infer-local (per model) and
    infer-bedrock (per API model) -> score -> report. Outputs go to STORE/<sweep>/<task>/.
    A step whose output is complete in the store (_SUCCESS) is skipped: re-running a killed
    sweep does only the remaining work. Each step records runs/<step>.json (status, seconds).
    """
    paths = job_paths()

    def body() -> None:
        sweep = manifests.load_sweep(sweep_name)
        target = open_store(store)
        for task in _tasks_for(sweep, tasks):
            run_sweep(sweep, task, target, job=job, backend=backend, models=models, force=force,
                      options={"role_arn": role_arn, "registry": registry, "poll_s": poll_seconds})
            if job in ("sweep", "report"):
                _echo(f"[{task['name']}] report: {run_root(target, sweep, task).child('report').uri}/report.html")

    run_job(paths, body, name=f"run {job}")


# --- plan --------------------------------------------------------------------------------------
TRAIN_MFU = 0.35
INFER_EFFICIENCY = 0.05  # decoding is memory-bound: a small fraction of peak FLOPs


def _sample_tokens(task: dict) -> tuple[float, float]:
    """Average prompt and reference tokens of one example, estimated on the bundled sample with the
    same estimator the infer-bedrock dry run uses (rough defaults for a task without a sample)."""
    from switchpoint.core.prompts import render_input
    from switchpoint.data.job import read_source, to_canonical

    if "bundled" not in task:
        return 1000.0, 50.0
    rows = to_canonical(read_source({**task["bundled"]["eval"], "type": task["bundled"]["eval"].get("type", "bundled")},
                                    "eval"), task, "eval")
    inputs = [estimate_tokens(render_input(task, r)) for r in rows]
    refs = [estimate_tokens(r["references"][0]) for r in rows]
    return sum(inputs) / len(inputs) + estimate_tokens(task["prompt"]["instruction"]), sum(refs) / len(refs)


def estimate_plan(sweep: dict, task: dict) -> list[dict[str, Any]]:
    """Rows of (step, instance, hours, dollars, API records/tokens) before anything runs."""
    prices = manifests.load_prices()
    models = manifests.load_models()
    api_models = manifests.load_api_models()
    sizes = manifests.sweep_sizes(sweep, task["name"])
    seeds = sweep["seeds"]
    in_tokens, ref_tokens = _sample_tokens(task)
    eval_count = sweep["data"]["eval_size"] or 1000
    rows = []
    for step in plan_steps(sweep, task):
        tflops = prices["instances"].get(step.instance_type, {}).get("gpu_tflops_bf16") or 0
        row: dict[str, Any] = {"step": step.name, "job": step.job, "instance": step.instance_type, "hours": 0.0,
                               "usd": 0.0, "api_records": 0, "api_input_tokens": 0, "api_output_tokens": 0}
        if step.job == "train":
            params = models[step.name.removeprefix("train-")]["params_b"] * 1e9
            t = sweep["train"]
            tokens = sum(max(t["min_steps"], math.ceil(t["epochs"] * math.ceil(n / t["batch_size"]))) * t["batch_size"]
                         * (in_tokens + ref_tokens) for n in sizes if n > 0) * len(seeds)
            seconds = 6 * params * tokens / (tflops * 1e12 * TRAIN_MFU) + 300 if tflops else 0.0
            row["hours"] = seconds / 3600
        elif step.job == "infer-local":
            params = models[step.name.removeprefix("infer-local-")]["params_b"] * 1e9
            arms = len(sizes) * len(seeds)
            shots = sweep["fewshot_local"]["shots"] if sweep["fewshot_local"]["enabled"] else []
            prompt_tokens = eval_count * (arms * in_tokens + sum((k + 1) * in_tokens for k in shots) * len(seeds))
            gen_tokens = eval_count * (arms + len(shots) * len(seeds)) * task["generation"]["max_new_tokens"]
            seconds = (2 * params * prompt_tokens / (tflops * 1e12 * TRAIN_MFU)
                       + 2 * params * gen_tokens / (tflops * 1e12 * INFER_EFFICIENCY) + 300) if tflops else 0.0
            row["hours"] = seconds / 3600
        elif step.job == "infer-bedrock":
            api = api_models[step.name.removeprefix("infer-bedrock-")]
            fs = sweep["fewshot_api"]
            shots = fs["shots"] if fs["shots"] is not None else sizes
            variants = max(1, len(fs["variants"].get(task["name"], []) or [None]))
            records = eval_count * len(shots) * len(seeds) * variants
            input_tokens = eval_count * sum((k + 1) * in_tokens + k * ref_tokens for k in shots) * len(seeds) * variants
            output_tokens = records * ref_tokens * 1.2
            batch = fs["mode"] == "batch" or (fs["mode"] == "auto" and eval_count >= 100)
            row.update(api_records=records, api_input_tokens=int(input_tokens), api_output_tokens=int(output_tokens))
            row["usd"] = pricing.token_usd(input_tokens, output_tokens, api, batch=batch)
        else:
            row["hours"] = 0.05 if step.instance_type != "local" else 0.0
        row["usd"] += pricing.estimate_usd(row["hours"] * 3600, step.instance_type, prices, spot=step.spot)
        rows.append(row)
    return rows


@click.command("plan", context_settings={"show_default": True})
@_with_common
def plan_command(sweep_name, tasks, store):
    """Print, before anything runs, the jobs a sweep will start, GPU hours, API records and tokens,
    and the estimated dollars per step and in total (prices from manifests/prices.yaml and
    manifests/api_models.yaml; token counts estimated from the bundled sample)."""
    paths = job_paths()

    def body() -> None:
        sweep = manifests.load_sweep(sweep_name)
        total = 0.0
        for task in _tasks_for(sweep, tasks):
            rows = estimate_plan(sweep, task)
            click.echo(f"\nsweep {sweep['name']} / task {task['name']} -> {open_store(store).child(sweep['name'], task['name']).uri}")
            click.echo(f"{'step':40} {'instance':16} {'GPU h':>8} {'API records':>12} {'API tokens in/out':>22} {'USD':>10}")
            for r in rows:
                tokens = f"{r['api_input_tokens']:,}/{r['api_output_tokens']:,}" if r["api_records"] else "-"
                click.echo(f"{r['step']:40} {r['instance']:16} {r['hours']:8.2f} {r['api_records'] or '-':>12} {tokens:>22} {r['usd']:10.2f}")
            subtotal = sum(r["usd"] for r in rows)
            total += subtotal
            click.echo(f"{'task total':40} {'':16} {sum(r['hours'] for r in rows):8.2f} {'':>12} {'':>22} {subtotal:10.2f}")
        click.echo(f"\nestimated total: ${total:,.2f} (rough: tokens estimated on the bundled sample as the "
                   f"infer-bedrock dry run does, GPU time from FLOPs at {TRAIN_MFU:.0%} utilisation; an uncapped eval set "
                   "is counted as 1,000 examples)")

    run_job(paths, body, name="plan")


# --- status ------------------------------------------------------------------------------------
def _runner_alive(record: dict) -> bool:
    """False when the step was run from this machine by a process that no longer exists."""
    import os

    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return True  # another machine, or a SageMaker job: trust the record
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def step_status(sweep: dict, task: dict, store: Store) -> list[dict[str, Any]]:
    prices = manifests.load_prices()
    run = run_root(store, sweep, task)
    rows = []
    for step in plan_steps(sweep, task):
        record = run.read_json(f"runs/{step.name}.json") if run.exists(f"runs/{step.name}.json") else {}
        if run.child(step.output).is_complete():
            state = "done"
        elif record.get("status") == "running" and not _runner_alive(record):
            state = "killed"
        elif record.get("status") in ("running", "failed"):
            state = record["status"]
        else:
            state = "pending"
        seconds = record.get("billable_s") or record.get("wall_s") or 0.0
        job = pricing.JobTime(step.instance_type, record.get("wall_s"), record.get("billable_s"), step.spot)
        usd = pricing.spent_usd(job, prices) if state in ("done", "failed") else 0.0
        if step.job == "infer-bedrock" and run.exists(f"{step.output}/bedrock_metrics.json"):
            usd += float(run.read_json(f"{step.output}/bedrock_metrics.json").get("usd") or 0.0)
        rows.append({"step": step.name, "state": state, "backend": record.get("backend", "-"),
                     "seconds": seconds, "usd": usd, "reason": record.get("reason")})
    return rows


@click.command("status", context_settings={"show_default": True})
@_with_common
def status_command(sweep_name, tasks, store):
    """Print a table of the sweep's steps: done / running / pending / failed (or killed: marked
    running by a process of this machine that is gone), with the cost spent so far."""
    paths = job_paths()

    def body() -> None:
        sweep = manifests.load_sweep(sweep_name)
        target = open_store(store)
        for task in _tasks_for(sweep, tasks):
            rows = step_status(sweep, task, target)
            click.echo(f"\nsweep {sweep['name']} / task {task['name']} ({run_root(target, sweep, task).uri})")
            click.echo(f"{'step':40} {'state':8} {'backend':10} {'seconds':>9} {'USD':>9}")
            for r in rows:
                click.echo(f"{r['step']:40} {r['state']:8} {r['backend']:10} {r['seconds']:9.1f} {r['usd']:9.3f}"
                           + (f"  {r['reason']}" if r["state"] == "failed" and r["reason"] else ""))
            click.echo(f"{'spent so far':40} {'':8} {'':10} {'':>9} {sum(r['usd'] for r in rows):9.3f}")

    run_job(paths, body, name="status")

