"""Kill infer-bedrock (SIGKILL, a real process) while it pays for answers; the re-run pays nothing twice.

The kill point is reached deterministically, with no sleeps: the Bedrock fake answers K runtime calls,
then holds every further call and sets ``holding`` once as many calls are held as the job has workers.
At that moment every worker has sent its next request, which it does only after its last answer is
durable, so every answer the fake gave must be in the state. The test then SIGKILLs the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bedrock_fake import message_text
from switchpoint.core.datafolder import load_task_from_data, read_eval_set
from switchpoint.core.predictions import read_predictions
from switchpoint.core.prompts import render_input
from switchpoint.infer_bedrock.job import Settings, infer_bedrock
from switchpoint.infer_bedrock.state import open_state

ROLE = "arn:aws:iam::123456789012:role/switchpoint-bedrock-batch"
API = "claude-haiku-4.5"
VOLATILE = ("wall_s",)
HOLD_TIMEOUT_S = 120  # a deadline for a hang, not a wait: the event is set as soon as the calls are held


def reference_answers(data_dir):
    task = load_task_from_data(data_dir)
    table = {render_input(task, ex): ex["references"][0] for ex in read_eval_set(data_dir)}
    return lambda system, messages: table[message_text(messages[-1]["content"])]


def cli_args(data, out, **values) -> list[str]:
    args = [sys.executable, "-m", "switchpoint", "infer-bedrock", "--data", str(data), "--out", str(out)]
    for key, value in values.items():
        args += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


def run_until_held_then_kill(fake, args, tmp_path) -> None:
    """Start the job, wait until the fake holds its calls, SIGKILL it."""
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        held = fake.holding.wait(HOLD_TIMEOUT_S)
        assert held, f"the job never reached the hold point (exit {proc.poll()}): {(tmp_path / 'killed.log').read_text()}"
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -9


def comparable(metrics: dict, drop_job_ids: bool = False) -> dict:
    out = {k: v for k, v in metrics.items() if k not in VOLATILE}
    if drop_job_ids:
        out["jobs"] = [{k: v for k, v in j.items() if k not in ("job_arn", "job_name")} for j in out["jobs"]]
    return out


def predictions(out, metrics) -> dict:
    return {a["file"]: [(r["id"], r["prediction"], r["error"], r["input_tokens"], r["output_tokens"])
                        for r in read_predictions(out / a["file"])] for a in metrics["arms"] if a["file"]}


def test_on_demand_killed_mid_run_pays_nothing_twice_and_reports_the_same_metrics(jsquad_data, bedrock_fake,
                                                                                   tmp_path):
    workers, answered_before_kill = 3, 10
    bedrock_fake.configure(answer=reference_answers(jsquad_data), hold_after=answered_before_kill,
                           hold_count=workers)
    state = str(tmp_path / "state")
    values = {"api_model": API, "shots": [0, 2], "seeds": [0], "mode": "on-demand", "state": state, "concurrency": workers}
    run_until_held_then_kill(bedrock_fake, cli_args(jsquad_data, tmp_path / "killed", **values), tmp_path)

    # Every answer the fake gave before the kill is in the state: nothing paid is lost.
    saved = open_state(str(state), "jsquad__" + API).answers
    assert sum(bedrock_fake.answered.values()) == answered_before_kill == len(saved)
    assert not (tmp_path / "killed" / "bedrock_metrics.json").exists()

    bedrock_fake.configure(answer=reference_answers(jsquad_data))
    out = tmp_path / "rerun"
    rerun = infer_bedrock(Settings(**values), jsquad_data, out)
    assert bedrock_fake.paid_twice() == [] and sum(bedrock_fake.answered.values()) == 24

    baseline_out = tmp_path / "baseline"
    baseline = infer_bedrock(Settings(**{**values, "state": str(tmp_path / "state2")}), jsquad_data, baseline_out)
    assert comparable(rerun) == comparable(baseline)
    assert predictions(out, rerun) == predictions(baseline_out, baseline)
    assert rerun["records_ok"] == 24 and rerun["usd"] > 0


def test_batch_error_retries_killed_mid_run_are_not_asked_twice_and_records_retried_survives(
        jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    failing = {"R0000000001", "R0000000003", "R0000000005", "R0010000002", "R0010000004", "R0010000006"}
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10, hold_after=3, hold_count=1,
                           record_error=lambda rid, body: (500, "Internal model error") if rid in failing else None)
    values = {"api_model": API, "shots": [0, 2], "seeds": [0], "mode": "batch", "role_arn": ROLE,
                  "s3_prefix": f"s3://{s3_bucket}/killed", "batch_min_records": 10, "poll_seconds": 0.001, "concurrency": 1}
    run_until_held_then_kill(bedrock_fake, cli_args(jsquad_data, tmp_path / "killed", **values), tmp_path)
    assert bedrock_fake.submissions == 1 and sum(bedrock_fake.answered.values()) == 3
    saved = open_state(values["s3_prefix"], "jsquad__" + API).answers
    assert len(saved) == 3 and all(a.retried for a in saved.values())  # marked before they were saved

    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10,
                           record_error=lambda rid, body: (500, "Internal model error") if rid in failing else None)
    out = tmp_path / "rerun"
    rerun = infer_bedrock(Settings(**values), jsquad_data, out)
    assert bedrock_fake.submissions == 1  # the re-run polled the recorded job, submitted nothing
    assert bedrock_fake.paid_twice() == [] and sum(bedrock_fake.answered.values()) == 6
    assert (rerun["records_retried"], rerun["records_ok"], rerun["records_error"]) == (6, 24, 0)

    baseline_out = tmp_path / "baseline"
    baseline = infer_bedrock(Settings(**{**values, "s3_prefix": f"s3://{s3_bucket}/baseline"}), jsquad_data,
                             baseline_out)
    assert bedrock_fake.submissions == 2
    assert comparable(rerun, drop_job_ids=True) == comparable(baseline, drop_job_ids=True)
    assert predictions(out, rerun) == predictions(baseline_out, baseline)


def test_a_kill_between_intent_and_create_leads_the_rerun_to_the_same_job(jsquad_data, s3_bucket, bedrock_fake,
                                                                          tmp_path, monkeypatch):
    from switchpoint.infer_bedrock import batch

    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    values = {"api_model": API, "shots": [0, 2], "seeds": [0], "mode": "batch", "role_arn": ROLE,
                  "s3_prefix": f"s3://{s3_bucket}/b", "batch_min_records": 10, "poll_seconds": 0.001}

    def killed(ctx, job):
        raise KeyboardInterrupt

    real = batch.create_job
    monkeypatch.setattr(batch, "create_job", killed)
    with pytest.raises(KeyboardInterrupt):
        infer_bedrock(Settings(**values), jsquad_data, tmp_path / "out")
    assert bedrock_fake.submissions == 0
    (job,) = open_state(values["s3_prefix"], "jsquad__" + API).jobs.values()
    assert job["job_arn"] is None and job["records"] == 24

    monkeypatch.setattr(batch, "create_job", real)
    metrics = infer_bedrock(Settings(**values), jsquad_data, tmp_path / "out")
    assert bedrock_fake.submissions == 1 and bedrock_fake.create_requests[0]["jobName"] == job["job_name"]
    assert metrics["records_ok"] == 24 and len(metrics["jobs"]) == 1
    assert json.loads((tmp_path / "out" / "bedrock_metrics.json").read_text())["usd"] == metrics["usd"]


def test_a_create_refused_by_the_job_quota_fails_in_one_line_and_the_rerun_submits_the_recorded_job_once(
        jsquad_data, s3_bucket, bedrock_fake, tmp_path):
    from click.testing import CliRunner
    from switchpoint.infer_bedrock.job import command

    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10, max_live_jobs=0)
    args = ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--mode", "batch", "--role-arn", ROLE,
            "--s3-prefix", f"s3://{s3_bucket}/q", "--batch-min-records", "10", "--poll-seconds", "0.001",
            "--data", str(jsquad_data), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "ServiceQuotaExceededException" in line and "submitting batch job" in line
    assert bedrock_fake.submissions == 0

    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert bedrock_fake.submissions == 1 and len({r["clientRequestToken"] for r in bedrock_fake.create_requests}) == 1
    assert json.loads((tmp_path / "out" / "bedrock_metrics.json").read_text())["records_ok"] == 24


def test_a_rerun_after_a_finished_run_pays_nothing_and_reports_the_same_metrics(jsquad_data, s3_bucket,
                                                                                bedrock_fake, tmp_path):
    failing = {"R0000000002", "R0010000003"}
    bedrock_fake.configure(answer=reference_answers(jsquad_data), min_records=10,
                           record_error=lambda rid, body: (500, "Internal model error") if rid in failing else None)
    values = {"api_model": API, "shots": [0, 2], "seeds": [0], "mode": "auto", "role_arn": ROLE, "s3_prefix": f"s3://{s3_bucket}/r",
                  "batch_min_records": 12, "poll_seconds": 0.001}
    first = infer_bedrock(Settings(**values), jsquad_data, tmp_path / "a")
    calls, gets = sum(bedrock_fake.answered.values()), bedrock_fake.get_calls
    second = infer_bedrock(Settings(**values), jsquad_data, tmp_path / "b")
    assert sum(bedrock_fake.answered.values()) == calls and bedrock_fake.get_calls == gets
    assert bedrock_fake.submissions == 1
    assert comparable(first) == comparable(second) and first["records_retried"] == 2
    assert predictions(tmp_path / "a", first) == predictions(tmp_path / "b", second)
