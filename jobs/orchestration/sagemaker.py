"""The SageMaker runner: boto3 ``create_training_job`` / ``create_processing_job`` on the S3 store.

Jobs read and write the store directly (channels, checkpoint sync, processing outputs); the runner
waits with SageMaker's waiters, records billable seconds and writes the step's ``_SUCCESS``. A spec
names only store URIs and container paths, never a path of the machine that submits it.

The report step is staged only the files it reads: a manifest of their keys (``S3DataType:
ManifestFile``, written to the store beside the run records) instead of the whole run prefix with
every adapter's weights. SageMaker keeps each key's path below the manifest's prefix.
"""

from __future__ import annotations

import os
from typing import Any

from switchpoint.core import layout
from switchpoint.core.contract import JobError
from switchpoint.core.store import S3Store, Store
from switchpoint.core.store_s3 import import_boto3
from switchpoint.orchestration.records import Heartbeat, record_run
from switchpoint.orchestration.runners import (
    CONTAINER_ROOT,
    image_uri,
    job_name,
    step_args,
)
from switchpoint.orchestration.steps import Step


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


def write_input_manifest(run: S3Store, keys: list[str]) -> str:
    """A SageMaker manifest of the run's files among ``keys`` (missing ones left out); returns its URI."""
    present = run.sizes()
    manifest = [{"prefix": run.uri + "/"}, *[k for k in keys if k in present]]
    run.write_json(layout.REPORT_MANIFEST, manifest)
    return run.child(layout.REPORT_MANIFEST).uri


def _processing_input(run: S3Store, input_name: str, prefix: str, manifest_uri: str | None) -> dict:
    whole_run = not prefix and manifest_uri is not None
    return {
        "InputName": input_name,
        "S3Input": {"S3Uri": manifest_uri if whole_run else (run.child(prefix) if prefix else run).uri + "/",
                    "LocalPath": f"{CONTAINER_ROOT}/processing/input/{input_name}",
                    "S3DataType": "ManifestFile" if whole_run else "S3Prefix", "S3InputMode": "File"},
    }


def processing_job_spec(step: Step, run: S3Store, sweep: dict, *, image: str, role_arn: str, name: str,
                        manifest_uri: str | None = None) -> dict:
    volume = int(sweep["sagemaker"]["volume_gb"])
    app: dict[str, Any] = {"ImageUri": image, "ContainerEntrypoint": ["switchpoint", step.job]}
    if step.args:  # SageMaker refuses an empty argument list
        app["ContainerArguments"] = step_args(step, CONTAINER_ROOT, run.uri)
    return {
        "ProcessingJobName": name,
        "RoleArn": role_arn,
        "AppSpecification": app,
        "ProcessingInputs": [_processing_input(run, input_name, prefix, manifest_uri)
                             for input_name, prefix in step.inputs.items()],
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


def _check(step: Step, run: Store, image: str) -> None:
    if not isinstance(run, S3Store):
        raise JobError(f"the sagemaker backend needs an s3:// store (got {run.uri}); set STORE=s3://bucket/prefix")
    if step.instance_type == "local":
        raise JobError(f"step {step.name}: instance type 'local' cannot run on SageMaker; "
                       "set train.instance_type / infer.instance_type in the sweep (a tiny model is for BACKEND=local)")
    if "/" not in image:
        raise JobError(f"step {step.name}: image {image!r} is not in a registry; run `make push` and pass "
                       f"--registry (or IMAGE_REGISTRY=...), or set images.{step.image} in the sweep")


def _submit_and_wait(sm: Any, step: Step, spec: dict, poll_s: int) -> tuple[str, float | None, float | None, str | None]:
    """(status, billable seconds, job seconds, failure reason) of the job ``spec`` once it has ended."""
    waiter_config = {"Delay": poll_s, "MaxAttempts": max(1, int(step.max_runtime_s * 3 / poll_s))}
    if step.kind == "training":
        name = spec["TrainingJobName"]
        sm.create_training_job(**spec)
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=waiter_config)
        desc = sm.describe_training_job(TrainingJobName=name)
        return (desc["TrainingJobStatus"], desc.get("BillableTimeInSeconds"), desc.get("TrainingTimeInSeconds"),
                desc.get("FailureReason"))
    name = spec["ProcessingJobName"]
    sm.create_processing_job(**spec)
    sm.get_waiter("processing_job_completed_or_stopped").wait(ProcessingJobName=name, WaiterConfig=waiter_config)
    desc = sm.describe_processing_job(ProcessingJobName=name)
    start, end = desc.get("ProcessingStartTime"), desc.get("ProcessingEndTime")
    billable = round((end - start).total_seconds(), 3) if start and end else None
    return desc["ProcessingJobStatus"], billable, billable, desc.get("FailureReason")


def _sentence(err: BaseException, what: str) -> JobError | None:
    """A JobError for an AWS failure (a rejected spec, credentials, throttling); None for an interrupt."""
    if isinstance(err, JobError):
        return err
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    if isinstance(err, ClientError):
        info = err.response.get("Error", {})
        return JobError(f"{what}: {err.operation_name} failed ({info.get('Code')}: {info.get('Message')})")
    if isinstance(err, (BotoCoreError, WaiterError)):
        return JobError(f"{what}: {' '.join(str(err).split())}")
    return None


def run_sagemaker(step: Step, run: Store, sweep: dict, *, role_arn: str | None = None, registry: str | None = None,
                  poll_s: int = 30, client: Any = None, fingerprint: dict | None = None,
                  report_inputs: list[str] | None = None) -> dict:
    """Submit one step as a SageMaker job, wait for it, record billable seconds, mark it complete."""
    image = image_uri(step, sweep, registry)
    _check(step, run, image)
    assert isinstance(run, S3Store)
    if client is None:
        try:
            client = import_boto3("the sagemaker backend").client("sagemaker", region_name=sweep["sagemaker"]["region"] or None)
        except Exception as err:  # noqa: BLE001 - e.g. NoRegionError: one sentence, not a traceback
            raise JobError(f"step {step.name}: cannot open a SageMaker client ({type(err).__name__}: {err}); "
                           "set sagemaker.region in the sweep or AWS_REGION") from err
    sm = client
    role = sagemaker_role(sweep, role_arn)
    name = job_name(step, f"sp-{sweep['name']}")
    if step.kind == "training":
        spec = training_job_spec(step, run, sweep, image=image, role_arn=role, name=name)
    else:
        manifest = write_input_manifest(run, report_inputs) if report_inputs is not None else None
        spec = processing_job_spec(step, run, sweep, image=image, role_arn=role, name=name, manifest_uri=manifest)
    try:
        with Heartbeat(run, step, backend="sagemaker", job_name=name, spec=spec):
            status, billable, seconds, reason = _submit_and_wait(sm, step, spec, poll_s)
    except BaseException as err:
        error = _sentence(err, f"step {step.name}: SageMaker job {name}")
        record_run(run, step, backend="sagemaker", status="failed", job_name=name, billable_s=None,
                   reason=str(error) if error else f"the runner stopped ({type(err).__name__})", spec=spec)
        if error is not None and error is not err:
            raise error from err
        raise
    if status != "Completed":  # Stopped counts as failed: the outputs are not all there
        record_run(run, step, backend="sagemaker", status="failed", job_name=name, sagemaker_status=status,
                   billable_s=billable, reason=reason, spec=spec)
        raise JobError(f"step {step.name}: SageMaker job {name} ended {status}" + (f": {reason}" if reason else ""))
    run.child(step.output).mark_complete(fingerprint=fingerprint)
    return record_run(run, step, backend="sagemaker", status="done", job_name=name, billable_s=billable,
                      training_s=seconds, spec=spec)
