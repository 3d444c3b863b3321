"""Bad inputs to infer-bedrock: one line `error: ...` naming the option or file, exit 1, no outputs, no AWS call."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from switchpoint.core import manifests
from switchpoint.core.datafolder import MODELS_FILE
from switchpoint.infer_bedrock import job as ib

API = "claude-haiku-4.5"


def _data(tmp_path, jsquad_data):
    data = tmp_path / "data"
    shutil.copytree(jsquad_data, data)
    return data


def _write(relpath: str, text: str):
    def edit(tmp_path, data):
        (data / relpath).write_text(text, encoding="utf-8")
    return edit


def _remove(relpath: str):
    def edit(tmp_path, data):
        (data / relpath).unlink()
    return edit


def _models_file(mutate):
    def edit(tmp_path, data):
        entry = {k: v for k, v in manifests.get_api_model(API).items() if k != "name"}
        mutate(entry)
        (tmp_path / "api.yaml").write_text(json.dumps({"api_models": {API: entry}}), encoding="utf-8")
    return edit


def _hyperparameters(values):
    def edit(tmp_path, data):
        path = tmp_path / "ml" / "input" / "config" / "hyperparameters.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    return edit


def _nothing(tmp_path, data):
    pass


# (case id, extra args, data edit, words the error line must contain)
CASES = [
    ("negative max-usd", ["--max-usd", "-5"], _nothing, ["--max-usd", ">= 0"]),
    ("non-numeric max-usd", ["--max-usd", "abc"], _nothing, ["--max-usd", "'abc'", "a number"]),
    ("zero concurrency", ["--concurrency", "0"], _nothing, ["--concurrency", ">= 1"]),
    ("unknown mode", ["--mode", "fast"], _nothing, ["--mode", "auto", "on-demand"]),
    ("negative shots", ["--shots", "-1"], _nothing, ["--shots", ">= 0"]),
    ("repeated shots", ["--shots", "2,2"], _nothing, ["--shots", "distinct"]),
    ("repeated variants", ["--variants", "none,none"], _nothing, ["--variants", "distinct"]),
    ("non-integer seeds", ["--seeds", "a"], _nothing, ["--seeds", "integers"]),
    ("shots not prepared", ["--shots", "3"], _nothing, ["--shots 3", "not prepared", "re-run the data step"]),
    ("seed not prepared", ["--seeds", "7"], _nothing, ["--seeds 7", "not prepared"]),
    ("zero poll seconds", ["--poll-seconds", "0"], _nothing, ["--poll-seconds", "> 0"]),
    ("timeout above Bedrock's 168 h", ["--job-timeout-hours", "200"], _nothing, ["--job-timeout-hours", "<= 168"]),
    ("zero batch minimum", ["--batch-min-records", "0"], _nothing, ["--batch-min-records", ">= 1"]),
    ("role that is not a role ARN", ["--role-arn", "my-role"], _nothing, ["--role-arn", "'my-role'"]),
    ("s3 prefix that is not s3", ["--s3-prefix", "http://bucket/x"], _nothing, ["--s3-prefix", "http://bucket/x"]),
    ("malformed region", ["--region", "US East"], _nothing, ["--region", "'US East'"]),
    ("unknown api model", ["--api-model", "gpt-9"], _nothing, ["unknown API model 'gpt-9'", API]),
    ("retired api model", ["--api-model", "claude-instant-1.2"], _nothing, ["retired", "claude-haiku-4.5"]),
    ("forced batch without a role", ["--mode", "batch"], _nothing, ["--mode batch needs --role-arn"]),
    ("unknown variant", ["--variants", "full"], _nothing, ["no prompt variant 'full'"]),
    ("missing data folder", ["--data", "/nonexistent/data"], _nothing, ["--data /nonexistent/data", "no such folder"]),
    ("data folder without eval.jsonl", [], _remove("eval.jsonl"), ["eval.jsonl: missing"]),
    ("task.json not JSON", [], _write("task.json", "{not json"), ["task.json: not readable as JSON"]),
    ("task.json without a generation budget", [], _write("task.json", '{"name": "jsquad", "generation": []}'),
     ["task.json", "generation.max_new_tokens"]),
    ("data.json without sizes", [], _write("data.json", '{"seeds": [0]}'), ["data.json: at sizes"]),
    ("eval.jsonl with a broken line", [], _write("eval.jsonl", '{"id": "a", "references": ["x"]}\n{oops\n'),
     ["eval.jsonl:2: not valid JSON"]),
    ("eval example without an id", [], _write("eval.jsonl", '{"references": ["x"]}\n'), ["eval.jsonl", "no 'id'"]),
    ("shot file with a broken line", [], _write("train/seed=0/n=2.jsonl", "{oops\n"), ["n=2.jsonl:1: not valid JSON"]),
    ("corrupt models.json in the data folder", [], _write(MODELS_FILE, "[1,"), [MODELS_FILE, "not valid JSON"]),
    ("models.json entry missing batch", [], lambda tmp_path, data: (data / MODELS_FILE).write_text(json.dumps(
        {"models": {}, "api_models": {API: {"bedrock_model_id": "x", "context_window": 10}}}), encoding="utf-8"),
     [MODELS_FILE, "is required but missing"]),
    ("missing api models file", ["--api-models-file", "/nonexistent/api.yaml"], _nothing,
     ["--api-models-file /nonexistent/api.yaml", "no such file"]),
    ("api models file with an unknown status", ["--api-models-file", "{tmp}/api.yaml"],
     _models_file(lambda e: e["availability"].update(status="gone")), ["api.yaml", "availability.status"]),
    ("api models file with batch but no discount", ["--api-models-file", "{tmp}/api.yaml"],
     _models_file(lambda e: e.update(batch_discount=0)), ["api.yaml", "batch_discount"]),
    ("unknown hyperparameter", ["--ml-root", "{tmp}/ml"], _hyperparameters({"concurency": "4"}),
     ["hyperparameters.json", "unknown setting 'concurency'"]),
    ("bad hyperparameter value", ["--ml-root", "{tmp}/ml"], _hyperparameters({"max_usd": "lots"}),
     ["hyperparameters.json", "'max_usd'", "a number"]),
]


@pytest.mark.parametrize("extra, edit, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_naming_it_with_exit_1_and_no_outputs(extra, edit, words, jsquad_data, bedrock_fake,
                                                                     tmp_path):
    data = _data(tmp_path, jsquad_data)
    edit(tmp_path, data)
    out = tmp_path / "out"
    args = ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--mode", "on-demand", "--state", str(tmp_path / "st"),
            "--data", str(data), "--out", str(out)]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    options = dict(zip(args[::2], args[1::2]))
    for key, value in zip(extra[::2], extra[1::2]):
        options[key] = value  # the case's value replaces the default one
    result = CliRunner().invoke(ib.command, [x for kv in options.items() for x in kv])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert not out.exists() or not any(out.iterdir())  # no predictions, no bedrock_metrics.json
    assert bedrock_fake.runtime_calls == 0 and bedrock_fake.submissions == 0


# --- inputs only the service can judge: the run stops at once, with one line ----------------------------
def _invoke(data, out, *extra):
    return CliRunner().invoke(ib.command, ["--api-model", API, "--shots", "0,2", "--seeds", "0", "--mode", "on-demand",
                                           "--concurrency", "2", "--data", str(data), "--out", str(out), *extra])


def test_a_refused_call_stops_the_run_instead_of_recording_every_record_as_an_error(jsquad_data, bedrock_fake,
                                                                                    tmp_path):
    bedrock_fake.configure(runtime_error=lambda system, messages: (403, "AccessDeniedException",
                                                                   "You don't have access to the model"))
    result = _invoke(jsquad_data, tmp_path / "out")
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "AccessDeniedException" in line and "IAM policy" in line
    assert bedrock_fake.runtime_calls <= 2 + 2  # the calls in flight, not all 24
    assert not (tmp_path / "out" / "bedrock_metrics.json").exists()


def test_a_model_id_the_service_rejects_for_every_request_is_one_error(jsquad_data, bedrock_fake, tmp_path):
    bedrock_fake.configure(runtime_error=lambda system, messages: (400, "ValidationException",
                                                                   "The provided model identifier is invalid."))
    result = _invoke(jsquad_data, tmp_path / "out", "--model-id", "anthropic.nope")
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "every one of 24 requests failed" in line and "model identifier is invalid" in line
    assert bedrock_fake.answered == {} and not (tmp_path / "out" / "bedrock_metrics.json").exists()


def test_an_output_path_that_is_a_file_is_refused_before_any_call(jsquad_data, bedrock_fake, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    result = _invoke(jsquad_data, out, "--state", str(tmp_path / "st"))
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert f"--out {out}: exists and is not a folder" in line
    assert bedrock_fake.runtime_calls == 0


def test_without_data_the_error_says_to_give_data_not_only_the_default_path(tmp_path, bedrock_fake):
    result = CliRunner().invoke(ib.command, ["--api-model", API, "--ml-root", str(tmp_path / "ml")])
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "no --data given" in line and "give --data" in line
