"""API arms that can run: the mode per model (arm_mode), availability, and the model entry from the data folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from bedrock_fake import message_text
from click.testing import CliRunner
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import MODELS_FILE
from switchpoint.infer_bedrock import job as ib
from switchpoint.infer_bedrock.job import Settings, infer_bedrock
from switchpoint.infer_bedrock.settings import UNAVAILABLE, arm_mode

ROLE = "arn:aws:iam::123456789012:role/switchpoint-bedrock-batch"
PREFIX = "s3://bucket/prefix"


def entry(name: str) -> dict:
    return manifests.get_api_model(name)


@pytest.mark.parametrize("name, settings, records, mode, notice", [
    ("claude-haiku-4.5", {"mode": "auto", "role_arn": ROLE, "s3_prefix": PREFIX}, 500, "batch", None),
    ("claude-haiku-4.5", {"mode": "auto", "role_arn": ROLE, "s3_prefix": PREFIX}, None, "batch", None),
    ("claude-haiku-4.5", {"mode": "auto", "role_arn": None, "s3_prefix": PREFIX}, 500, "on-demand", "no --role-arn given"),
    ("claude-haiku-4.5", {"mode": "auto"}, 500, "on-demand", "no --role-arn and --s3-prefix given"),
    ("claude-haiku-4.5", {"mode": "auto", "role_arn": ROLE, "s3_prefix": PREFIX}, 99, "on-demand",
     "99 records are fewer than the batch minimum of 100"),
    ("claude-3-haiku", {"mode": "on-demand", "role_arn": ROLE, "s3_prefix": PREFIX}, 500, "on-demand", None),
    ("claude-haiku-4.5", {"mode": "batch"}, 500, UNAVAILABLE, "--mode batch needs --role-arn and --s3-prefix"),
    ("claude-2.1", {"mode": "auto"}, 500, UNAVAILABLE, "retired since 2025-07-21"),
    ("claude-instant-1.2", {"mode": "on-demand"}, 500, UNAVAILABLE, "use claude-haiku-4.5 instead"),
])
def test_arm_mode_decides_per_model_and_never_fails_auto_for_want_of_a_role(name, settings, records, mode, notice):
    got_mode, got_notice = arm_mode(entry(name), settings, records)
    assert got_mode == mode
    if notice is None:
        assert got_notice is None
    else:
        assert notice in got_notice and "\n" not in got_notice


def test_a_model_without_batch_runs_on_demand_in_auto_and_is_refused_in_forced_batch():
    own = {**entry("claude-3-haiku"), "name": "my-claude", "batch": False, "batch_discount": 0.0}
    assert arm_mode(own, {"mode": "auto", "role_arn": ROLE, "s3_prefix": PREFIX}) == (
        "on-demand", "on-demand for my-claude: my-claude has no batch inference on Bedrock")
    mode, notice = arm_mode(own, Settings(api_model="my-claude", mode="batch", role_arn=ROLE, s3_prefix=PREFIX))
    assert mode == UNAVAILABLE and "no batch inference" in notice


def test_a_legacy_model_runs_with_a_notice():
    legacy = {**entry("claude-3-haiku"), "availability": {"status": "legacy", "date": "2026-01-01", "source": "AWS",
                                                          "replacement": "claude-haiku-4.5"}}
    mode, notice = arm_mode(legacy, {"mode": "on-demand"})
    assert mode == "on-demand" and "legacy since 2026-01-01" in notice and "claude-haiku-4.5" in notice


def test_arm_mode_imports_without_boto3():
    code = ("import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
            "from switchpoint.infer_bedrock.settings import arm_mode\n"
            "from switchpoint.core.manifests import get_api_model\n"
            "print(arm_mode(get_api_model('claude-haiku-4.5'), {'mode': 'auto'})[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "on-demand"


def test_every_api_model_states_batch_availability_and_cache_minimum_with_sources():
    models = manifests.load_api_models()
    for name, model in models.items():
        assert model["batch"] == (model["batch_discount"] > 0), name
        assert model["availability"]["source"] and model["cache_min_tokens_source"], name
        if model["availability"]["status"] == "retired":
            assert model["availability"]["replacement"] in models and "not confirmed" in model["availability"]["source"]
    assert models["claude-haiku-4.5"]["cache_min_tokens"] == 4096
    assert models["claude-2.1"]["availability"]["date"] == "2025-07-21"
    assert models["claude-instant-1.2"]["availability"]["date"] == "2024-11-06"


def test_a_batch_model_without_a_batch_price_is_a_manifest_error(tmp_path):
    bad = {k: v for k, v in entry("claude-haiku-4.5").items() if k != "name"}
    bad["batch_discount"] = 0.0
    path = tmp_path / "api_models.yaml"
    path.write_text(json.dumps({"api_models": {"x": bad}}), encoding="utf-8")
    with pytest.raises(JobError, match=r"api_models\.yaml: at api_models\.x\.batch_discount"):
        manifests.load_api_models(path)


# --- in the job -------------------------------------------------------------------------------------
def test_auto_without_a_role_runs_on_demand_with_a_notice_instead_of_failing(jsquad_data, bedrock_fake, tmp_path):
    settings = Settings(api_model="claude-haiku-4.5", shots=[0], seeds=[0], mode="auto", batch_min_records=10,
                        state=str(tmp_path / "state"))
    metrics = infer_bedrock(settings, jsquad_data, tmp_path / "out")
    assert [a["mode"] for a in metrics["arms"]] == ["on-demand"] and bedrock_fake.runtime_calls == 12
    assert bedrock_fake.submissions == 0
    assert metrics["notices"] == ["on-demand for claude-haiku-4.5: no --role-arn and --s3-prefix given"]


def test_a_retired_model_is_a_one_line_error_naming_its_replacement(jsquad_data, bedrock_fake, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(ib.command, ["--api-model", "claude-2.1", "--shots", "0", "--seeds", "0",
                                             "--data", str(jsquad_data), "--out", str(out)])
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "claude-2.1 is retired since 2025-07-21" in line and "use claude-sonnet-4.5 instead" in line
    assert bedrock_fake.runtime_calls == 0 and not out.exists()


def test_the_api_model_entry_travels_in_the_data_folder(jsquad_data, bedrock_fake, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(jsquad_data, data)
    own = {k: v for k, v in entry("claude-haiku-4.5").items() if k not in ("name", "inference_profile")}
    own["bedrock_model_id"] = "anthropic.my-own-claude-v1:0"
    (data / MODELS_FILE).write_text(json.dumps({"models": {}, "api_models": {"my-claude": own}}), encoding="utf-8")
    bedrock_fake.configure(answer=lambda system, messages: message_text(messages[-1]["content"])[:4])
    metrics = infer_bedrock(Settings(api_model="my-claude", shots=[0], seeds=[0], mode="on-demand"), data,
                            tmp_path / "out")
    assert metrics["api_model"] == "my-claude" and metrics["model_id"] == "anthropic.my-own-claude-v1:0"
    assert {model_id for _, model_id, _ in bedrock_fake.runtime_requests} == {"anthropic.my-own-claude-v1:0"}
    assert (tmp_path / "out" / "fewshot-api__my-claude__n=0__seed=0.jsonl").exists()
