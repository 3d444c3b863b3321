"""`switchpoint plan` as a full pre-flight: every job's arguments through its own settings, every arm,
GPU memory, cost against max_usd, the network only for what runs here, SageMaker specs validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.store import open_store
from switchpoint.orchestration.estimate import api_estimate, estimate_plan
from switchpoint.orchestration.plan import check_sweep, needed_hosts, preflight
from switchpoint.orchestration.steps import plan_steps

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/switchpoint-sagemaker"
BEDROCK_ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"
OFFLINE = {"check": lambda host: True}


def _sweep(tmp_path: Path, text: str, name: str = "mine.yaml") -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return manifests.load_sweep(path)


def _problems(sweep: dict, task: str = "jsquad", **kw) -> list[str]:
    kw.setdefault("check", lambda host: True)
    return check_sweep(sweep, manifests.load_task(task), **kw)[1].problems


@pytest.mark.parametrize("name", ["default", "study"])
@pytest.mark.parametrize("task", ["jsquad", "xlsum"])
def test_study_and_default_sweeps_pass_plan_offline_on_local_and_docker(name, task, monkeypatch):
    monkeypatch.delenv("BEDROCK_ROLE_ARN", raising=False)
    sweep = manifests.load_sweep(name)
    for backend in ("local", "docker"):
        resolved, found = check_sweep(sweep, manifests.load_task(task), backend=backend, check=lambda host: True)
        assert found.problems == [], found.problems
        # without a Bedrock role and prefix the API arms run on-demand, said in a notice
        assert any("on-demand" in text for text in found.notices)
        for step in plan_steps(resolved, manifests.load_task(task)):
            if step.job == "infer-bedrock":
                assert "--max-usd" in step.args  # a budget always travels, from the sweep or the estimate


@pytest.mark.parametrize("name", ["default", "study"])
def test_study_and_default_sweeps_pass_plan_on_sagemaker_with_every_spec_valid(name, s3_bucket, monkeypatch):
    monkeypatch.setenv("BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("BEDROCK_S3_PREFIX", f"s3://{s3_bucket}/bedrock")
    sweep = manifests.load_sweep(name)
    store = open_store(f"s3://{s3_bucket}/runs")
    for task in ("jsquad", "xlsum"):
        found = check_sweep(sweep, manifests.load_task(task), backend="sagemaker", store=store,
                            options={"role_arn": ROLE, "registry": REGISTRY}, check=lambda host: True)[1]
        assert found.problems == [], found.problems


def test_the_study_sweep_repeats_seeds_where_the_draw_matters_and_prepares_one_shot():
    study = manifests.load_sweep("study")
    assert len(study["seeds"]) >= 3 and study["seeds_up_to_n"] == 256
    assert manifests.seeds_at(256, study["seeds"], study["seeds_up_to_n"]) == study["seeds"]
    assert manifests.seeds_at(512, study["seeds"], study["seeds_up_to_n"]) == [min(study["seeds"])]
    assert 1 in manifests.prepared_sizes(study, "jsquad")
    default = manifests.load_sweep("default")
    assert len(default["seeds"]) >= 3 and default["seeds_up_to_n"] >= 256


def test_epochs_1_5_fails_in_plan_naming_the_sweep_file_and_key(tmp_path):
    sweep = _sweep(tmp_path, SMALL.replace("epochs: 3", "epochs: 1.5"))
    problems = _problems(sweep)
    assert len(problems) == 1
    assert "mine.yaml: at train" in problems[0] and "'epochs'='1.5' is invalid" in problems[0]
    with pytest.raises(JobError, match=r"mine\.yaml: at train.*'epochs'='1\.5'"):
        preflight(sweep, manifests.load_task("jsquad"), lambda host: True)


SMALL = """
name: small
data: {source: bundled, eval_size: 8}
sizes: [0, 2, 4]
seeds: [0]
models: [tiny-gpt-neox]
train: {epochs: 3, batch_size: 2, min_steps: 4, cutoff_len: 512, instance_type: local}
infer: {engine: hf, batch_size: 4, instance_type: local}
score: {bootstrap: 1000, instance_type: local}
"""


def test_vllm_cannot_serve_lora_on_gpt_neox(tmp_path):
    problems = _problems(_sweep(tmp_path, SMALL.replace("engine: hf", "engine: vllm")))
    assert any("at infer.engine: vLLM does not serve LoRA adapters for GPTNeoXForCausalLM (model tiny-gpt-neox)" in p
               for p in problems)
    llama = SMALL.replace("engine: hf", "engine: vllm").replace("[tiny-gpt-neox]", "[tiny-llama]")
    assert not any("vLLM" in p for p in _problems(_sweep(tmp_path, llama)))
    auto = check_sweep(_sweep(tmp_path, SMALL.replace("engine: hf", "engine: auto"), "auto.yaml"),
                       manifests.load_task("jsquad"), check=lambda host: True)[1]
    assert auto.problems == [] and any("engine auto serves its adapters with hf" in n for n in auto.notices)


def test_an_adapter_trained_on_a_4bit_base_is_evaluated_on_a_4bit_base():
    sweep, task = manifests.load_sweep("study"), manifests.load_task("jsquad")
    steps = {s.name: s for s in plan_steps(sweep, task)}
    assert steps["train-swallow-13b"].hyperparameters["load_in_4bit"] == "true"
    args = steps["infer-local-swallow-13b"].args
    assert args[args.index("--load-in-4bit") + 1] == "true"
    assert "--load-in-4bit" not in steps["infer-local-elyza-7b"].args


BIG_OWN_MODEL = """
name: big
data: {source: remote, eval_size: 100}
sizes: [0, 8]
seeds: [0]
models:
  - name: my-13b
    source: hub
    hub_id: example-org/my-13b-instruct
    revision: 0123456789abcdef0123456789abcdef01234567
    family: llama
    params_b: 13.0
    context_length: 4096
    lora_target_modules: [q_proj, v_proj]
    prompt_format: chat-template
train: {cutoff_len: 1024, batch_size: 4, instance_type: ml.g5.2xlarge}
infer: {instance_type: ml.g5.2xlarge}
"""


def test_a_model_too_big_for_the_gpu_gets_a_fix_before_anything_runs(tmp_path):
    problems = _problems(_sweep(tmp_path, BIG_OWN_MODEL))
    train = [p for p in problems if p.startswith("train-my-13b:")]
    assert len(train) == 1 and "ml.g5.2xlarge has 24 GiB per GPU" in train[0]
    assert "load_in_4bit: true for my-13b" in train[0] and "instance_type: ml.g6e.xlarge (48 GiB per GPU)" in train[0]
    four_bit = BIG_OWN_MODEL.replace("    prompt_format: chat-template", "    prompt_format: chat-template\n    load_in_4bit: true")
    assert not any("GiB" in p for p in _problems(_sweep(tmp_path, four_bit)))


@pytest.mark.parametrize("revision, said", [("0123456789abcdef0123456789abcdef01234567", False), ("main", True),
                                             ("v1.0", True)])
def test_a_hub_model_on_a_branch_is_named_by_plan_and_a_commit_is_not(tmp_path, revision, said):
    text = BIG_OWN_MODEL.replace("0123456789abcdef0123456789abcdef01234567", revision)
    _, found = check_sweep(_sweep(tmp_path, text), manifests.load_task("jsquad"), check=lambda host: True)
    notices = [n for n in found.notices if "my-13b: revision" in n]
    assert bool(notices) == said and all("not a commit" in n and repr(revision) in n for n in notices)


def test_cost_above_max_usd_stops_plan_and_a_missing_budget_defaults_from_the_estimate(tmp_path):
    text = SMALL.replace("models: [tiny-gpt-neox]", "models: [tiny-gpt-neox]\napi_models: [claude-haiku-4.5]")
    capped = _sweep(tmp_path, text + "fewshot_api: {shots: [0, 2], max_usd: 0.0001}\n")
    problems = _problems(capped)
    assert any("at fewshot_api.max_usd: claude-haiku-4.5 is estimated at $" in p for p in problems)
    free = _sweep(tmp_path, text + "fewshot_api: {shots: [0, 2]}\n", "free.yaml")
    resolved, found = check_sweep(free, manifests.load_task("jsquad"), check=lambda host: True)
    assert found.problems == []
    estimate = api_estimate(free, manifests.load_task("jsquad"), "claude-haiku-4.5")
    budget = resolved["fewshot_api"]["max_usd_default"]["claude-haiku-4.5"]
    assert budget >= estimate["usd"] and any(f"--max-usd {budget:,.0f}" in n for n in found.notices)
    bedrock = next(s for s in plan_steps(resolved, manifests.load_task("jsquad")) if s.job == "infer-bedrock")
    assert float(bedrock.args[bedrock.args.index("--max-usd") + 1]) == pytest.approx(budget)


def test_xlsum_estimates_use_realistic_article_lengths_not_the_short_sample():
    sweep, task = manifests.load_sweep("default"), manifests.load_task("xlsum")
    from switchpoint.orchestration.estimate import example_lengths

    lengths = example_lengths(task)
    assert lengths.input_tokens >= task["lengths"]["input_chars"] and "stated lengths" in lengths.basis
    rows = {r["step"]: r for r in estimate_plan(sweep, task)}
    assert rows["infer-bedrock-claude-haiku-4.5"]["api_input_tokens"] > 0


def test_batch_needs_the_models_support_and_a_bedrock_role_and_prefix(tmp_path, monkeypatch):
    monkeypatch.delenv("BEDROCK_ROLE_ARN", raising=False)
    monkeypatch.delenv("BEDROCK_S3_PREFIX", raising=False)
    text = SMALL.replace("eval_size: 8", "eval_size: 200").replace(
        "models: [tiny-gpt-neox]", "models: [tiny-gpt-neox]\napi_models: [claude-haiku-4.5, claude-2.1]")
    sweep = _sweep(tmp_path, text + "fewshot_api: {shots: [0, 2], mode: auto}\n")
    task = manifests.load_task("jsquad")
    assert api_estimate(sweep, task, "claude-haiku-4.5")["mode"] == "on-demand"  # no role/prefix
    monkeypatch.setenv("BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("BEDROCK_S3_PREFIX", "s3://batch-bucket/in")
    assert api_estimate(sweep, task, "claude-haiku-4.5")["mode"] == "batch"
    step = next(s for s in plan_steps(sweep, task) if s.name == "infer-bedrock-claude-haiku-4.5")
    assert step.args[step.args.index("--role-arn") + 1] == BEDROCK_ROLE
    assert step.args[step.args.index("--s3-prefix") + 1] == "s3://batch-bucket/in"
    # a retired model cannot be called: plan says so and names the replacement
    retired = [p for p in _problems(sweep) if "claude-2.1" in p]
    assert len(retired) == 1 and "retired" in retired[0] and "use claude-sonnet-4.5 instead" in retired[0]
    monkeypatch.delenv("BEDROCK_ROLE_ARN")
    forced = _sweep(tmp_path, text.replace(", claude-2.1]", "]") + "fewshot_api: {shots: [0, 2], mode: {claude-haiku-4.5: batch}}\n",
                    "forced.yaml")
    problems = _problems(forced)
    assert len(problems) == 1 and "at fewshot_api (mode batch)" in problems[0] and "--role-arn" in problems[0]


def test_network_is_checked_only_for_what_runs_on_this_machine(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the Hub is tried, not ruled out
    sweep, task = manifests.load_sweep("default"), manifests.load_task("xlsum")
    local = needed_hosts(sweep, task)
    assert any("Qwen/Qwen2.5-1.5B-Instruct" in need for need in local["huggingface.co"])
    assert any("csebuetnlp/xlsum" in need for need in local["huggingface.co"])
    on_sagemaker = needed_hosts(sweep, task, backend="sagemaker")
    assert not any("Qwen" in need for need in on_sagemaker.get("huggingface.co", []))  # models load on SageMaker
    assert needed_hosts(sweep, task, backend="sagemaker", data_done=True) == {}
    problems = _problems(sweep, "xlsum", check=lambda host: False)
    assert any("cannot reach huggingface.co" in p and "SWEEP=smoke" in p for p in problems)


def test_a_stale_data_folder_in_the_store_is_named(tmp_path):
    from switchpoint.orchestration.sweep import run_sweep

    sweep, task = _sweep(tmp_path, SMALL), manifests.load_task("jsquad")
    store = open_store(tmp_path / "store")
    run_sweep(sweep, task, store, job="data", check_network=lambda host: True)
    bigger = _sweep(tmp_path, SMALL.replace("sizes: [0, 2, 4]", "sizes: [0, 2, 4, 8]"), "bigger.yaml")
    bigger["name"] = "small"
    problems = _problems(bigger, store=store)
    assert any("the data folder was prepared for sizes [0, 2, 4]" in p and "8" in p for p in problems)


def test_sagemaker_plan_refuses_a_folder_store_tiny_models_and_missing_images(tmp_path):
    problems = _problems(_sweep(tmp_path, SMALL), backend="sagemaker", store=open_store(tmp_path),
                         options={"role_arn": ROLE, "registry": REGISTRY})
    assert any("needs an s3:// store" in p for p in problems)


def test_plan_command_prints_the_estimate_and_exits_1_on_a_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SMALL.replace("epochs: 3", "epochs: 1.5"), encoding="utf-8")
    result = CliRunner().invoke(main, ["plan", "--sweep", str(path), "--task", "jsquad", "--offline"])
    assert result.exit_code == 1 and "PROBLEM:" in result.output and "estimated total" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: plan: found 1 problem(s)")
    ok = CliRunner().invoke(main, ["plan", "--sweep", "smoke", "--task", "xlsum", "--offline"])
    assert ok.exit_code == 0, ok.output
    assert "train-tiny-gpt-neox" in ok.output and "estimated total: $0.00" in ok.output and "plan: OK" in ok.output


def test_a_spec_sagemaker_would_refuse_is_caught_by_botocore_validation(tmp_path, s3_bucket):
    long_name = "m" + "x" * 299  # a legal own-model name, too long for a SageMaker tag or hyperparameter
    sweep = _sweep(tmp_path, BIG_OWN_MODEL.replace("my-13b", long_name).replace("params_b: 13.0", "params_b: 1.0"))
    problems = _problems(sweep, backend="sagemaker", store=open_store(f"s3://{s3_bucket}/runs"),
                         options={"role_arn": ROLE, "registry": REGISTRY})
    assert any(p.startswith(f"infer-local-{long_name}: the CreateProcessingJob request is over SageMaker's limits") for p in problems)
    assert any("SageMaker allows 256" in p for p in problems)  # the train job's hyperparameter


def test_a_model_from_a_local_path_runs_only_where_the_path_can_be_read(tmp_path):
    own = BIG_OWN_MODEL.replace("    source: hub\n    hub_id: example-org/my-13b-instruct\n",
                                f"    source: local\n    path: {tmp_path / 'weights'}\n").replace("params_b: 13.0", "params_b: 1.0")
    sweep = _sweep(tmp_path, own)
    assert any(f"path {tmp_path / 'weights'} does not exist" in p for p in _problems(sweep))
    (tmp_path / "weights").mkdir()
    assert _problems(sweep) == []
    problems = _problems(sweep, backend="docker")
    assert len(problems) == 1 and "which a docker job cannot read" in problems[0]


def test_api_dollars_are_the_manifest_prices_of_the_estimated_tokens(monkeypatch):
    monkeypatch.delenv("BEDROCK_ROLE_ARN", raising=False)
    sweep, task = manifests.load_sweep("default"), manifests.load_task("jsquad")
    rows = {r["step"]: r for r in estimate_plan(sweep, task)}
    api = rows["infer-bedrock-claude-haiku-4.5"]
    assert api["api_records"] == 500 * 6 * 3  # eval cap x shot counts x three seeds
    price = manifests.get_api_model("claude-haiku-4.5")
    on_demand = (api["api_input_tokens"] * price["input_per_mtok"] + api["api_output_tokens"] * price["output_per_mtok"]) / 1e6
    assert api["mode"] == "on-demand" and api["usd"] == pytest.approx(on_demand, rel=1e-6)
    monkeypatch.setenv("BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("BEDROCK_S3_PREFIX", "s3://batch-bucket/in")
    batch = {r["step"]: r for r in estimate_plan(sweep, task)}["infer-bedrock-claude-haiku-4.5"]
    assert batch["mode"] == "batch" and batch["usd"] == pytest.approx(on_demand * (1 - price["batch_discount"]), rel=1e-6)
    assert rows["train-qwen2.5-1.5b-instruct"]["hours"] > 0 and rows["train-qwen2.5-1.5b-instruct"]["usd"] > 0
