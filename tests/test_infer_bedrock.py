"""infer-bedrock: few-shot Claude through Bedrock batch and on-demand, against moto's S3 and a local Bedrock fake."""

from __future__ import annotations

import json
import re
import shutil

import boto3
import pytest
import yaml
from bedrock_fake import fast_botocore_retries, message_text
from click.testing import CliRunner
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import load_task_from_data, read_eval_set
from switchpoint.core.predictions import Arm, read_predictions
from switchpoint.core.pricing import estimate_tokens
from switchpoint.core.pricing import token_usd as usd
from switchpoint.core.prompts import render_input
from switchpoint.infer_bedrock import context as ib_context
from switchpoint.infer_bedrock import job as ib
from switchpoint.infer_bedrock.arms import plan_arms
from switchpoint.infer_bedrock.batch import job_name
from switchpoint.infer_bedrock.job import Settings, infer_bedrock
from switchpoint.infer_bedrock.requests import BATCH_MAX_RECORDS, split_batches
from switchpoint.infer_bedrock.state import State

ROLE = "arn:aws:iam::123456789012:role/switchpoint-bedrock-batch"
API = "claude-haiku-4.5"


def reference_answers(data_dir):
    """An answer function for the fake: the eval example's first reference, found by the question text."""
    task = load_task_from_data(data_dir)
    table = {render_input(task, ex): ex["references"][0] for ex in read_eval_set(data_dir)}
    return lambda system, messages: table[message_text(messages[-1]["content"])]


def make_settings(bucket=None, **overrides) -> Settings:
    values = {"api_model": API, "shots": [0, 2], "seeds": [0], "mode": "batch", "role_arn": ROLE,
                  "s3_prefix": f"s3://{bucket}/bedrock" if bucket else None, "poll_seconds": 0.001,
                  "batch_min_records": 10, "concurrency": 2, "max_retries": 3}
    values.update(overrides)
    return Settings(**values)


def arm(n, seed=0, variant=None) -> Arm:
    return Arm("fewshot-api", API, n, seed, variant)


def metrics_of(out):
    return json.loads((out / "bedrock_metrics.json").read_text(encoding="utf-8"))


def s3_json_lines(bucket, suffix):
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"].endswith(suffix)]
    return {k: [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode().splitlines()
                if line.strip()] for k in keys}


# --- batch ----------------------------------------------------------------------------------------
def test_batch_joins_shuffled_outputs_on_record_id_and_prices_at_the_batch_discount(jsquad_data, s3_bucket,
                                                                                     bedrock_fake, tmp_path):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    out = tmp_path / "out"
    metrics = infer_bedrock(make_settings(s3_bucket), jsquad_data, out)

    assert bedrock_fake.submissions == 1 and bedrock_fake.runtime_calls == 0
    request = bedrock_fake.create_requests[0]
    assert len(request["jobName"]) <= 63 and request["roleArn"] == ROLE and request["clientRequestToken"]
    assert request["modelId"] == manifests.get_api_model(API)["inference_profile"]
    # The fake wrote the output in another order than the input: the join must not rely on order.
    inputs = s3_json_lines(s3_bucket, "input.jsonl")
    outputs = s3_json_lines(s3_bucket, "input.jsonl.out")
    (in_lines,), (out_lines,) = inputs.values(), outputs.values()
    assert [r["recordId"] for r in out_lines] != [r["recordId"] for r in in_lines]
    assert all(re.fullmatch(r"[A-Za-z0-9]{11}", r["recordId"]) for r in in_lines)
    body = in_lines[0]["modelInput"]
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["temperature"] == 0 and body["max_tokens"] == 32
    assert sorted(len(r["modelInput"]["messages"]) for r in in_lines)[::12] == [1, 5]  # question alone / 2 shots + question

    eval_ids = [ex["id"] for ex in read_eval_set(jsquad_data)]
    for n in (0, 2):
        records = read_predictions(out / arm(n).filename)  # validates the predictions contract
        assert [r["id"] for r in records] == eval_ids
        assert all(r["prediction"] == r["references"][0] and r["error"] is None for r in records)
        assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 and r["arm"] == arm(n).to_dict() for r in records)
    assert metrics["jobs"][0]["status"] == "Completed" and metrics["jobs"][0]["records"] == 24
    assert (metrics["records_ok"], metrics["records_error"], metrics["records_retried"]) == (24, 0, 0)
    api = manifests.get_api_model(API)
    expected = usd(metrics["input_tokens"], metrics["output_tokens"], api, batch=True)
    assert metrics["usd"] == pytest.approx(expected, abs=1e-6) and expected > 0
    assert metrics["input_tokens"] == metrics["jobs"][0]["input_tokens"]  # the batch manifest agrees
    assert [a["mode"] for a in metrics["arms"]] == ["batch", "batch"]
    assert sum(a["usd"] for a in metrics["arms"]) == pytest.approx(metrics["usd"], abs=1e-5)


def test_record_errors_make_a_partially_completed_job_and_are_retried_on_demand(jsquad_data, s3_bucket,
                                                                                bedrock_fake, tmp_path):
    eval_set = read_eval_set(jsquad_data)
    task = load_task_from_data(jsquad_data)
    failing = {"R0000000003", "R0000000007", "R0010000001"}  # two records of arm n=0, one of n=2
    hopeless = render_input(task, eval_set[7])  # still fails on-demand
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10,
                           record_error=lambda rid, body: (500, "Internal model error") if rid in failing else None,
                           runtime_error=lambda system, messages: (
                               (400, "ValidationException", "rejected") if message_text(messages[-1]["content"]) == hopeless
                               and len(messages) == 1 else None))
    out = tmp_path / "out"
    metrics = infer_bedrock(make_settings(s3_bucket), jsquad_data, out)

    assert metrics["jobs"][0]["status"] == "PartiallyCompleted"
    assert bedrock_fake.runtime_calls == 3  # only the failed records were asked again
    assert (metrics["records_retried"], metrics["records_error"], metrics["records_ok"]) == (3, 1, 23)
    by_id = {r["id"]: r for r in read_predictions(out / arm(0).filename)}
    retried_ok = by_id[eval_set[3]["id"]]
    assert retried_ok["error"] is None and retried_ok["prediction"] == retried_ok["references"][0]
    assert retried_ok["latency_s"] is not None  # measured on-demand; batch records have none
    lost = by_id[eval_set[7]["id"]]
    assert lost["prediction"] == "" and "batch 500" in lost["error"] and "ValidationException" in lost["error"]
    assert read_predictions(out / arm(2).filename)[1]["error"] is None
    # Retried records are paid at the on-demand price, the rest at the batch price.
    api = manifests.get_api_model(API)
    assert metrics["usd"] > usd(metrics["input_tokens"], metrics["output_tokens"], api, batch=True)


@pytest.mark.parametrize("final, resubmitted", [("Failed", 24), ("Expired", 24), ("Stopped", 12)])
def test_a_failed_expired_or_stopped_job_fails_the_run_and_a_rerun_resubmits_only_unanswered_records(
        jsquad_data, s3_bucket, bedrock_fake, tmp_path, final, resubmitted):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10, final_status=final,
                           final_message="job window passed" if final == "Expired" else "")
    out = tmp_path / "out"
    with pytest.raises(JobError, match=f"ended {final}.*re-run to resubmit"):
        infer_bedrock(make_settings(s3_bucket), jsquad_data, out)
    metrics = metrics_of(out)
    assert metrics["jobs"][0]["status"] == final
    assert all(a["skipped"] and a["skipped"].startswith("incomplete") for a in metrics["arms"])
    assert not list(out.glob("*.jsonl"))

    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    metrics = infer_bedrock(make_settings(s3_bucket), jsquad_data, out)
    assert bedrock_fake.submissions == 2
    second = s3_json_lines(s3_bucket, "input.jsonl")
    assert sorted(len(lines) for lines in second.values()) == sorted([24, resubmitted])
    assert metrics["records_ok"] == 24 and [j["status"] for j in metrics["jobs"]][-1] == "Completed"
    assert all(r["prediction"] == r["references"][0] for n in (0, 2) for r in read_predictions(out / arm(n).filename))


def test_a_completed_job_without_outputs_fails_instead_of_paying_for_everything_on_demand(
        jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    bedrock_fake.configure(min_records=10, write_outputs=False)
    with pytest.raises(JobError, match="no output lines were found"):
        infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    assert bedrock_fake.runtime_calls == 0


def test_killed_after_submission_a_rerun_polls_the_same_job_and_submits_nothing(jsquad_data, s3_bucket,
                                                                                bedrock_fake, tmp_path, monkeypatch):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)

    def killed(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(ib_context, "sleep", killed)
    with pytest.raises(KeyboardInterrupt):
        infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"] if "/jobs/" in o["Key"])
    events = [json.loads(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read()) for k in keys]
    assert [e["event"] for e in events][:2] == ["intent", "submitted"]  # the intent is durable before the call
    assert events[1]["job_arn"].startswith("arn:aws:bedrock:") and events[-1]["status"] == "Validating"

    monkeypatch.setattr(ib_context, "sleep", lambda s: None)
    metrics = infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    assert bedrock_fake.submissions == 1 and len(bedrock_fake.create_requests) == 1
    assert metrics["records_ok"] == 24

    # A third run finds the finished job in the state and pays for nothing.
    gets = bedrock_fake.get_calls
    infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    assert bedrock_fake.submissions == 1 and bedrock_fake.get_calls == gets


def test_killed_between_create_and_state_write_the_client_token_makes_the_resubmission_idempotent(
        jsquad_data, s3_bucket, bedrock_fake, tmp_path, monkeypatch):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    real = State.job_submitted

    def killed(self, key, job_arn):
        raise KeyboardInterrupt

    monkeypatch.setattr(State, "job_submitted", killed)
    with pytest.raises(KeyboardInterrupt):
        infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    monkeypatch.setattr(State, "job_submitted", real)
    metrics = infer_bedrock(make_settings(s3_bucket), jsquad_data, tmp_path / "out")
    assert len(bedrock_fake.create_requests) == 2 and bedrock_fake.submissions == 1
    assert bedrock_fake.create_requests[0]["clientRequestToken"] == bedrock_fake.create_requests[1]["clientRequestToken"]
    assert bedrock_fake.create_requests[0]["jobName"] == bedrock_fake.create_requests[1]["jobName"]
    assert metrics["records_ok"] == 24


def test_auto_mode_uses_batch_only_for_arms_with_enough_records(jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    metrics = infer_bedrock(make_settings(s3_bucket, mode="auto", batch_min_records=12), jsquad_data, tmp_path / "a")
    assert [a["mode"] for a in metrics["arms"]] == ["batch", "batch"] and bedrock_fake.runtime_calls == 0
    metrics = infer_bedrock(make_settings(s3_bucket, mode="auto", batch_min_records=13), jsquad_data, tmp_path / "b")
    assert [a["mode"] for a in metrics["arms"]] == ["on-demand", "on-demand"] and bedrock_fake.runtime_calls == 24


def test_batch_needs_a_role_and_an_s3_prefix_and_enough_records(jsquad_data, bedrock_fake, s3_bucket, tmp_path):
    with pytest.raises(JobError, match="--role-arn"):
        infer_bedrock(make_settings(s3_bucket, role_arn=None), jsquad_data, tmp_path / "out")
    with pytest.raises(JobError, match="--s3-prefix"):
        infer_bedrock(make_settings(None), jsquad_data, tmp_path / "out")
    with pytest.raises(JobError, match="minimum of 100"):
        infer_bedrock(make_settings(s3_bucket, batch_min_records=100), jsquad_data, tmp_path / "out")
    assert bedrock_fake.submissions == 0


def _job_in_the_fake(s3_bucket: str, bedrock_fake, records: int, name: str, **create) -> tuple[str, list[str]]:
    """A batch job of ``records`` small Claude requests created in the fake through boto3: (its ARN, the lines)."""
    lines = [json.dumps({"recordId": f"R{i:010d}", "modelInput": {"anthropic_version": "bedrock-2023-05-31",
             "max_tokens": 8, "messages": [{"role": "user", "content": "質問：テスト"}]}}) for i in range(records)]
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"in/{name}.jsonl", Body="\n".join(lines).encode())
    bedrock_fake.configure(min_records=1, progress=("Submitted", "InProgress", "InProgress", "InProgress"))
    arn = boto3.client("bedrock").create_model_invocation_job(
        jobName=name, roleArn=ROLE, modelId="anthropic.claude-3-haiku-20240307-v1:0",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{s3_bucket}/in/{name}.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{s3_bucket}/out/"}}, **create)["jobArn"]
    return arn, lines


def test_the_fake_speaks_the_bedrock_control_plane_through_boto3(s3_bucket, bedrock_fake):
    arn, lines = _job_in_the_fake(s3_bucket, bedrock_fake, 3, "j1")
    bedrock = boto3.client("bedrock")
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] == "InProgress"
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert [bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] for _ in range(2)] == ["Stopping", "Stopped"]
    (summary,) = bedrock.list_model_invocation_jobs(statusEquals="Stopped")["invocationJobSummaries"]
    assert summary["jobArn"] == arn and summary["submitTime"].year >= 2024
    with pytest.raises(bedrock.exceptions.ConflictException):
        bedrock.stop_model_invocation_job(jobIdentifier=arn)
    reply = boto3.client("bedrock-runtime").invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                                         body=json.dumps(json.loads(lines[0])["modelInput"]))
    assert json.loads(reply["body"].read())["content"][0]["text"] == "テスト"


def test_the_fakes_job_reports_its_timeout_and_counts_that_grow_while_it_runs(s3_bucket, bedrock_fake):
    arn, _ = _job_in_the_fake(s3_bucket, bedrock_fake, 8, "j2", timeoutDurationInHours=72)
    replies = [boto3.client("bedrock").get_model_invocation_job(jobIdentifier=arn) for _ in range(4)]
    assert {r["timeoutDurationInHours"] for r in replies} == {72}
    counts = [r.get("processedRecordCount", 0) for r in replies]
    assert counts == sorted(counts) and 0 < counts[1] < 8 and replies[-1]["status"] == "Completed" and counts[-1] == 8


# --- on-demand ------------------------------------------------------------------------------------
def test_on_demand_recovers_from_429_throttling_with_adaptive_retries(jsquad_data, bedrock_fake, tmp_path, monkeypatch):
    fast_botocore_retries(monkeypatch)
    bedrock_fake.configure(answer=reference_answers(jsquad_data), throttle_first=3)
    out = tmp_path / "out"
    metrics = infer_bedrock(make_settings(mode="on-demand", shots=[2]), jsquad_data, out)
    assert bedrock_fake.throttled == 3 and bedrock_fake.runtime_calls == 12 + 3
    records = read_predictions(out / arm(2).filename)
    assert all(r["error"] is None and r["prediction"] == r["references"][0] for r in records)
    assert all(r["latency_s"] >= 0 for r in records)
    assert metrics["arms"][0]["mode"] == "on-demand" and metrics["records_ok"] == 12
    api = manifests.get_api_model(API)
    assert metrics["usd"] == pytest.approx(usd(metrics["input_tokens"], metrics["output_tokens"], api, batch=False), abs=1e-6)
    op, _model_id, body = bedrock_fake.runtime_requests[-1]
    assert op == "converse" and body["inferenceConfig"] == {"maxTokens": 32, "temperature": 0}
    assert len(body["messages"]) == 5 and body["system"][0]["text"] == load_task_from_data(jsquad_data)["prompt"]["instruction"]


def test_throttling_beyond_the_retry_budget_is_recorded_as_errors(jsquad_data, bedrock_fake, tmp_path, monkeypatch):
    fast_botocore_retries(monkeypatch)
    bedrock_fake.configure(throttle_first=10_000)
    metrics = infer_bedrock(make_settings(mode="on-demand", shots=[0], max_retries=2, concurrency=4),
                            jsquad_data, tmp_path / "out")
    assert bedrock_fake.runtime_calls == 12 * 3  # max_retries=2: three attempts each, then an error
    assert metrics["records_error"] == 12
    assert all("ThrottlingException" in r["error"] for r in read_predictions(tmp_path / "out" / arm(0).filename))


def test_outputs_cut_at_max_tokens_are_kept_and_counted(jsquad_data, bedrock_fake, tmp_path):
    bedrock_fake.configure(answer=lambda system, messages: "あ" * 100)
    metrics = infer_bedrock(make_settings(mode="on-demand", shots=[0]), jsquad_data, tmp_path / "out")
    assert metrics["truncated_outputs"] == 12 and metrics["records_error"] == 0
    assert all(r["prediction"] == "あ" * 32 for r in read_predictions(tmp_path / "out" / arm(0).filename))


def test_identical_requests_in_different_arms_are_paid_once(jsquad_data, bedrock_fake, tmp_path):
    # N=0 prompts do not depend on the seed: both seeds' arms share one set of requests.
    bedrock_fake.configure(answer=reference_answers(jsquad_data))
    metrics = infer_bedrock(make_settings(mode="on-demand", shots=[0], seeds=[0, 1]), jsquad_data, tmp_path / "out")
    assert bedrock_fake.runtime_calls == 12
    assert (tmp_path / "out" / arm(0, 1).filename).exists() and (tmp_path / "out" / arm(0, 0).filename).exists()
    assert metrics["usd"] == pytest.approx(metrics["arms"][0]["usd"], abs=1e-6)
    assert metrics["arms"][0]["usd"] == pytest.approx(metrics["arms"][1]["usd"])


def test_on_demand_answers_are_cached_in_the_state_folder_so_a_rerun_pays_nothing(jsquad_data, bedrock_fake, tmp_path):
    bedrock_fake.configure(answer=reference_answers(jsquad_data))
    state = str(tmp_path / "state")
    first = infer_bedrock(make_settings(mode="on-demand", shots=[2], state=state), jsquad_data, tmp_path / "a")
    second = infer_bedrock(make_settings(mode="on-demand", shots=[2], state=state), jsquad_data, tmp_path / "b")
    assert bedrock_fake.runtime_calls == 12
    assert (tmp_path / "a" / arm(2).filename).read_text() == (tmp_path / "b" / arm(2).filename).read_text()
    assert second["usd"] == first["usd"]


def test_xlsum_variants_send_shots_as_turns_or_in_the_system_text(xlsum_data, bedrock_fake, tmp_path):
    out = tmp_path / "out"
    infer_bedrock(make_settings(mode="on-demand", shots=[2], variants=["full", "summary-only"]), xlsum_data, out)
    assert (out / arm(2, variant="full").filename).exists() and (out / arm(2, variant="summary-only").filename).exists()
    bodies = [body for _, _, body in bedrock_fake.runtime_requests]
    full = [b for b in bodies if len(b["messages"]) == 5]
    summary_only = [b for b in bodies if len(b["messages"]) == 1]
    assert len(full) == 12 and len(summary_only) == 12
    assert all("要約の例：" in b["system"][0]["text"] for b in summary_only)
    assert all(b["inferenceConfig"]["maxTokens"] == 128 for b in bodies)


def test_unknown_variant_is_refused_before_any_call(jsquad_data, tmp_path):
    with pytest.raises(JobError, match="no prompt variant 'full'"):
        infer_bedrock(make_settings(mode="on-demand", variants=["full"]), jsquad_data, tmp_path / "out")


# --- context guard, estimates, budget -----------------------------------------------------------
def test_context_guard_skips_arms_whose_shots_do_not_fit_and_never_truncates(jsquad_data, bedrock_fake, tmp_path):
    api = manifests.get_api_model(API)
    _, plans, max_tokens = plan_arms(make_settings(shots=[0, 2, 8]), jsquad_data, api)
    window = max(r.est_input_tokens for r in plans[1].requests) + max_tokens  # n=2 just fits, n=8 does not
    entry = {k: v for k, v in api.items() if k != "name"}
    entry["context_window"] = window
    models_file = tmp_path / "api_models.yaml"
    models_file.write_text(yaml.safe_dump({"api_models": {API: entry}}), encoding="utf-8")

    out = tmp_path / "out"
    metrics = infer_bedrock(make_settings(mode="on-demand", shots=[0, 2, 8], api_models_file=str(models_file)),
                            jsquad_data, out)
    skipped = {a["arm"]["n"]: a["skipped"] for a in metrics["arms"]}
    assert skipped[0] is None and skipped[2] is None
    assert "context guard" in skipped[8] and str(window) in skipped[8]
    assert not (out / arm(8).filename).exists() and (out / arm(2).filename).exists()
    assert bedrock_fake.runtime_calls == 24


def test_token_estimate_counts_japanese_characters_and_stays_high_for_ascii():
    assert estimate_tokens("東京は日本の首都です。") == 11
    assert estimate_tokens("abcdef") == 2
    assert estimate_tokens("") == 0


def test_dry_run_prints_the_estimate_per_arm_and_calls_no_aws(jsquad_data, tmp_path, monkeypatch):
    def no_aws(*args, **kwargs):
        raise AssertionError("dry run must not create AWS clients")

    monkeypatch.setattr(boto3, "client", no_aws)
    monkeypatch.setattr(boto3, "Session", no_aws)
    out = tmp_path / "out"
    result = CliRunner().invoke(ib.command, ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--mode", "batch",
                                             "--role-arn", ROLE, "--s3-prefix", "s3://bucket/p",
                                             "--dry-run", "--data", str(jsquad_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    api = manifests.get_api_model(API)
    _, plans, _ = plan_arms(make_settings("bucket"), jsquad_data, api)
    for plan in plans:
        line = next(line for line in result.output.splitlines() if plan.arm.label in line)
        fields = line.split()
        assert fields[-5:] == ["batch", "12", str(plan.est_input_tokens), str(plan.est_output_tokens), f"{plan.est_usd:.4f}"]
        assert plan.est_output_tokens == 12 * 32
        assert plan.est_usd == pytest.approx(usd(plan.est_input_tokens, plan.est_output_tokens, api, batch=True))
    assert plans[1].est_input_tokens > plans[0].est_input_tokens  # shots cost input tokens
    assert not out.exists()


def test_max_usd_refuses_to_start_when_the_estimate_is_above_it(jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    result = CliRunner().invoke(ib.command, ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--mode", "on-demand",
                                             "--max-usd", "0.0001", "--data", str(jsquad_data),
                                             "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "above --max-usd" in result.output
    assert bedrock_fake.runtime_calls == 0 and bedrock_fake.submissions == 0
    assert not (tmp_path / "out").exists()


# --- batch splitting ----------------------------------------------------------------------------
def test_more_than_50000_records_are_split_into_even_jobs_each_above_the_minimum():
    assert split_batches([10] * 50_000) == [(0, 50_000)]
    parts = split_batches([10] * 50_001)
    assert parts == [(0, 25_000), (25_000, 50_001)]
    parts = split_batches([10] * 120_000)
    assert len(parts) == 3 and all(b - a <= BATCH_MAX_RECORDS and b - a >= 100 for a, b in parts)
    assert parts[0][0] == 0 and parts[-1][1] == 120_000 and all(parts[i][1] == parts[i + 1][0] for i in range(2))


def test_batches_are_also_split_to_keep_each_input_file_under_the_byte_limit():
    sizes = [400, 400, 400, 100, 100, 100]
    parts = split_batches(sizes, max_records=100, max_bytes=900)
    assert all(sum(sizes[a:b]) <= 900 for a, b in parts) and parts[-1][1] == len(sizes)
    with pytest.raises(JobError, match="byte"):
        split_batches([1000], max_bytes=900)


def test_job_names_fit_bedrocks_pattern_even_for_long_names():
    name = job_name("a-very-long-user-task-name" * 3, "claude-sonnet-4.5_custom/profile" * 3, "f" * 64, 12)
    assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\-.]){0,63}", name)
    assert name.endswith("-ffffffffff-12")


def test_the_iam_example_passes_the_role_only_to_bedrock_and_scopes_s3_to_the_prefix():
    policy = json.loads((manifests.manifest_dir() / "iam" / "infer-bedrock-policy.json").read_text())
    statements = policy["Statement"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not any(a.endswith("*") for a in actions) and "s3:DeleteObject" not in actions
    (pass_role,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "bedrock.amazonaws.com"
    for statement in statements:
        if any(str(a).startswith("s3:") for a in ([statement["Action"]] if isinstance(statement["Action"], str)
                                                   else statement["Action"])):
            scoped = statement["Resource"] == "arn:aws:s3:::BUCKET/PREFIX/*" or \
                statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix") == ["PREFIX/*"]
            assert scoped, statement["Sid"]
    assert {"bedrock:CreateModelInvocationJob", "bedrock:GetModelInvocationJob", "bedrock:InvokeModel"} <= actions


# --- credentials and the CLI --------------------------------------------------------------------
def _no_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_without_credentials_every_arm_is_recorded_as_skipped_and_the_job_succeeds(jsquad_data, tmp_path, monkeypatch):
    _no_credentials(monkeypatch, tmp_path)
    out = tmp_path / "out"
    args = ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--data", str(jsquad_data), "--out", str(out)]
    result = CliRunner().invoke(ib.command, [*args, "--skip-without-credentials"])
    assert result.exit_code == 0, result.output
    metrics = metrics_of(out)
    assert [a["skipped"] for a in metrics["arms"]] == ["no AWS credentials"] * 2
    assert metrics["usd"] == 0 and not list(out.glob("*.jsonl"))

    result = CliRunner().invoke(ib.command, args)
    assert result.exit_code == 1 and "no AWS credentials" in result.output


def test_cli_runs_in_the_ml_layout(jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    root = tmp_path / "ml"
    shutil.copytree(jsquad_data, root / "processing" / "input" / "data")
    result = CliRunner().invoke(ib.command, ["--ml-root", str(root), "--api-model", API, "--shots", "2",
                                             "--seeds", "0,1", "--role-arn", ROLE, "--s3-prefix", f"s3://{s3_bucket}/b",
                                             "--batch-min-records", "10", "--poll-seconds", "0.001"])
    assert result.exit_code == 0, result.output
    out = root / "processing" / "output"
    assert sorted(p.name for p in out.iterdir()) == sorted([arm(2, 0).filename, arm(2, 1).filename, "bedrock_metrics.json"])
    assert metrics_of(out)["jobs"][0]["status"] == "Completed"
    assert bedrock_fake.submissions == 1  # both arms (24 records) in one job
    assert "prompt" not in result.output.lower() and "文章" not in result.output  # no prompt text in logs


def test_help_explains_inputs_outputs_and_settings():
    result = CliRunner().invoke(ib.command, ["--help"])
    assert result.exit_code == 0
    for word in ("Inputs", "Outputs", "--api-model", "--max-usd", "--dry-run", "--role-arn", "--s3-prefix", "--state"):
        assert word in result.output
