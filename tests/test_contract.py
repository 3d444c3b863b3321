"""The job contract: SageMaker's layout under a movable root; settings from hyperparameters; failure file."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Annotated

import pytest
from pydantic import Field
from switchpoint.core.contract import (
    JobError,
    job_paths,
    read_hyperparameters,
    run_job,
    write_hyperparameters,
)
from switchpoint.core.settings import COMMAND_LINE, JobSettings, load_settings


class Seeds(JobSettings):
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], description="seeds")


class Example(JobSettings):
    model: str = Field(description="model")
    sizes: list[int] = Field(description="sizes")
    learning_rate: float = Field(2e-4, gt=0, description="lr")
    load_in_4bit: bool = Field(False, description="4-bit")
    eval_size: int | None = Field(None, ge=1, description="eval cap")


def test_layout_follows_sagemaker_under_a_moved_root(tmp_path):
    paths = job_paths(tmp_path)
    assert paths.hyperparameters == tmp_path / "input/config/hyperparameters.json"
    assert paths.channel("data") == tmp_path / "input/data/data"
    assert paths.checkpoints == tmp_path / "checkpoints"
    assert paths.model == tmp_path / "model"
    assert paths.failure == tmp_path / "output/failure"
    assert paths.processing_input("predictions") == tmp_path / "processing/input/predictions"
    assert paths.processing_output == tmp_path / "processing/output"


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SWITCHPOINT_ML_ROOT", str(tmp_path))
    assert job_paths().root == tmp_path.resolve()
    monkeypatch.delenv("SWITCHPOINT_ML_ROOT")
    assert str(job_paths().root) == "/opt/ml"


def test_hyperparameters_arrive_as_strings_and_are_typed(tmp_path):
    paths = job_paths(tmp_path)
    written = write_hyperparameters(paths, {"model": "tiny-llama", "sizes": [2, 4], "load_in_4bit": True})
    assert written == {"load_in_4bit": "true", "model": "tiny-llama", "sizes": "2,4"}
    assert all(isinstance(v, str) for v in json.loads(paths.hyperparameters.read_text()).values())
    settings = load_settings(Example, (str(paths.hyperparameters), read_hyperparameters(paths)),
                             (COMMAND_LINE, {"learning_rate": "0.01", "eval_size": None}))
    assert settings == Example(model="tiny-llama", sizes=[2, 4], learning_rate=0.01, load_in_4bit=True)


def test_bad_hyperparameters_name_the_key_and_the_source():
    with pytest.raises(JobError, match="hp: unknown setting 'modle'"):
        load_settings(Example, ("hp", {"modle": "x", "sizes": "2"}))
    with pytest.raises(JobError, match="hp: 'sizes'='2,four' is invalid.*expected comma-separated integers"):
        load_settings(Example, ("hp", {"model": "x", "sizes": "2,four"}))
    with pytest.raises(JobError, match="missing required setting 'sizes'"):
        load_settings(Example, ("hp", {"model": "x"}))
    with pytest.raises(JobError, match="--learning-rate='inf' is invalid: Input should be a finite number"):
        load_settings(Example, ("hp", {"model": "x", "sizes": "2"}), (COMMAND_LINE, {"learning_rate": "inf"}))
    with pytest.raises(JobError, match=r"--seeds='1,-1' is invalid.*expected comma-separated integers \(each >= 0\)"):
        load_settings(Seeds, (COMMAND_LINE, {"seeds": "1,-1"}))
    with pytest.raises(JobError, match="hp: 'eval_size'='-1' is invalid.*>= 1"):
        load_settings(Example, ("hp", {"model": "x", "sizes": "2", "eval_size": "-1"}))
    with pytest.raises(JobError, match="at most|256"):
        write_hyperparameters(job_paths("/tmp/never-written"), {"model": "x" * 300})


def test_a_hyperparameters_file_that_is_not_json(tmp_path):
    paths = job_paths(tmp_path)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text("{not json")
    with pytest.raises(JobError, match="hyperparameters.json: not readable as JSON"):
        read_hyperparameters(paths)


def test_failure_writes_one_line_reason_and_exits_nonzero(tmp_path, capsys):
    paths = job_paths(tmp_path)

    def body():
        raise JobError("data/eval.jsonl:3: field 'references' is empty")

    with pytest.raises(SystemExit) as exit_info:
        run_job(paths, body, name="score")
    assert exit_info.value.code == 1
    assert paths.failure.read_text() == "score: data/eval.jsonl:3: field 'references' is empty\n"
    assert "error: score: data/eval.jsonl:3" in capsys.readouterr().err


def test_cli_job_under_moved_root_writes_processing_output_or_failure(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "switchpoint.cli", "data", "--task", "xlsum", "--source", "bundled",
                         "--sizes", "0,2", "--eval-size", "3", "--ml-root", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "processing/output/train/seed=0/n=2.jsonl").exists()
    bad = subprocess.run([sys.executable, "-m", "switchpoint.cli", "data", "--task", "xlsum", "--source", "bundled",
                          "--sizes", "0,9999", "--ml-root", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "N=9999 is larger than the training pool" in (tmp_path / "output/failure").read_text()
