"""The job contract: SageMaker's layout under a movable root; typed settings; failure file."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from switchpoint.core.contract import (
    JobError,
    job_paths,
    read_hyperparameters,
    run_job,
    settings_from,
    typed_settings,
    write_hyperparameters,
)


@dataclass
class Example:
    model: str
    sizes: list[int]
    learning_rate: float = 2e-4
    load_in_4bit: bool = False
    eval_size: int | None = None


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
    settings = settings_from(Example, paths, {"learning_rate": "0.01", "eval_size": None})
    assert settings == Example(model="tiny-llama", sizes=[2, 4], learning_rate=0.01, load_in_4bit=True)


def test_bad_hyperparameters_name_the_key():
    with pytest.raises(JobError, match="unknown setting 'modle'"):
        typed_settings(Example, {"modle": "x", "sizes": "2"}, source="hp")
    with pytest.raises(JobError, match="setting 'sizes'='2,four' is not a valid"):
        typed_settings(Example, {"model": "x", "sizes": "2,four"}, source="hp")
    with pytest.raises(JobError, match="missing required setting\\(s\\) sizes"):
        typed_settings(Example, {"model": "x"}, source="hp")
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
