"""``switchpoint run``: a sweep's steps in stage order, moving folders between the store and the jobs.

A sweep for one task is five stages: data -> train (one job per model) -> infer-local (per model)
and infer-bedrock (per API model) -> score -> report. The pre-flight (plan.py) runs first. A step
whose marker is complete and whose fingerprint (settings, input markers; freshness.py) is unchanged
is skipped, so a sweep killed at any point and started again does only what is left; a step whose
inputs or settings changed runs again. With ``--adaptive`` the sweep runs in rounds (rounds.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
from switchpoint.core import layout, manifests
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.store import SUCCESS, Store, open_store
from switchpoint.orchestration import freshness, runners
from switchpoint.orchestration.plan import preflight, reachable
from switchpoint.orchestration.records import Heartbeat, record_run
from switchpoint.orchestration.rounds import run_adaptive
from switchpoint.orchestration.sagemaker import run_sagemaker
from switchpoint.orchestration.steps import Step, plan_steps
from switchpoint.orchestration.workdirs import remove_stale, staging_dir

STEP_JOBS = ("data", "train", "infer-local", "infer-bedrock", "score", "report")


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


# --- running ---------------------------------------------------------------------------------
def run_root(store: Store, sweep: dict, task: dict) -> Store:
    return store.child(sweep["name"], task.get("store_key", task["name"]))


def _data_settings(sweep: dict, task: dict) -> tuple[Any, dict]:
    """The data job's settings for this task, and what its folder carries of the sweep."""
    from switchpoint.data.job import public_sweep, settings_for_sweep

    carried = {"sweep": public_sweep(sweep), "models": sweep.get("model_entries"),
               "api_models": sweep.get("api_model_entries")}
    return settings_for_sweep(task["manifest_path"], task["name"], sweep), carried


def run_data_step(step: Step, run: Store, sweep: dict, task: dict, fingerprint: dict | None = None) -> dict:
    """The data step runs here for every backend: light CPU work whose sources may be local files.

    Its record names this host and process and carries a heartbeat, like every step's; any failure,
    an interrupt included, is recorded as failed before it propagates.
    """
    from switchpoint.data.job import prepare

    settings, _ = _data_settings(sweep, task)
    started = time.monotonic()
    try:
        with Heartbeat(run, step, backend="local"), staging_dir(step.name) as tmp:
            prepare(settings, tmp / "data", sweep)
            run.child(step.output).publish(tmp / "data", fingerprint)
    except BaseException as err:
        reason = str(err) if isinstance(err, JobError) else f"{type(err).__name__}: {err}".splitlines()[0]
        record_run(run, step, backend="local", status="failed", wall_s=round(time.monotonic() - started, 3),
                   reason=reason)
        raise
    return record_run(run, step, backend="local", status="done", wall_s=round(time.monotonic() - started, 3),
                      billable_s=None)


def current_fingerprint(step: Step, run: Store, steps: list[Step], sweep: dict, task: dict) -> dict:
    if step.kind == "local":
        settings, carried = _data_settings(sweep, task)
        return freshness.data_fingerprint(settings, task, carried)
    return freshness.step_fingerprint(step, run, steps, sweep)


def run_step(step: Step, run: Store, sweep: dict, task: dict, backend: str, options: dict,
             fingerprint: dict | None = None, report_inputs: list[str] | None = None) -> dict:
    """Run one step; its old marker goes first, so a step being redone never reads as done meanwhile."""
    target = run.child(step.output)
    if target.exists(SUCCESS):
        target.delete(SUCCESS)
    if step.kind == "local":
        return run_data_step(step, run, sweep, task, fingerprint)
    staged = report_inputs if step.job == "report" else None
    if backend == "local":
        return runners.run_local(step, run, fingerprint=fingerprint, report_inputs=staged)
    if backend == "docker":
        return runners.run_docker(step, run, sweep, registry=options.get("registry"), fingerprint=fingerprint,
                                  report_inputs=staged)
    if backend == "sagemaker":
        return run_sagemaker(step, run, sweep, role_arn=options.get("role_arn"), registry=options.get("registry"),
                             poll_s=options.get("poll_s", 30), fingerprint=fingerprint, report_inputs=staged)
    raise JobError(f"unknown backend {backend!r}; use local, docker or sagemaker")


def select_steps(steps: list[Step], job: str, models: tuple[str, ...]) -> list[Step]:
    if job == "sweep":
        chosen = steps
    else:
        chosen = [s for s in steps if s.job == job]
    if models:
        chosen = [s for s in chosen if s.job not in ("train", "infer-local", "infer-bedrock")
                  or s.model in models]
    return chosen


def report_inputs(sweep: dict, task: dict, steps: list[Step]) -> list[str]:
    """Every file the report step reads (layout.RunContents), so it is staged nothing else."""
    contents = layout.RunContents(
        models=tuple(s.model for s in steps if s.job == "train"),
        api_models=tuple(s.model for s in steps if s.job == "infer-bedrock"),
        sizes=tuple(manifests.sweep_sizes(sweep, task["name"])), seeds=tuple(sweep["seeds"]))
    return contents.report_inputs()


def _data_state(sweep: dict, task: dict, run: Store, job: str, force: bool) -> tuple[dict | None, bool]:
    """(the data step's fingerprint, whether the data in the store stays as it is in this run)."""
    try:
        data_print = current_fingerprint(plan_steps(sweep, task)[0], run, [], sweep, task)
    except JobError:
        return None, True  # the pre-flight names the problem
    if job not in ("sweep", "data"):
        return data_print, True
    data = run.child(layout.DATA)
    marker = data.marker()
    redo = force or data.incomplete_reason(marker) is not None \
        or freshness.what_changed(marker.get("fingerprint") if marker else None, data_print) is not None
    return data_print, not redo


def _needs_run(step: Step, run: Store, fingerprint: dict, force: bool, label: str) -> bool:
    """False (and says so) when the step's output is complete and made from the same inputs and settings."""
    target = run.child(step.output)
    marker = target.marker()
    incomplete = target.incomplete_reason(marker)
    if force:
        return True
    if incomplete is not None:
        if marker is not None:
            _echo(f"{label} {step.name}: output not complete ({target.uri}: {incomplete}); running again")
        return True
    changed = freshness.what_changed(marker.get("fingerprint") if marker else None, fingerprint)
    if changed is None:
        _echo(f"{label} {step.name}: done already ({target.uri}), skipped")
        return False
    _echo(f"{label} {step.name}: inputs or settings changed since it ran ({changed}); running again")
    return True


def _run_parallel(todo: list[Step], run: Store, sweep: dict, task: dict, backend: str, options: dict,
                  prints: dict[str, dict]) -> list[dict]:
    """One SageMaker job per model at the same time; each waits on its own waiter."""
    records, errors = [], []
    pool = ThreadPoolExecutor(max_workers=len(todo))
    futures = [pool.submit(run_step, s, run, sweep, task, backend, options, prints[s.name]) for s in todo]
    try:
        for future in futures:
            try:
                records.append(future.result())
            except JobError as err:
                errors.append(str(err))
    except BaseException:
        # Ctrl-C: do not wait here for SageMaker waiters (hours); the jobs go on in SageMaker and
        # `status` shows them; a re-run finds what they published.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if errors:
        raise JobError("; ".join(errors))
    return records


def run_sweep(sweep: dict, task: dict, store: Store, *, job: str = "sweep", backend: str = "local",
              models: tuple[str, ...] = (), force: bool = False, options: dict | None = None,
              check_network: Callable[[str], bool] = reachable) -> list[dict]:
    """Run the chosen steps of one task in stage order, skipping steps complete from the same inputs.

    A step whose marker's fingerprint differs from the current one (an input re-made, a setting
    changed) is run again, saying what changed; ``force`` runs the chosen steps whatever their state.
    """
    options = options or {}
    label = f"[{task['name']}]"
    run = run_root(store, sweep, task)
    # The data step's fingerprint is taken from the sweep as written (before pre-flight adds defaults).
    data_print, data_current = _data_state(sweep, task, run, job, force)
    # The full pre-flight (plan) first: nothing is spent when it finds a problem.
    sweep = preflight(sweep, task, check_network, backend=backend, store=store, options=options, echo=_echo,
                      data_current=data_current)
    remove_stale()
    planned = plan_steps(sweep, task)
    steps = select_steps(planned, job, models)
    if not steps:
        raise JobError(f"no {job} step in sweep {sweep['name']} for task {task['name']}"
                       + (f" and models {', '.join(models)}" if models else ""))
    if backend == "local":  # torch's imports in the warm launcher's server while the data step runs
        runners.warm_up([s.job for s in steps])
    records = []
    for stage in sorted({s.stage for s in steps}):
        prints = {s.name: data_print if s.kind == "local" else current_fingerprint(s, run, planned, sweep, task)
                  for s in steps if s.stage == stage}
        todo = [s for s in steps if s.stage == stage and _needs_run(s, run, prints[s.name], force, label)]
        for step in todo:
            _echo(f"{label} {step.name}: running on {backend if step.kind != 'local' else 'local'} ({step.instance_type})")
        if backend == "sagemaker" and len(todo) > 1:
            records += _run_parallel(todo, run, sweep, task, backend, options, prints)
            continue
        for step in todo:
            records.append(run_step(step, run, sweep, task, backend, options, prints[step.name],
                                    report_inputs(sweep, task, planned)))
            _echo(f"{label} {step.name}: done")
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
@click.option("--force", is_flag=True, help="Run steps again even when their output is complete and up to date.")
@click.option("--role-arn", default=None, help="SageMaker execution role (else sagemaker.role_arn or $SWITCHPOINT_SAGEMAKER_ROLE).")
@click.option("--registry", default=None, envvar="IMAGE_REGISTRY",
              help="Registry holding switchpoint-<image>:<version> images (what `make push` pushes), e.g. 123.dkr.ecr.us-east-1.amazonaws.com.")
@click.option("--poll-seconds", default=30, type=int, help="SageMaker waiter delay.")
@click.option("--models-file", default=None, help="A YAML in models.yaml's shape with your own models (the sweep may "
              "also define them under models:); they travel to every job in the data folder.")
@click.option("--adaptive", is_flag=True, default=False, help="Run the sweep in rounds (train, infer, score, report, "
              "decide) and train only the sizes that can still change N* (also the sweep's adaptive.enabled).")
def run_command(job, sweep_name, tasks, store, backend, models, force, role_arn, registry, poll_seconds, models_file,
                adaptive):
    """Run one step (JOB) or the whole sweep, moving folders between the store and each job.

    \b
    Steps of a task, in order: data -> train (per model) -> infer-local (per model) and
    infer-bedrock (per API model) -> score -> report. Outputs go to STORE/<sweep>/<task>/.
    A step whose output is complete in the store (_SUCCESS: every file there with its size) and
    was made from the same inputs and settings is skipped, so re-running a killed sweep does only
    the remaining work; a step whose inputs or settings changed is run again (the line says what
    changed; --force runs it anyway). Each step records runs/<step>.json (status, host, pid,
    heartbeat, seconds).
    """
    paths = job_paths()

    def body() -> None:
        if backend == "local":  # the warm launcher's imports start now, beside the pre-flight
            runners.warm_up(["train"] if job == "sweep" else [job])
        sweep = manifests.load_sweep(sweep_name, models_file=models_file)
        target = open_store(store)
        options = {"role_arn": role_arn, "registry": registry, "poll_s": poll_seconds}
        if adaptive and job != "sweep":
            raise JobError(f"--adaptive runs a whole sweep in rounds; it cannot run the {job} step alone")
        adaptive_on = job == "sweep" and (adaptive or sweep["adaptive"]["enabled"])
        if adaptive_on and (models or force):
            raise JobError("an adaptive sweep decides which models and sizes to run itself: run it without "
                           "--model and --force (or set adaptive.enabled: false in the sweep)")
        for task in _tasks_for(sweep, tasks):
            if adaptive_on:
                def one_round(round_sweep: dict, task: dict = task) -> object:
                    return run_sweep(round_sweep, task, target, backend=backend, models=models, options=options)

                run_adaptive(sweep, task, run_root(target, sweep, task), one_round, _echo)
            else:
                run_sweep(sweep, task, target, job=job, backend=backend, models=models, force=force, options=options)
            if job in ("sweep", "report"):
                _echo(f"[{task['name']}] report: {run_root(target, sweep, task).child('report').uri}/report.html")

    run_job(paths, body, name=f"run {job}")


