"""Bring your own model and sweep: a model defined in the user's sweep YAML (or a --models-file) and
the user's own sweep run the smoke sweep end to end; every job reads the model entry and the sweep
from its inputs (the data folder), and the SageMaker job specs carry no host path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from switchpoint.core import manifests
from switchpoint.core.manifests import ManifestError
from switchpoint.core.store import open_store
from switchpoint.orchestration import sagemaker
from switchpoint.orchestration.plan import check_sweep
from switchpoint.orchestration.steps import plan_steps

OWN_TINY = """
name: mine
tasks: [jsquad]
data: {source: bundled, eval_size: 8}
sizes: [0, 2, 4]
seeds: [0, 1]
seeds_up_to_n: 2
models:
  - name: my-tiny
    source: tiny
    family: llama
    params_b: 0.0002
    context_length: 4096
    lora_target_modules: [q_proj, v_proj]
    prompt_format: plain
    instance_type: local
fewshot_local: {enabled: true, shots: [0, 2]}
train: {epochs: 2, batch_size: 2, learning_rate: 0.01, min_steps: 6, lora_r: 4, lora_alpha: 8, lora_dropout: 0.0,
        cutoff_len: 512, instance_type: local}
infer: {engine: hf, batch_size: 8, instance_type: local}
score: {bootstrap: 200, instance_type: local}
"""

OWN_HUB = """
name: minehub
tasks: [jsquad]
data: {source: bundled, eval_size: 8}
sizes: [0, 2]
seeds: [0]
models:
  - qwen2.5-1.5b-instruct
  - name: my-hub-model
    source: hub
    hub_id: example-org/my-1b-instruct
    revision: 0123456789abcdef0123456789abcdef01234567
    family: llama
    params_b: 1.1
    context_length: 4096
    lora_target_modules: [q_proj, v_proj]
    prompt_format: chat-template
api_models: [claude-haiku-4.5]
fewshot_api: {shots: [0, 2]}
train: {instance_type: ml.g5.2xlarge}
infer: {instance_type: ml.g5.2xlarge}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_own_model_and_own_sweep_run_the_smoke_sweep(tmp_path):
    from switchpoint.orchestration.sweep import run_sweep

    sweep_path = _write(tmp_path / "elsewhere", "mine.yaml", OWN_TINY)
    sweep, task = manifests.load_sweep(sweep_path), manifests.load_task("jsquad")
    assert sweep["models"] == ["my-tiny"] and sweep["model_entries"]["my-tiny"]["family"] == "llama"
    assert "my-tiny" not in manifests.load_models()  # nothing was added to the packaged models.yaml
    store = open_store(tmp_path / "store")
    run_sweep(sweep, task, store, check_network=lambda host: True)
    run = tmp_path / "store" / "mine" / "jsquad"
    # the data folder carries the sweep and the own model's entry; no job was given a host path
    carried = json.loads((run / "data" / "models.json").read_text())
    assert carried["models"]["my-tiny"]["lora_target_modules"] == ["q_proj", "v_proj"]
    assert str(sweep_path) not in (run / "data" / "sweep.json").read_text()
    for record in (run / "runs").glob("*.json"):
        assert str(tmp_path / "elsewhere") not in record.read_text(), record.name
    # seeds_up_to_n: 2 -> both seeds at N=2, only seed 0 at N=4 (trained, inferred, scored)
    adapters = run / "train" / "my-tiny" / "checkpoints" / "adapters"
    assert (adapters / "seed=1" / "n=2").is_dir() and (adapters / "seed=0" / "n=4").is_dir()
    assert not (adapters / "seed=1" / "n=4").exists()
    summary = (run / "scores" / "summary.csv").read_text()
    assert "my-tiny" in summary
    assert (run / "report" / "report.html").exists() and (run / "report" / "_SUCCESS").exists()


def test_a_models_file_adds_own_models_and_bad_entries_name_file_and_key(tmp_path):
    models_file = _write(tmp_path, "my_models.yaml", """
models:
  my-llama:
    source: hub
    hub_id: example-org/llama-ja
    revision: abcdef0
    family: llama
    params_b: 1.0
    lora_target_modules: [q_proj]
    prompt_format: chat-template
""")
    sweep_path = _write(tmp_path, "s.yaml", OWN_TINY.replace(OWN_TINY[OWN_TINY.index("models:"):OWN_TINY.index("fewshot_local")],
                                                          "models: [my-llama]\n"))
    with pytest.raises(ManifestError, match=r"s\.yaml: at models: unknown model 'my-llama'"):
        manifests.load_sweep(sweep_path)
    sweep = manifests.load_sweep(sweep_path, models_file=models_file)
    assert sweep["model_entries"]["my-llama"]["hub_id"] == "example-org/llama-ja"
    bad = _write(tmp_path, "bad.yaml", OWN_TINY.replace("    family: llama\n", "    family: transformer-xl\n"))
    with pytest.raises(ManifestError, match=r"bad\.yaml \(models\.0\): at family: 'transformer-xl' is not one of"):
        manifests.load_sweep(bad)
    nameless = _write(tmp_path, "nameless.yaml", OWN_TINY.replace("  - name: my-tiny\n    source", "  - source"))
    with pytest.raises(ManifestError, match=r"nameless\.yaml: at models\.0\.name: an own model needs a name"):
        manifests.load_sweep(nameless)


def test_sagemaker_job_specs_of_an_own_sweep_carry_no_host_paths(tmp_path, s3_bucket):
    sweep = manifests.load_sweep(_write(tmp_path / "users" / "me", "minehub.yaml", OWN_HUB))
    task = manifests.load_task("jsquad")
    store = open_store(f"s3://{s3_bucket}/runs")
    found = check_sweep(sweep, task, backend="sagemaker", store=store, check=lambda host: True,
                        options={"role_arn": "arn:aws:iam::123456789012:role/sm", "registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com"})[1]
    assert found.problems == [], found.problems
    run = store.child("minehub", "jsquad")
    for step in plan_steps(sweep, task):
        if step.kind == "local":
            continue
        builder = sagemaker.training_job_spec if step.kind == "training" else sagemaker.processing_job_spec
        spec = builder(step, run, sweep, image="r/i:1", role_arn="arn:aws:iam::123456789012:role/sm", name="n")
        text = json.dumps(spec)
        assert str(tmp_path) not in text and "minehub.yaml" not in text, step.name
        assert "--sweep" not in text  # the report reads the sweep from the data folder


def test_two_task_files_with_the_same_name_get_different_store_folders(tmp_path):
    text = (manifests.manifest_dir() / "tasks" / "jsquad.yaml").read_text(encoding="utf-8")
    a = manifests.load_task(_write(tmp_path / "a", "jsquad.yaml", text))
    b = manifests.load_task(_write(tmp_path / "b", "jsquad.yaml", text.replace("max_new_tokens: 32", "max_new_tokens: 16")))
    assert a["name"] == b["name"] == "jsquad"
    assert len({a["store_key"], b["store_key"], manifests.load_task("jsquad")["store_key"]}) == 3
    assert manifests.load_task("jsquad")["store_key"] == "jsquad"
