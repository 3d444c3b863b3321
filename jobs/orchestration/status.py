"""``switchpoint status``: each step of a sweep as done, stale, incomplete, running, killed, failed
or pending, with who runs it and the dollars spent so far.

A step is ``done`` only when its ``_SUCCESS`` lists files that are all in the store with their sizes
and its fingerprint matches the current inputs and settings (else ``stale``: ``run`` will redo it).
A ``running`` record whose runner is gone (its pid on this host, or no heartbeat from another host)
is ``killed``, so a crash never reads as running forever.
"""

from __future__ import annotations

import time
from typing import Any

import click
from switchpoint.core import layout, manifests, pricing
from switchpoint.core.contract import job_paths, run_job
from switchpoint.core.store import Store, open_store
from switchpoint.orchestration import freshness
from switchpoint.orchestration.plan import Findings, with_default_budget
from switchpoint.orchestration.records import lost_reason, read_record
from switchpoint.orchestration.rounds import RECORD as ROUNDS_RECORD
from switchpoint.orchestration.rounds import ROUND_SEEDS, ROUND_SIZES
from switchpoint.orchestration.steps import Step, plan_steps
from switchpoint.orchestration.sweep import (
    _tasks_for,
    _with_common,
    current_fingerprint,
    run_root,
)


def _state(step: Step, run: Store, record: dict, steps: list[Step], sweep: dict, task: dict) -> tuple[str, str | None]:
    """(state, why) of one step."""
    target = run.child(step.output)
    marker = target.marker()
    if marker is not None:
        missing = target.incomplete_reason(marker)
        if missing is None:
            changed = freshness.what_changed(marker.get("fingerprint"), current_fingerprint(step, run, steps, sweep, task))
            return ("stale", f"changed since it ran: {changed}") if changed else ("done", None)
        if record.get("status") != "running":
            return "incomplete", missing
    lost = lost_reason(record)
    if lost:
        job = record.get("job_name")
        return "killed", lost + (f"; SageMaker job {job} may still be running (see the SageMaker console)" if job else "")
    if record.get("status") == "running":
        return "running", _where(record)
    if record.get("status") == "failed":
        return "failed", record.get("reason")
    return "pending", None


def _where(record: dict) -> str:
    beat = record.get("heartbeat")
    age = f", heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
    job = f", SageMaker job {record['job_name']}" if record.get("job_name") else ""
    return f"on {record.get('host', '?')} pid {record.get('pid', '?')}{age}{job}"


def as_run_resolved_it(sweep: dict, task: dict, run: Store) -> dict:
    """The sweep as ``run`` resolved it, so unchanged steps are not reported stale: the default API
    budget the pre-flight adds, and an adaptive sweep's last round of sizes per model."""
    sweep = with_default_budget(sweep, task, Findings())
    if run.exists(ROUNDS_RECORD):
        rounds = run.read_json(ROUNDS_RECORD).get("rounds") or []
        if rounds:
            sweep = {**sweep, ROUND_SIZES: rounds[-1]["sizes"], ROUND_SEEDS: rounds[-1].get("every_seed_at") or {}}
    return sweep


def step_status(sweep: dict, task: dict, store: Store) -> list[dict[str, Any]]:
    prices = manifests.load_prices()
    run = run_root(store, sweep, task)
    written, sweep = sweep, as_run_resolved_it(sweep, task, run)
    steps = plan_steps(sweep, task)
    rows = []
    for step in steps:
        record = read_record(run, step.name)
        # run fingerprints the data step from the sweep as written (before the pre-flight's defaults)
        state, why = _state(step, run, record, steps, written if step.kind == "local" else sweep, task)
        seconds = record.get("billable_s") or record.get("wall_s") or 0.0
        job = pricing.JobTime(step.instance_type, record.get("wall_s"), record.get("billable_s"), step.spot)
        usd = pricing.spent_usd(job, prices) if state in ("done", "stale", "failed", "incomplete") else 0.0
        metrics = f"{step.output}/{layout.BEDROCK_METRICS}"
        if step.job == "infer-bedrock" and run.exists(metrics):
            usd += float(run.read_json(metrics).get("usd") or 0.0)
        rows.append({"step": step.name, "state": state, "backend": record.get("backend", "-"),
                     "seconds": seconds, "usd": usd, "reason": why})
    return rows


@click.command("status", context_settings={"show_default": True})
@_with_common
@click.option("--models-file", default=None, help="The YAML of your own models that `run` was given, if any.")
def status_command(sweep_name, tasks, store, models_file):
    """Print a table of the sweep's steps: done / stale / incomplete / running / killed / failed /
    pending, with the cost spent so far. killed: marked running by a runner that is gone (its pid on
    this host, or no heartbeat from another host for 10 minutes); stale: complete, but its inputs or
    settings changed since (``run`` does it again)."""
    paths = job_paths()

    def body() -> None:
        sweep = manifests.load_sweep(sweep_name, models_file=models_file)
        target = open_store(store)
        for task in _tasks_for(sweep, tasks):
            rows = step_status(sweep, task, target)
            click.echo(f"\nsweep {sweep['name']} / task {task['name']} ({run_root(target, sweep, task).uri})")
            click.echo(f"{'step':40} {'state':10} {'backend':10} {'seconds':>9} {'USD':>9}")
            for r in rows:
                click.echo(f"{r['step']:40} {r['state']:10} {r['backend']:10} {r['seconds']:9.1f} {r['usd']:9.3f}"
                           + (f"  {r['reason']}" if r["reason"] else ""))
            click.echo(f"{'spent so far':40} {'':10} {'':10} {'':>9} {sum(r['usd'] for r in rows):9.3f}")

    run_job(paths, body, name="status")


__all__ = ["status_command", "step_status"]
