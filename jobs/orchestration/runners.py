"""Runners: one job contract, three ways to run it (SageMaker's lives in ``sagemaker.py``).

``local``     stages the step's inputs from the store into a private temporary ``/opt/ml``-shaped
              folder, runs ``switchpoint <job> --ml-root <folder>`` in this environment (forked from a
              warm server that has imported torch once, launcher.py; a plain subprocess otherwise).
``docker``    the same folder mounted at ``/opt/ml`` in ``docker run`` of the job's image, as the
              host user (so the folder stays 0700).

While a training job runs, each adapter is uploaded to the store as soon as it is finished (its
``train_metrics.json``, written last, exists), as SageMaker's checkpoint sync does: a killed job
loses at most the adapter in progress, and the re-run skips the ones already in the store. A step
that succeeds ends with its ``_SUCCESS`` (file list, sizes, fingerprint) written last; every step
keeps ``runs/<step>.json`` (status, host, pid, heartbeat, seconds) for ``status`` and the costs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchpoint import __version__
from switchpoint.core import layout
from switchpoint.core.contract import (
    DEFAULT_ROOT,
    JobError,
    job_paths,
    write_hyperparameters,
)
from switchpoint.core.store import Store, file_entry, local_files
from switchpoint.orchestration import launcher
from switchpoint.orchestration.records import Heartbeat, record_run
from switchpoint.orchestration.steps import ML_ROOT, RUN_STORE, Step
from switchpoint.orchestration.workdirs import staging_dir

CONTAINER_ROOT = DEFAULT_ROOT  # where a container sees the job layout
CONTAINER_HUB_CACHE = "/opt/hf-hub-cache"  # where a container sees this host's Hugging Face hub cache
MODEL_IMAGES = ("train", "infer-local")  # the images whose jobs load Hub models
POLL_S = 5.0  # how often a runner looks for finished adapters while its job runs
# Passed to containers by name only (docker takes the value from this environment), so no secret
# ever appears in a command line, a log or an image.
PASSTHROUGH_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                   "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "HF_TOKEN", "HF_HUB_OFFLINE",
                   "TRANSFORMERS_OFFLINE")
# A started job: a subprocess, or a local job forked from the warm launcher (the same methods).
Job = subprocess.Popen | launcher.WarmJob
# Called with (adapter path relative to the checkpoints, the job's process) after each adapter is published.
OnPublish = Callable[[str, Job], None]

__all__ = [
    "CONTAINER_ROOT",
    "AdapterPublisher",
    "docker_command",
    "image_uri",
    "job_name",
    "run_docker",
    "run_local",
    "step_args",
    "warm_up",
]


RUN_STORE_MOUNT = f"{CONTAINER_ROOT}/run-store"  # where docker sees a local store's run folder


def step_args(step: Step, ml_root: str, run_store: str) -> list[str]:
    """The step's arguments with the job's root and the run's store location filled in."""
    return [a.replace(ML_ROOT, ml_root).replace(RUN_STORE, run_store) for a in step.args]


def _stage_inputs(step: Step, run: Store, root: Path, report_inputs: list[str] | None = None) -> None:
    """Copy the step's inputs (and, for training, its settings and finished checkpoints) into ``root``."""
    try:
        _stage(step, run, root, report_inputs)
    except OSError as err:  # the local side: a full disk or an unwritable temporary folder
        raise JobError(f"step {step.name}: cannot stage its inputs in {root} ({err.strerror or err}); "
                       "set TMPDIR to a writable folder with space") from err


def _stage(step: Step, run: Store, root: Path, report_inputs: list[str] | None) -> None:
    paths = job_paths(root)
    for name, prefix in step.inputs.items():
        source = run.child(prefix) if prefix else run
        target = paths.channel(name) if step.kind == "training" else paths.processing_input(name)
        target.mkdir(parents=True, exist_ok=True)
        if not prefix and report_inputs is not None:  # the whole run: only the files the report reads
            source.download_files(target, report_inputs)
            continue
        if prefix and not source.list():
            raise JobError(f"step {step.name}: input {name!r} ({source.uri}) is empty; run the step that writes it first")
        source.download_dir(target)
    if step.kind == "training":
        write_hyperparameters(paths, step.hyperparameters)
        # Resume: adapters finished by an earlier, interrupted run come back (as SageMaker restores
        # checkpoints after a spot interruption), and the train job skips them.
        run.child(step.checkpoints).download_dir(paths.checkpoints)


def _visible(files: dict[str, Path]) -> dict[str, Path]:
    """Without hidden paths: a train job's ``.n=N.partial`` folders are work in progress, not outputs."""
    return {rel: p for rel, p in files.items() if not any(part.startswith(".") for part in rel.split("/"))}


class AdapterPublisher:
    """Uploads a training job's checkpoints as they are finished, each file once."""

    def __init__(self, step: Step, run: Store, root: Path) -> None:
        self.store = run.child(step.checkpoints)
        self.local = job_paths(root).checkpoints
        self.sent: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) of what the store holds

    def _stamp(self, path: Path) -> tuple[int, int]:
        info = path.stat()
        return info.st_size, info.st_mtime_ns

    def restored(self) -> None:
        """The files just staged from the store are there already: never upload them again unchanged."""
        self.sent = {rel: self._stamp(p) for rel, p in local_files(self.local).items()}

    def _send(self, files: dict[str, Path]) -> None:
        for rel, path in files.items():
            stamp = self._stamp(path)
            if self.sent.get(rel) != stamp:
                self.store.put_file(rel, path)
                self.sent[rel] = stamp

    def poll(self) -> list[str]:
        """Publish every finished adapter not yet in the store (train_metrics.json last); returns them."""
        adapters = self.local / layout.ADAPTERS
        published = []
        for metrics in sorted(adapters.glob(f"seed=*/n=*/{layout.TRAIN_METRICS}")) if adapters.is_dir() else []:
            folder = metrics.parent.relative_to(self.local).as_posix()
            files = {f"{folder}/{rel}": p for rel, p in local_files(metrics.parent).items()}
            last = f"{folder}/{layout.TRAIN_METRICS}"
            if self.sent.get(last) == self._stamp(metrics):
                continue
            try:
                self._send({rel: p for rel, p in files.items() if rel != last})
                self._send({last: metrics})
            except (JobError, FileNotFoundError):  # the job replaced the folder meanwhile: next poll
                continue
            published.append(folder)
        return published

    def flush(self) -> dict[str, dict[str, Any]]:
        """Upload what is left (finished adapters, the summary); marker entries of every checkpoint file."""
        files = _visible(local_files(self.local))
        self._send(files)
        return {f"checkpoints/{rel}": file_entry(p) for rel, p in files.items()}


def _collect_outputs(step: Step, run: Store, root: Path, publisher: AdapterPublisher | None, *,
                     fingerprint: dict | None) -> list[str]:
    """Upload a finished job's outputs and mark the step complete (``_SUCCESS`` last)."""
    paths = job_paths(root)
    target = run.child(step.output)
    if publisher is None:
        return target.publish(paths.processing_output, fingerprint)
    entries = publisher.flush()
    for sub, local in (("model", paths.model), ("data", paths.output_data)):
        uploaded = target.child("output", sub).upload_files(local_files(local))
        entries.update({f"output/{sub}/{rel}": entry for rel, entry in uploaded.items()})
    target.mark_complete(entries, fingerprint)
    return list(entries)


def _failure_reason(root: Path, returncode: int) -> str:
    failure = job_paths(root).failure
    if failure.exists():
        return failure.read_text(encoding="utf-8").strip()
    return f"exited with code {returncode} without writing {CONTAINER_ROOT}/output/failure"


def _wait(proc: Job, publisher: AdapterPublisher | None, on_publish: OnPublish | None,
          poll_s: float) -> int:
    """Wait for the job, publishing finished adapters every ``poll_s`` seconds (no sleeps: a timed wait)."""
    while True:
        try:
            returncode: int | None = proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            returncode = None
        for adapter in publisher.poll() if publisher else []:
            if on_publish:
                on_publish(adapter, proc)
        if returncode is not None:
            return returncode


def _stop(proc: Job, stop_cmd: list[str] | None) -> None:
    """End a job whose runner is interrupted (a docker client's container is stopped by name)."""
    if stop_cmd:
        subprocess.run(stop_cmd, capture_output=True, check=False)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _execute(step: Step, run: Store, root: Path, cmd: list[str], *, backend: str, fingerprint: dict | None,
             poll_s: float = POLL_S, on_publish: OnPublish | None = None, stop_cmd: list[str] | None = None,
             start: Callable[[list[str]], Job] = subprocess.Popen) -> dict:
    publisher = AdapterPublisher(step, run, root) if step.kind == "training" else None
    if publisher:
        publisher.restored()
    started = time.monotonic()
    try:
        with Heartbeat(run, step, backend=backend):
            proc = start(cmd)
            try:
                returncode = _wait(proc, publisher, on_publish, poll_s)
            except BaseException:
                _stop(proc, stop_cmd)
                raise
    except BaseException as err:
        if publisher:
            publisher.poll()  # whatever finished before the interruption is kept
        reason = f"the runner stopped ({type(err).__name__}{': ' + str(err) if str(err) else ''})"
        record_run(run, step, backend=backend, status="failed", wall_s=round(time.monotonic() - started, 3),
                   billable_s=None, reason=reason)
        raise
    wall = round(time.monotonic() - started, 3)
    if returncode != 0:
        if publisher:
            publisher.flush()  # failed training still keeps its finished adapters
        reason = _failure_reason(root, returncode)
        if getattr(proc, "lost_server", False):
            reason = ("the warm launcher's server died under the job, which was ended; run the step again "
                      f"(or set {launcher.ENV_SWITCH}=0)")
        record_run(run, step, backend=backend, status="failed", wall_s=wall, billable_s=None, reason=reason)
        raise JobError(f"step {step.name} failed: {reason}")
    try:
        _collect_outputs(step, run, root, publisher, fingerprint=fingerprint)
    except JobError as err:  # the job succeeded, publishing its outputs did not (a full disk, credentials)
        record_run(run, step, backend=backend, status="failed", wall_s=wall, billable_s=None, reason=str(err))
        raise
    return record_run(run, step, backend=backend, status="done", wall_s=wall, billable_s=None)


# --- local -----------------------------------------------------------------------------------
def warm_up(jobs: list[str]) -> bool:
    """Start the local launcher's warm server now (in the background) when a torch job is among ``jobs``."""
    return launcher.warm_up(jobs)


def run_local(step: Step, run: Store, *, fingerprint: dict | None = None, report_inputs: list[str] | None = None,
              poll_s: float = POLL_S, on_publish: OnPublish | None = None) -> dict:
    """Run a step as ``python -m switchpoint <job>`` in this environment over a private temporary /opt/ml-shaped
    folder: forked from the warm launcher's server when it can be (launcher.py), else a plain subprocess."""
    with staging_dir(step.name) as root:
        _stage_inputs(step, run, root, report_inputs)
        cmd = [sys.executable, "-m", "switchpoint", step.job, "--ml-root", str(root), *step_args(step, str(root), run.uri)]
        return _execute(step, run, root, cmd, backend="local", fingerprint=fingerprint, poll_s=poll_s,
                        on_publish=on_publish, start=launcher.launch)


# --- docker ----------------------------------------------------------------------------------
def image_uri(step: Step, sweep: dict, registry: str | None) -> str:
    """The sweep's ``images.<image>``, else ``<registry>/switchpoint-<image>:<version>`` (what `make push` pushes)."""
    if step.image in sweep.get("images", {}):
        return sweep["images"][step.image]
    base = f"switchpoint-{step.image}:{__version__}"
    return f"{registry.rstrip('/')}/{base}" if registry else base


def job_name(step: Step, prefix: str) -> str:
    """A unique job (or container) name of at most 63 characters of [a-zA-Z0-9-], readable at the front."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{prefix}-{step.name}").strip("-")[:50].rstrip("-")
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def container_name(step: Step) -> str:
    return job_name(step, "docker")


def host_hub_cache() -> Path:
    """This machine's Hugging Face hub cache, where ``plan`` looks for the models a docker job loads."""
    try:
        from huggingface_hub import constants
    except ImportError:  # an orchestration-only install: huggingface_hub's own rule
        home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")).expanduser().resolve()
    # absolute: docker reads a bare name after -v as a named volume, not this folder
    return Path(constants.HF_HUB_CACHE).expanduser().resolve()


def docker_command(step: Step, root: Path, image: str, name: str | None = None, run: Store | None = None) -> list[str]:
    """``docker run`` of the job's image with the staged folder at /opt/ml, as the host user (GPU jobs get --gpus all).

    A step that writes to its run's store (``RUN_STORE`` in its arguments) sees an s3:// store as it
    is, and a local store's run folder mounted at ``/opt/ml/run-store``. Train and infer-local jobs
    share this host's Hugging Face hub cache (mounted, ``HF_HUB_CACHE`` set), so a model is
    downloaded once, not per container, and a cache filled beforehand serves an offline host.
    """
    cmd = ["docker", "run", "--rm", "--name", name or container_name(step),
           "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{root}:{CONTAINER_ROOT}"]
    run_store = run.uri if run is not None else RUN_STORE_MOUNT
    if run is not None and not run.uri.startswith("s3://") and any(RUN_STORE in a for a in step.args):
        cmd += ["-v", f"{run.uri}:{RUN_STORE_MOUNT}"]
        run_store = RUN_STORE_MOUNT
    if step.gpu:
        cmd += ["--gpus", "all", "--shm-size", "16g"]
    if step.image in MODEL_IMAGES:  # one download of a model serves every job and run on this host
        cache = host_hub_cache()
        try:
            cache.mkdir(parents=True, exist_ok=True)  # else docker creates it, owned by root
        except OSError as err:
            raise JobError(f"the Hugging Face cache {cache} (HF_HUB_CACHE / HF_HOME) cannot be made: "
                           f"{err.strerror or err}") from err
        cmd += ["-v", f"{cache}:{CONTAINER_HUB_CACHE}", "-e", f"HF_HUB_CACHE={CONTAINER_HUB_CACHE}"]
    for env in PASSTHROUGH_ENV:
        if env in os.environ:
            cmd += ["-e", env]
    # The entrypoint is named explicitly because the score image also runs `switchpoint report`.
    return cmd + ["--entrypoint", "switchpoint", image, step.job, *step_args(step, CONTAINER_ROOT, run_store)]


def run_docker(step: Step, run: Store, sweep: dict, registry: str | None = None, *, fingerprint: dict | None = None,
               report_inputs: list[str] | None = None, poll_s: float = POLL_S) -> dict:
    if shutil.which("docker") is None:
        raise JobError("the docker backend needs the docker client on PATH and a running Docker engine")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise JobError("the docker backend needs a running Docker engine (`docker info` failed); "
                       "use BACKEND=local, or start Docker")
    with staging_dir(step.name) as root:
        _stage_inputs(step, run, root, report_inputs)
        # The folder stays 0700: the container runs as this user (docker_command's --user), never as root.
        name = container_name(step)
        cmd = docker_command(step, root, image_uri(step, sweep, registry), name, run)
        return _execute(step, run, root, cmd, backend="docker", fingerprint=fingerprint, poll_s=poll_s,
                        stop_cmd=["docker", "kill", name])
