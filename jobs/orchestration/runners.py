"""Runners: one job contract, three ways to run it.

``local``     stages the step's inputs from the store into a temporary ``/opt/ml``-shaped folder,
              runs ``switchpoint <job> --ml-root <folder>`` in this environment, uploads the outputs.
``docker``    the same folder mounted at ``/opt/ml`` in ``docker run`` of the job's image.
``sagemaker`` boto3 ``create_training_job`` / ``create_processing_job`` reading and writing the
              S3 store directly; waits with SageMaker's waiters and records billable seconds.

Every runner ends a successful step by writing the step's ``_SUCCESS`` in the store (last), and
records ``runs/<step>.json`` (status, seconds, instance) for ``status`` and the cost model.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from switchpoint import __version__
from switchpoint.core.contract import JobError, job_paths, write_hyperparameters
from switchpoint.core.store import S3Store, Store
from switchpoint.orchestration.steps import ML_ROOT, Step

CONTAINER_ROOT = "/opt/ml"
# Passed to containers by name only (docker takes the value from this environment), so no secret
# ever appears in a command line, a log or an image.
PASSTHROUGH_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                   "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "HF_TOKEN", "HF_HUB_OFFLINE")


def record_run(run: Store, step: Step, **fields: Any) -> dict:
    record = {"step": step.name, "job": step.job, "instance_type": step.instance_type, "spot": step.spot,
              "gpu": step.gpu, **fields}
    run.write_json(f"runs/{step.name}.json", record)
    return record


def _args(step: Step, ml_root: str) -> list[str]:
    return [a.replace(ML_ROOT, ml_root) for a in step.args]


def _stage_inputs(step: Step, run: Store, root: Path) -> None:
    paths = job_paths(root)
    for name, prefix in step.inputs.items():
        source = run.child(prefix) if prefix else run
        if prefix and not source.list():
            raise JobError(f"step {step.name}: input {name!r} ({source.uri}) is empty; run the step that writes it first")
        target = paths.channel(name) if step.kind == "training" else paths.processing_input(name)
        target.mkdir(parents=True, exist_ok=True)
        source.download_dir(target)
    if step.kind == "training":
        write_hyperparameters(paths, step.hyperparameters)
        # Resume: adapters finished by an earlier, interrupted run come back (as SageMaker restores
        # checkpoints after a spot interruption), and the train job skips them.
        run.child(step.checkpoints).download_dir(paths.checkpoints)


def _collect_outputs(step: Step, run: Store, root: Path, *, complete: bool) -> list[str]:
    paths = job_paths(root)
    target = run.child(step.output)
    if step.kind == "training":
        files = [f"checkpoints/{f}" for f in run.child(step.checkpoints).upload_dir(paths.checkpoints)]
        if complete:
            files += [f"output/model/{f}" for f in target.child("output", "model").upload_dir(paths.model)]
            files += [f"output/data/{f}" for f in target.child("output", "data").upload_dir(paths.output_data)]
            target.mark_complete(files)
        return files
    if not complete:
        return []
    return target.publish(paths.processing_output)


def _failure_reason(root: Path, returncode: int) -> str:
    failure = job_paths(root).failure
    if failure.exists():
        return failure.read_text(encoding="utf-8").strip()
    return f"exited with code {returncode} without writing {CONTAINER_ROOT}/output/failure"


# --- local -----------------------------------------------------------------------------------
def run_local(step: Step, run: Store) -> dict:
    """Run a step as a subprocess of this environment over a temporary /opt/ml-shaped folder."""
    with tempfile.TemporaryDirectory(prefix=f"switchpoint-{step.name}-") as tmp:
        root = Path(tmp)
        _stage_inputs(step, run, root)
        cmd = [sys.executable, "-m", "switchpoint", step.job, "--ml-root", str(root), *_args(step, str(root))]
        return _execute(step, run, root, cmd, backend="local")


def _execute(step: Step, run: Store, root: Path, cmd: list[str], *, backend: str) -> dict:
    # host and pid let `status` tell a running step from one whose runner was killed
    record_run(run, step, backend=backend, status="running", started=time.time(), host=socket.gethostname(),
               pid=os.getpid())
    started = time.monotonic()
    proc = subprocess.run(cmd)
    wall = round(time.monotonic() - started, 3)
    ok = proc.returncode == 0
    _collect_outputs(step, run, root, complete=ok)  # failed training still keeps its finished adapters
    if not ok:
        reason = _failure_reason(root, proc.returncode)
        record_run(run, step, backend=backend, status="failed", wall_s=wall, billable_s=None, reason=reason)
        raise JobError(f"step {step.name} failed: {reason}")
    return record_run(run, step, backend=backend, status="done", wall_s=wall, billable_s=None)


# --- docker ----------------------------------------------------------------------------------
def image_uri(step: Step, sweep: dict, registry: str | None) -> str:
    """The sweep's ``images.<image>``, else ``<registry>/switchpoint-<image>:<version>`` (what `make push` pushes)."""
    if step.image in sweep.get("images", {}):
        return sweep["images"][step.image]
    base = f"switchpoint-{step.image}:{__version__}"
    return f"{registry.rstrip('/')}/{base}" if registry else base


def docker_command(step: Step, root: Path, image: str) -> list[str]:
    """``docker run`` of the job's image with the staged folder at /opt/ml (GPU jobs get --gpus all)."""
    cmd = ["docker", "run", "--rm", "--name", job_name(step, "docker"),
           "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{root}:{CONTAINER_ROOT}"]
    if step.gpu:
        cmd += ["--gpus", "all", "--shm-size", "16g"]
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            cmd += ["-e", name]
    # The entrypoint is named explicitly because the score image also runs `switchpoint report`.
    return cmd + ["--entrypoint", "switchpoint", image, step.job, *_args(step, CONTAINER_ROOT)]


def run_docker(step: Step, run: Store, sweep: dict, registry: str | None = None) -> dict:
    if shutil.which("docker") is None:
        raise JobError("the docker backend needs the docker client on PATH and a running Docker engine")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise JobError("the docker backend needs a running Docker engine (`docker info` failed); "
                       "use BACKEND=local, or start Docker")
    with tempfile.TemporaryDirectory(prefix=f"switchpoint-{step.name}-") as tmp:
        root = Path(tmp)
        _stage_inputs(step, run, root)
        os.chmod(root, 0o777)
        return _execute(step, run, root, docker_command(step, root, image_uri(step, sweep, registry)), backend="docker")


# --- sagemaker -------------------------------------------------------------------------------
def job_name(step: Step, prefix: str) -> str:
    """A unique job name of at most 63 characters of [a-zA-Z0-9-], readable at the front."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{prefix}-{step.name}").strip("-")[:50].rstrip("-")
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def training_job_spec(step: Step, run: S3Store, sweep: dict, *, image: str, role_arn: str, name: str) -> dict:
    volume = int(sweep["sagemaker"]["volume_gb"])
    for key, value in step.hyperparameters.items():
        if len(value) > 256:
            raise JobError(f"step {step.name}: hyperparameter {key!r} is {len(value)} characters; SageMaker allows 256")
    stopping = {"MaxRuntimeInSeconds": step.max_runtime_s}
    if step.spot:
        stopping["MaxWaitTimeInSeconds"] = step.max_runtime_s * 2  # must be >= MaxRuntimeInSeconds
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["switchpoint", step.job]},
        "RoleArn": role_arn,
        "HyperParameters": dict(step.hyperparameters),
        "InputDataConfig": [{
            "ChannelName": channel,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": run.child(prefix).uri + "/",
                                            "S3DataDistributionType": "FullyReplicated"}},
        } for channel, prefix in step.inputs.items()],
        "OutputDataConfig": {"S3OutputPath": run.child(step.output, "output").uri + "/"},
        "ResourceConfig": {"InstanceType": step.instance_type, "InstanceCount": 1, "VolumeSizeInGB": volume},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": step.spot,
        "CheckpointConfig": {"S3Uri": run.child(step.checkpoints).uri + "/", "LocalPath": f"{CONTAINER_ROOT}/checkpoints"},
        "Tags": [{"Key": "switchpoint:step", "Value": step.name}],
    }


def processing_job_spec(step: Step, run: S3Store, sweep: dict, *, image: str, role_arn: str, name: str) -> dict:
    volume = int(sweep["sagemaker"]["volume_gb"])
    return {
        "ProcessingJobName": name,
        "RoleArn": role_arn,
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": ["switchpoint", step.job],
                             "ContainerArguments": _args(step, CONTAINER_ROOT)},
        "ProcessingInputs": [{
            "InputName": input_name,
            "S3Input": {"S3Uri": (run.child(prefix) if prefix else run).uri + "/",
                        "LocalPath": f"{CONTAINER_ROOT}/processing/input/{input_name}",
                        "S3DataType": "S3Prefix", "S3InputMode": "File"},
        } for input_name, prefix in step.inputs.items()],
        "ProcessingOutputConfig": {"Outputs": [{
            "OutputName": "output",
            "S3Output": {"S3Uri": run.child(step.output).uri + "/", "LocalPath": f"{CONTAINER_ROOT}/processing/output",
                         "S3UploadMode": "EndOfJob"},
        }]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": step.instance_type,
                                                  "VolumeSizeInGB": volume}},
        "StoppingCondition": {"MaxRuntimeInSeconds": step.max_runtime_s},
        "Tags": [{"Key": "switchpoint:step", "Value": step.name}],
    }


def sagemaker_role(sweep: dict, role_arn: str | None) -> str:
    role = role_arn or sweep["sagemaker"]["role_arn"] or os.environ.get("SWITCHPOINT_SAGEMAKER_ROLE")
    if not role:
        raise JobError("the sagemaker backend needs an execution role: --role-arn, sagemaker.role_arn in the sweep, "
                       "or $SWITCHPOINT_SAGEMAKER_ROLE")
    return role


def run_sagemaker(step: Step, run: Store, sweep: dict, *, role_arn: str | None = None, registry: str | None = None,
                  poll_s: int = 30, client: Any = None) -> dict:
    """Submit one step as a SageMaker job, wait for it, record billable seconds, mark it complete."""
    if not isinstance(run, S3Store):
        raise JobError(f"the sagemaker backend needs an s3:// store (got {run.uri}); set STORE=s3://bucket/prefix")
    if step.instance_type == "local":
        raise JobError(f"step {step.name}: instance type 'local' cannot run on SageMaker; "
                       "set train.instance_type / infer.instance_type in the sweep (a tiny model is for BACKEND=local)")
    import boto3

    sm = client or boto3.client("sagemaker", region_name=sweep["sagemaker"]["region"] or None)
    role = sagemaker_role(sweep, role_arn)
    image = image_uri(step, sweep, registry)
    if "/" not in image:
        raise JobError(f"step {step.name}: image {image!r} is not in a registry; run `make push` and pass "
                       "--registry (or IMAGE_REGISTRY=...), or set images.{step.image} in the sweep")
    name = job_name(step, f"sp-{sweep['name']}")
    waiter_config = {"Delay": poll_s, "MaxAttempts": max(1, int(step.max_runtime_s * 3 / poll_s))}
    if step.kind == "training":
        spec = training_job_spec(step, run, sweep, image=image, role_arn=role, name=name)
        record_run(run, step, backend="sagemaker", status="running", job_name=name, spec=spec)
        sm.create_training_job(**spec)
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=waiter_config)
        desc = sm.describe_training_job(TrainingJobName=name)
        status = desc["TrainingJobStatus"]
        billable = desc.get("BillableTimeInSeconds")
        training = desc.get("TrainingTimeInSeconds")
        reason = desc.get("FailureReason")
    else:
        spec = processing_job_spec(step, run, sweep, image=image, role_arn=role, name=name)
        record_run(run, step, backend="sagemaker", status="running", job_name=name, spec=spec)
        sm.create_processing_job(**spec)
        sm.get_waiter("processing_job_completed_or_stopped").wait(ProcessingJobName=name, WaiterConfig=waiter_config)
        desc = sm.describe_processing_job(ProcessingJobName=name)
        status = desc["ProcessingJobStatus"]
        start, end = desc.get("ProcessingStartTime"), desc.get("ProcessingEndTime")
        billable = round((end - start).total_seconds(), 3) if start and end else None
        training = billable
        reason = desc.get("FailureReason")
    if status != "Completed":  # Stopped counts as failed: the outputs are not all there
        record_run(run, step, backend="sagemaker", status="failed", job_name=name, sagemaker_status=status,
                   billable_s=billable, reason=reason, spec=spec)
        raise JobError(f"step {step.name}: SageMaker job {name} ended {status}" + (f": {reason}" if reason else ""))
    target = run.child(step.output)
    target.mark_complete()
    return record_run(run, step, backend="sagemaker", status="done", job_name=name, billable_s=billable,
                      training_s=training, spec=spec)

