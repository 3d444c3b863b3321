"""``switchpoint plan``: the full pre-flight of a sweep, run before anything is spent.

It builds every job's arguments for the chosen backend and parses them with that job's own settings
model, checks every arm (API mode and availability, shots prepared, context windows, engine support
and quantisation, GPU memory against the instance), prices the sweep and holds the API arms to
``max_usd``, and checks the network only for what runs on this machine and its Hugging Face cache
lacks. With the sagemaker backend every job spec is checked with botocore's own parameter
validation. ``run sweep`` calls ``preflight`` first and stops on any problem.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError, job_paths, run_job
from switchpoint.core.store import Store, open_store
from switchpoint.orchestration import checks
from switchpoint.orchestration.checks import _where
from switchpoint.orchestration.estimate import (
    TRAIN_MFU,
    api_estimate,
    default_max_usd,
    estimate_plan,
    example_lengths,
)
from switchpoint.orchestration.steps import model_entries, plan_steps

HUB_HOST = "huggingface.co"
BACKENDS = ("local", "docker", "sagemaker")


@dataclass
class Findings:
    """What the pre-flight found: problems stop the sweep, notices are printed."""

    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def notice(self, text: str | None) -> None:
        if text and text not in self.notices:
            self.notices.append(text)


# --- network: only what runs on this machine ----------------------------------------------------
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json")


def offline_switch() -> str | None:
    """The variable that makes huggingface_hub offline (``HF_HUB_OFFLINE``, else ``TRANSFORMERS_OFFLINE``,
    by its own rule), or None: with it set, the jobs take what the cache holds, nothing else."""
    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    return name if (os.environ.get(name) or "").upper() in ("1", "ON", "YES", "TRUE") else None


def hub_offline() -> bool:
    return offline_switch() is not None


def _cached(repo_id: str, revision: str | None, name: str, repo_type: str = "model") -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, name, revision=revision or "main", repo_type=repo_type)
    return found if isinstance(found, str) else None


def _shards(index_path: str) -> list[str] | None:
    """The weight files a sharded checkpoint's index names; None for an index that is not one."""
    try:
        weight_map = json.loads(Path(index_path).read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        return None
    return sorted(set(weight_map.values()))


def model_cached(repo_id: str, revision: str | None) -> bool:
    """Whether this machine's Hugging Face cache holds what a job loads of the model at ``revision``:
    config, tokenizer_config and a tokenizer file, and every weight file (all the shards an index
    names, since an interrupted download leaves the index and some of them). A job that finds them
    there needs no network (huggingface_hub falls back to the cache); the local runner and docker
    (which mounts this cache) share it."""
    if not all(_cached(repo_id, revision, f) for f in ("config.json", "tokenizer_config.json")) \
            or not any(_cached(repo_id, revision, f) for f in TOKENIZER_FILES):
        return False
    if any(_cached(repo_id, revision, f) for f in WEIGHT_FILES):
        return True
    for name in WEIGHT_INDEXES:
        if index := _cached(repo_id, revision, name):
            shards = _shards(index)
            try:
                return shards is not None and all(_cached(repo_id, revision, shard) for shard in shards)
            except ValueError:  # a shard name huggingface_hub refuses (absolute, "..")
                return False
    return False


def needed_hosts(sweep: dict, task: dict, *, backend: str = "local", data_done: bool = False) -> dict[str, list[str]]:
    """Hosts this machine must reach, with what needs each: the models when jobs run here (local,
    docker) and this machine's Hugging Face cache lacks them, the data sources when the data step
    (always run here) is still to do and the cache lacks them."""
    hosts: dict[str, list[str]] = {}
    if backend != "sagemaker":
        for entry in model_entries(sweep).values():
            if entry["source"] == "hub" and not model_cached(entry["hub_id"], entry.get("revision")):
                hosts.setdefault(HUB_HOST, []).append(f"model {entry['hub_id']}")
    if sweep["data"]["source"] == "remote" and not data_done:
        for role, source in task["sources"].items():
            if source.get("type") == "hub":
                if source.get("format") == "parquet" and source.get("path") and _cached(
                        source["uri"], source.get("revision"), source["path"], repo_type="dataset"):
                    continue
                hosts.setdefault(HUB_HOST, []).append(f"{role} data {source['uri']}")
            elif source.get("type") == "url":
                host = urlparse(source["uri"]).hostname or source["uri"]
                hosts.setdefault(host, []).append(f"{role} data {source['uri']}")
    return hosts


def reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    if host == HUB_HOST and hub_offline():
        return False  # the jobs would not try it
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _network(sweep: dict, task: dict, backend: str, data_done: bool, check: Callable[[str], bool],
             found: Findings) -> None:
    hosts = needed_hosts(sweep, task, backend=backend, data_done=data_done)
    missing = {host: needs for host, needs in hosts.items() if not check(host)}
    smoke = (f"Offline, run the bundled data and a tiny model with SWEEP=smoke "
             f"(make sweep TASK={task['name']} SWEEP=smoke)")
    if HUB_HOST in missing and (switch := offline_switch()):
        found.problem(f"{switch} is set and this machine's Hugging Face cache lacks {', '.join(missing.pop(HUB_HOST))} "
                      "at the pinned revision: download them first (hf download <id> --revision <revision>; a dataset "
                      f"with --repo-type dataset), or unset {switch}. {smoke}")
    if missing:
        detail = "; ".join(f"{host} (for {', '.join(needs)})" for host, needs in missing.items())
        found.problem(f"cannot reach {detail}. {smoke}")


# --- the whole pre-flight -------------------------------------------------------------------------
def with_default_budget(sweep: dict, task: dict, found: Findings) -> dict:
    """The sweep with ``fewshot_api.max_usd`` checked against the estimate, or a default from it per
    API model (the estimate on realistic lengths plus headroom, printed) where the sweep sets none."""
    sweep = copy.deepcopy(sweep)
    api = sweep["fewshot_api"]
    lengths = example_lengths(task) if sweep["api_models"] else None
    for name in sweep["api_models"]:
        est = api_estimate(sweep, task, name, lengths)
        if est["mode"] == "unavailable":
            continue  # checks.arms says why
        if api["max_usd"] is None:
            # From the on-demand price whatever the mode: the budget stays the same when a Bedrock
            # role is added later (batch is cheaper), so a finished step's settings do not change.
            budget = default_max_usd(est["on_demand_usd"])
            api.setdefault("max_usd_default", {})[name] = budget
            found.notice(f"{name}: estimated ${est['usd']:,.2f} ({est['mode']}, {est['records']:,} records, tokens on "
                         f"{lengths.basis}); no fewshot_api.max_usd in the sweep, so --max-usd {budget:,.0f} "
                         "(the on-demand estimate plus half again)")
        elif est["usd"] > api["max_usd"]:
            found.problem(f"{_where(sweep)}: at fewshot_api.max_usd: {name} is estimated at ${est['usd']:,.2f} "
                          f"({est['mode']}), above max_usd ${api['max_usd']:,.2f}; raise it, or run fewer shots, seeds "
                          "or eval examples")
    return sweep


def check_sweep(sweep: dict, task: dict, *, backend: str = "local", store: Store | None = None,
                options: dict | None = None, check: Callable[[str], bool] = reachable,
                data_current: bool = True) -> tuple[dict, Findings]:
    """(the sweep as it will run, findings) for one task (``data_current=False``: `run` will make the
    data again, so the data folder in the store is not checked against the sweep)."""
    if backend not in BACKENDS:
        raise JobError(f"unknown backend {backend!r}; use local, docker or sagemaker")
    options = options or {}
    found = Findings()
    sweep = with_default_budget(sweep, task, found)
    run = store.child(sweep["name"], task.get("store_key", task["name"])) if store is not None else None
    data_done = run is not None and data_current and run.child("data").is_complete()
    steps = plan_steps(sweep, task)
    checks.data_step(sweep, task, run if data_done else None, found)
    for step in steps:
        checks.job_settings(step, sweep, found)
    checks.arms(sweep, task, found)
    checks.model_sources(sweep, backend, found)
    checks.gpu_memory(sweep, steps, found)
    if backend == "sagemaker":
        checks.sagemaker_specs(sweep, steps, run, options, found)
    _network(sweep, task, backend, data_done, check, found)
    return sweep, found


def preflight(sweep: dict, task: dict, check: Callable[[str], bool] = reachable, *, backend: str = "local",
              store: Store | None = None, options: dict | None = None, echo: Callable[[str], None] | None = None,
              data_current: bool = True) -> dict:
    """Stop at once, naming every problem on one line, instead of failing an hour into a sweep;
    returns the sweep as it will run (with a default API budget where it set none)."""
    sweep, found = check_sweep(sweep, task, backend=backend, store=store, options=options, check=check,
                               data_current=data_current)
    for text in found.notices:
        (echo or (lambda m: click.echo(m, err=True)))(f"[{task['name']}] notice: {text}")
    if found.problems:
        raise JobError(f"plan: sweep {sweep['name']} / task {task['name']}: {len(found.problems)} problem(s): "
                       + " | ".join(found.problems))
    return sweep


# --- the command -------------------------------------------------------------------------------
def _sizes(sweep: dict, task: dict) -> str:
    return ",".join(map(str, manifests.sweep_sizes(sweep, task["name"])))


def _print_estimate(sweep: dict, task: dict, store: str) -> float:
    rows = estimate_plan(sweep, task)
    click.echo(f"\nsweep {sweep['name']} / task {task['name']} -> "
               f"{open_store(store).child(sweep['name'], task.get('store_key', task['name'])).uri}")
    click.echo(f"{'step':40} {'instance':16} {'GPU h':>8} {'API records':>12} {'API tokens in/out':>22} {'USD':>10}")
    for r in rows:
        tokens = f"{r['api_input_tokens']:,}/{r['api_output_tokens']:,}" if r["api_records"] else "-"
        click.echo(f"{r['step']:40} {r['instance']:16} {r['hours']:8.2f} {r['api_records'] or '-':>12} "
                   f"{tokens:>22} {r['usd']:10.2f}")
    subtotal = sum(r["usd"] for r in rows)
    click.echo(f"{'task total':40} {'':16} {sum(r['hours'] for r in rows):8.2f} {'':>12} {'':>22} {subtotal:10.2f}")
    adaptive = sweep["adaptive"]
    if adaptive["enabled"]:
        budget = [f"{v:g} GPU h" if k == "max_gpu_hours" else f"${v:g}" for k, v in adaptive.items()
                  if k in ("max_gpu_hours", "max_usd") and v is not None]
        click.echo(f"adaptive sweep: these figures are its worst case, the whole grid (N={_sizes(sweep, task)} with "
                   f"seeds {','.join(map(str, sweep['seeds']))}); its rounds stop each model once its answer is "
                   f"settled{' or at ' + ' / '.join(budget) if budget else ''}")
    return subtotal


@click.command("plan", context_settings={"show_default": True})
@click.option("--sweep", "sweep_name", default="default", help="Sweep name in manifests/sweeps or a YAML path.")
@click.option("--task", "tasks", multiple=True, help="Task name or YAML (repeatable); default: the sweep's tasks.")
@click.option("--store", default="runs", help="Store: a folder or s3://bucket/prefix.")
@click.option("--backend", type=click.Choice(BACKENDS), default="local", help="Where the jobs would run.")
@click.option("--models-file", default=None, help="A YAML in models.yaml's shape with your own models.")
@click.option("--role-arn", default=None, help="SageMaker execution role (else sagemaker.role_arn or $SWITCHPOINT_SAGEMAKER_ROLE).")
@click.option("--registry", default=None, envvar="IMAGE_REGISTRY", help="Registry holding the switchpoint images.")
@click.option("--offline", is_flag=True, help="Check nothing over the network: every host counts as reachable, and "
              "the store is not read (the data step counts as still to do).")
def plan_command(sweep_name, tasks, store, backend, models_file, role_arn, registry, offline):
    """Check a sweep end to end before anything is spent, and print its jobs, GPU hours, API tokens
    and dollars.

    \b
    Checks: every job's arguments for --backend parsed by that job's own settings; every arm's mode
    (batch needs the model's batch support, a Bedrock role and an S3 prefix), availability, shots
    prepared and context window; engine support (vLLM LoRA) and quantisation; a GPU-memory
    estimate per model against the instance; API cost against max_usd (a default from the estimate
    when none is set); the network, only for what runs on this machine; with --backend sagemaker,
    every job spec with botocore's parameter validation. Exit 1 on any problem.
    """
    paths = job_paths()

    def body() -> None:
        sweep = manifests.load_sweep(sweep_name, models_file=models_file)
        target = open_store(store)
        names = list(tasks) or sweep["tasks"]
        if not names:
            raise JobError(f"sweep {sweep['name']} names no tasks; pass --task")
        total, problems = 0.0, []
        for task in (manifests.load_task(t) for t in names):
            resolved, found = check_sweep(sweep, task, backend=backend, store=target,
                                          options={"role_arn": role_arn, "registry": registry},
                                          check=(lambda host: True) if offline else reachable,
                                          data_current=not offline)
            total += _print_estimate(resolved, task, store)
            for text in found.notices:
                click.echo(f"  notice: {text}")
            for text in found.problems:
                click.echo(f"  PROBLEM: {text}")
            problems += found.problems
        click.echo(f"\nestimated total: ${total:,.2f} (rough: Claude tokens estimated high as the infer-bedrock dry run "
                   f"does, on realistic lengths; GPU time from FLOPs at {TRAIN_MFU:.0%} utilisation; an uncapped eval "
                   "set counts the task's stated eval rows, else 1,000)")
        if problems:
            raise JobError(f"found {len(problems)} problem(s) (listed above); the first: {problems[0]}")
        click.echo(f"plan: OK for backend {backend}: nothing above stops the sweep")

    run_job(paths, body, name="plan")
