"""Orchestration: steps, the docker command, the sagemaker backend on moto, pre-flight, plan and status."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.store import open_store
from switchpoint.orchestration import runners as backends
from switchpoint.orchestration.plan import preflight
from switchpoint.orchestration.sagemaker import run_sagemaker
from switchpoint.orchestration.status import step_status
from switchpoint.orchestration.steps import plan_steps
from switchpoint.orchestration.sweep import run_sweep

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/switchpoint-sagemaker"


def _sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sm.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SAGEMAKER_SWEEP = """
name: smtest
tasks: [jsquad]
data: {source: bundled, eval_size: 8}
sizes: [0, 2, 4]
seeds: [0, 1]
models: [qwen2.5-1.5b-instruct, swallow-13b]
api_models: [claude-haiku-4.5]
fewshot_api: {shots: [0, 2], mode: auto, role_arn: "arn:aws:iam::123456789012:role/bedrock-batch", s3_prefix: "s3://batch-bucket/in"}
train: {instance_type: ml.g6e.xlarge, spot: true, max_runtime_s: 7200}
infer: {instance_type: ml.g5.xlarge}
score: {instance_type: ml.m5.xlarge}
"""


def test_steps_of_the_smoke_sweep_chain_every_job():
    sweep, task = manifests.load_sweep("smoke"), manifests.load_task("jsquad")
    steps = plan_steps(sweep, task)
    assert [s.name for s in steps] == ["data", "train-tiny-gpt-neox", "infer-local-tiny-gpt-neox", "score", "report"]
    infer = steps[2]
    assert infer.inputs == {"data": "data", "adapters": "train/tiny-gpt-neox/checkpoints/adapters"}
    assert "fewshot-local" in infer.args[infer.args.index("--arms") + 1]
    assert steps[1].hyperparameters["sizes"] == "0,2,4,8" and steps[1].checkpoints == "train/tiny-gpt-neox/checkpoints"


def test_docker_command_mounts_the_layout_and_passes_secrets_by_name_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    sweep = manifests.load_sweep(_sweep_file(tmp_path, SAGEMAKER_SWEEP))
    steps = {s.name: s for s in plan_steps(sweep, manifests.load_task("jsquad"))}
    train = backends.docker_command(steps["train-swallow-13b"], tmp_path / "root", "img/train:1")
    assert train[:3] == ["docker", "run", "--rm"]
    # the container runs as this user, so the staged folder can stay 0700
    assert train[train.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert f"{tmp_path / 'root'}:/opt/ml" in train and "--gpus" in train
    assert train[train.index("--entrypoint") + 1] == "switchpoint"
    assert train[train.index("img/train:1") + 1] == "train"
    assert "AWS_SECRET_ACCESS_KEY" in train and not any("do-not-print-me" in part for part in train)
    score = backends.docker_command(steps["score"], tmp_path / "root", "img/score:1")
    assert "--gpus" not in score
    # model jobs share this host's hub cache (one download; a filled cache serves an offline host)
    cache = backends.host_hub_cache()
    assert train[train.index(f"{cache}:/opt/hf-hub-cache") + 1:][:2] == ["-e", "HF_HUB_CACHE=/opt/hf-hub-cache"]
    assert cache.is_dir() and not any("hf-hub-cache" in part for part in score)
    assert score[score.index("img/score:1") + 1:] == ["score", "--task", "/opt/ml/processing/input/data", "--bootstrap", "10000"]


def test_infer_bedrock_keeps_its_paid_answers_in_the_runs_store_on_every_backend(tmp_path):
    sweep = manifests.load_sweep(_sweep_file(tmp_path, SAGEMAKER_SWEEP))
    step = {s.name: s for s in plan_steps(sweep, manifests.load_task("jsquad"))}["infer-bedrock-claude-haiku-4.5"]
    local_run = open_store(tmp_path / "store").child("smtest", "jsquad")
    args = backends.step_args(step, "/tmp/root", local_run.uri)
    assert args[args.index("--state") + 1] == f"{local_run.uri}/state/infer-bedrock/claude-haiku-4.5"
    # docker: a local store's run folder is mounted, and the job is told the mounted path
    cmd = backends.docker_command(step, tmp_path / "root", "img/bedrock:1", run=local_run)
    assert f"{local_run.uri}:/opt/ml/run-store" in cmd
    assert cmd[cmd.index("--state") + 1] == "/opt/ml/run-store/state/infer-bedrock/claude-haiku-4.5"
    s3_cmd = backends.docker_command(step, tmp_path / "root", "img/bedrock:1", run=open_store("s3://team-bucket/p/smtest/jsquad"))
    assert s3_cmd[s3_cmd.index("--state") + 1] == "s3://team-bucket/p/smtest/jsquad/state/infer-bedrock/claude-haiku-4.5"
    assert not any(part.endswith(":/opt/ml/run-store") for part in s3_cmd)


def test_docker_backend_without_an_engine_says_so(tmp_path):
    sweep, task = manifests.load_sweep("smoke"), manifests.load_task("jsquad")
    step = plan_steps(sweep, task)[3]
    with pytest.raises(JobError, match="docker backend needs"):
        backends.run_docker(step, open_store(tmp_path), sweep)


def test_sagemaker_backend_submits_well_formed_jobs_to_moto(tmp_path, s3_bucket):
    import boto3

    sweep = manifests.load_sweep(_sweep_file(tmp_path, SAGEMAKER_SWEEP))
    task = manifests.load_task("jsquad")
    store = open_store(f"s3://{s3_bucket}/runs")
    records = run_sweep(sweep, task, store, backend="sagemaker", check_network=lambda host: True,
                        options={"role_arn": ROLE, "registry": REGISTRY, "poll_s": 1})
    assert [r["status"] for r in records] == ["done"] * 8
    sm = boto3.client("sagemaker")
    run = store.child("smtest", "jsquad")
    specs = {r["step"]: r["spec"] for r in records if "spec" in r}
    names = [r["job_name"] for r in records if "job_name" in r]
    assert len(set(names)) == len(names) == 7 and all(len(n) <= 63 for n in names)

    for model, instance in (("qwen2.5-1.5b-instruct", "ml.g5.2xlarge"), ("swallow-13b", "ml.g5.12xlarge")):
        spec = specs[f"train-{model}"]
        desc = sm.describe_training_job(TrainingJobName=spec["TrainingJobName"])
        assert desc["AlgorithmSpecification"]["TrainingImage"] == f"{REGISTRY}/switchpoint-train:0.1.0"
        assert desc["RoleArn"] == ROLE
        (channel,) = desc["InputDataConfig"]
        assert channel["ChannelName"] == "data"
        assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{s3_bucket}/runs/smtest/jsquad/data/"
        assert desc["CheckpointConfig"] == {"S3Uri": f"s3://{s3_bucket}/runs/smtest/jsquad/train/{model}/checkpoints/",
                                            "LocalPath": "/opt/ml/checkpoints"}
        assert desc["ResourceConfig"]["InstanceType"] == instance  # the model's own instance wins
        assert desc["EnableManagedSpotTraining"] is True
        stop = desc["StoppingCondition"]
        assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"] == 7200
        hp = desc["HyperParameters"]
        assert hp["model"] == model and hp["sizes"] == "0,2,4" and hp["seeds"] == "0,1"
        assert all(isinstance(v, str) and len(v) <= 256 for v in hp.values()) and len(hp) <= 100
        assert hp["load_in_4bit"] == ("true" if model == "swallow-13b" else "false")

    infer = sm.describe_processing_job(ProcessingJobName=specs["infer-local-qwen2.5-1.5b-instruct"]["ProcessingJobName"])
    assert infer["AppSpecification"]["ImageUri"] == f"{REGISTRY}/switchpoint-infer-local:0.1.0"
    inputs = {i["InputName"]: i["S3Input"] for i in infer["ProcessingInputs"]}
    assert inputs["adapters"]["S3Uri"] == f"s3://{s3_bucket}/runs/smtest/jsquad/train/qwen2.5-1.5b-instruct/checkpoints/adapters/"
    assert inputs["adapters"]["LocalPath"] == "/opt/ml/processing/input/adapters"
    (output,) = infer["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://{s3_bucket}/runs/smtest/jsquad/predictions/local/qwen2.5-1.5b-instruct/"
    assert output["S3Output"]["LocalPath"] == "/opt/ml/processing/output"
    bedrock = specs["infer-bedrock-claude-haiku-4.5"]
    assert bedrock["AppSpecification"]["ContainerEntrypoint"] == ["switchpoint", "infer-bedrock"]
    args = bedrock["AppSpecification"]["ContainerArguments"]
    assert args[args.index("--role-arn") + 1] == "arn:aws:iam::123456789012:role/bedrock-batch"
    assert "--skip-without-credentials" in args
    report = specs["report"]
    assert report["AppSpecification"]["ImageUri"] == f"{REGISTRY}/switchpoint-score:0.1.0"
    assert report["AppSpecification"]["ContainerEntrypoint"] == ["switchpoint", "report"]
    assert report["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"
    # the report is staged only what it reads: a manifest of keys, not the run prefix with every adapter
    (staged,) = report["ProcessingInputs"]
    assert staged["S3Input"]["S3DataType"] == "ManifestFile"
    assert staged["S3Input"]["S3Uri"] == f"s3://{s3_bucket}/runs/smtest/jsquad/runs/report-inputs.manifest"
    manifest = run.read_json("runs/report-inputs.manifest")
    assert manifest[0] == {"prefix": f"s3://{s3_bucket}/runs/smtest/jsquad/"}
    assert "data/task.json" in manifest and "runs/score.json" in manifest
    assert all(run.exists(key) for key in manifest[1:]) and not any("adapter_model" in k for k in manifest[1:])
    # no spec names a path of the submitting machine
    text = json.dumps(specs)
    assert str(tmp_path) not in text and os.getcwd() not in text and str(Path.home()) not in text
    assert not re.search(r'"/(tmp|home|root|Users|work)/', text)
    score = specs["score"]
    assert score["AppSpecification"]["ContainerArguments"][:2] == ["--task", "/opt/ml/processing/input/data"]
    # every step is complete in the store; the run records hold what the cost model needs
    assert all(run.child(p).is_complete() for p in ("data", "train/swallow-13b", "scores", "report"))
    record = run.read_json("runs/train-swallow-13b.json")
    assert record["status"] == "done" and "billable_s" in record  # moto reports no billable time; AWS does
    # a second run submits nothing: every step is complete
    again = run_sweep(sweep, task, store, backend="sagemaker", check_network=lambda host: True,
                      options={"role_arn": ROLE, "registry": REGISTRY, "poll_s": 1})
    assert again == []
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) >= 2


class _StoppedClient:
    """A SageMaker client whose job ends Stopped (moto cannot stop a training job)."""

    def __init__(self):
        self.created = []

    def create_training_job(self, **spec):
        self.created.append(spec)

    def get_waiter(self, name):
        class W:
            def wait(self, **kwargs):
                return None

        return W()

    def describe_training_job(self, TrainingJobName):
        return {"TrainingJobStatus": "Stopped", "BillableTimeInSeconds": 42, "TrainingTimeInSeconds": 60}


def test_a_stopped_sagemaker_job_counts_as_failed(tmp_path, s3_bucket):
    sweep = manifests.load_sweep(_sweep_file(tmp_path, SAGEMAKER_SWEEP))
    step = [s for s in plan_steps(sweep, manifests.load_task("jsquad")) if s.job == "train"][0]
    run = open_store(f"s3://{s3_bucket}/r")
    client = _StoppedClient()
    with pytest.raises(JobError, match="ended Stopped"):
        run_sagemaker(step, run, sweep, role_arn=ROLE, registry=REGISTRY, client=client)
    assert not run.child(step.output).is_complete()
    record = run.read_json(f"runs/{step.name}.json")
    assert record["status"] == "failed" and record["billable_s"] == 42


def test_sagemaker_needs_s3_a_role_and_registry_images(tmp_path):
    sweep = manifests.load_sweep(_sweep_file(tmp_path, SAGEMAKER_SWEEP))
    step = [s for s in plan_steps(sweep, manifests.load_task("jsquad")) if s.job == "train"][0]
    with pytest.raises(JobError, match="needs an s3:// store"):
        run_sagemaker(step, open_store(tmp_path), sweep, role_arn=ROLE, registry=REGISTRY)
    from switchpoint.core.store import S3Store

    with pytest.raises(JobError, match="is not in a registry"):
        run_sagemaker(step, S3Store("b", "p"), sweep, role_arn=ROLE, registry=None, client=_StoppedClient())
    smoke = manifests.load_sweep("smoke")
    tiny = plan_steps(smoke, manifests.load_task("jsquad"))[1]
    with pytest.raises(JobError, match="instance type 'local' cannot run on SageMaker"):
        run_sagemaker(tiny, S3Store("b", "p"), smoke, role_arn=ROLE, registry=REGISTRY)


def test_job_names_are_unique_and_short():
    sweep = manifests.load_sweep("study")
    step = [s for s in plan_steps(sweep, manifests.load_task("jsquad")) if s.job == "infer-local"][0]
    names = {backends.job_name(step, "sp-" + "x" * 80) for _ in range(50)}
    assert len(names) == 50 and all(len(n) <= 63 and n.replace("-", "").isalnum() for n in names)


def test_default_sweep_offline_stops_at_once_naming_what_it_cannot_reach(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the Hub is tried (and unreachable), not ruled out
    sweep, task = manifests.load_sweep("default"), manifests.load_task("xlsum")
    with pytest.raises(JobError) as err:
        preflight(sweep, task, check=lambda host: False)
    message = str(err.value)
    assert "cannot reach huggingface.co" in message and "Qwen/Qwen2.5-1.5B-Instruct" in message
    assert "csebuetnlp/xlsum" in message and "SWEEP=smoke" in message
    preflight(manifests.load_sweep("smoke"), task, check=lambda host: False)  # smoke needs no network


def test_status_reports_done_failed_and_pending(tmp_path):
    sweep, task = manifests.load_sweep("smoke"), manifests.load_task("jsquad")
    store = open_store(tmp_path)
    run_sweep(sweep, task, store, job="data")
    run = store.child("smoke", "jsquad")
    run.write_json("runs/train-tiny-gpt-neox.json", {"step": "train-tiny-gpt-neox", "status": "failed", "wall_s": 3.0,
                                                     "backend": "local", "reason": "train: out of memory"})
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_json("runs/score.json", {"step": "score", "status": "running", "backend": "local",
                                       "host": socket.gethostname(), "pid": int(dead.stdout)})
    states = {r["step"]: r["state"] for r in step_status(sweep, task, store)}
    assert states == {"data": "done", "train-tiny-gpt-neox": "failed", "infer-local-tiny-gpt-neox": "pending",
                      "score": "killed", "report": "pending"}
    result = CliRunner().invoke(main, ["status", "--sweep", "smoke", "--task", "jsquad", "--store", str(tmp_path)])
    assert result.exit_code == 0 and "out of memory" in result.output and "spent so far" in result.output


def test_the_local_report_step_is_staged_only_what_it_reads(tmp_path):
    from switchpoint.orchestration.runners import _stage_inputs
    from switchpoint.orchestration.sweep import report_inputs

    sweep, task = manifests.load_sweep("smoke"), manifests.load_task("jsquad")
    steps = plan_steps(sweep, task)
    run = open_store(tmp_path / "store")
    run.write_json("data/task.json", {"name": "jsquad"})
    run.write_text("data/eval.jsonl", "{}\n")
    run.write_text("scores/scores.jsonl", "{}\n")
    adapter = "train/tiny-gpt-neox/checkpoints/adapters/seed=0/n=2"
    run.write_bytes(f"{adapter}/adapter_model.safetensors", b"\0" * 4096)
    run.write_json(f"{adapter}/train_metrics.json", {"wall_s": 1.0})
    run.write_json("runs/score.json", {"status": "done"})
    report = next(s for s in steps if s.job == "report")
    _stage_inputs(report, run, tmp_path / "root", report_inputs(sweep, task, steps))
    staged = sorted(p.relative_to(tmp_path / "root/processing/input/run").as_posix()
                    for p in (tmp_path / "root/processing/input/run").rglob("*") if p.is_file())
    assert staged == ["data/task.json", "runs/score.json", "scores/scores.jsonl", f"{adapter}/train_metrics.json"]
