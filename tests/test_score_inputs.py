"""The score job's inputs: checked once where they enter, against the data folder when it is given."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core import stats
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import read_eval_set
from switchpoint.core.predictions import Arm, prediction_record, write_predictions
from switchpoint.score import job as score

FINETUNE = Arm("finetune", "tiny-gpt-neox", 8, 0)
LOCAL = Arm("fewshot-local", "tiny-gpt-neox", 2, 0)


def _arm(folder: Path, arm: Arm, examples: list[dict], **edit) -> Path:
    path = folder / arm.filename
    write_predictions(path, [prediction_record(arm, edit.get("id", {}).get(i, ex["id"]), ex["references"][0],
                                               edit.get("refs", {}).get(i, ex["references"]))
                             for i, ex in enumerate(examples)])
    return path


def _settings(task: str, folder: Path, out: Path) -> score.ScoreSettings:
    return score.ScoreSettings(task=task, predictions=[str(folder)], out=str(out), bootstrap=200)


def test_an_id_missing_from_the_data_folders_eval_set_names_file_line_and_id(tmp_path, jsquad_data):
    examples = read_eval_set(jsquad_data)
    path = _arm(tmp_path / "p", FINETUNE, examples, id={3: "made-up-id"})
    with pytest.raises(JobError, match=rf"^{path}:4: id 'made-up-id' is not in {jsquad_data / 'eval.jsonl'}"):
        score.score_predictions(_settings(str(jsquad_data), tmp_path / "p", tmp_path / "out"))
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_references_that_differ_from_the_data_folder_are_an_error(tmp_path, jsquad_data):
    examples = read_eval_set(jsquad_data)
    path = _arm(tmp_path / "p", FINETUNE, examples, refs={0: ["something else"]})
    with pytest.raises(JobError, match=rf"^{path}:1: id '{examples[0]['id']}': references \['something else'\] differ"):
        score.score_predictions(_settings(str(jsquad_data / "task.json"), tmp_path / "p", tmp_path / "out"))


def test_another_tasks_predictions_mixed_in_name_that_file(tmp_path, jsquad_data, xlsum_data):
    _arm(tmp_path / "p", FINETUNE, read_eval_set(jsquad_data))
    foreign = _arm(tmp_path / "p", LOCAL, read_eval_set(xlsum_data))
    with pytest.raises(JobError, match=rf"^{foreign}: none of its ids are in .*predictions of another task"):
        score.score_predictions(_settings(str(jsquad_data), tmp_path / "p", tmp_path / "out"))
    # without the data folder: one arm each, no telling which is genuine, so both files are named
    with pytest.raises(JobError, match=r"share no example id with each other.*different tasks"):
        score.score_predictions(_settings("jsquad", tmp_path / "p", tmp_path / "out"))
    # with more genuine arms, the arm that shares no id with the others is named, not a genuine one
    other = Arm("fewshot-local", "tiny-gpt-neox", 0, 0)
    _arm(tmp_path / "p", other, read_eval_set(jsquad_data))
    with pytest.raises(JobError, match=rf"^{foreign}: arm 'fewshot-local tiny-gpt-neox n=2 seed=0' shares no example id"):
        score.score_predictions(_settings("jsquad", tmp_path / "p", tmp_path / "out"))


@pytest.mark.parametrize("field, value, expected", [
    ("arm", {"kind": "finetune", "model": "m", "n": -1, "seed": 0, "variant": None}, "field arm.n: -1 is less than"),
    ("prediction", 3, "field prediction: 3 is not of type 'string'"),
    ("extra", 1, "Additional properties are not allowed ('extra' was unexpected)"),
])
def test_a_record_that_breaks_the_contract_names_file_line_and_field(tmp_path, jsquad_data, field, value, expected):
    record = prediction_record(FINETUNE, "x", "a", ["a"])
    record[field] = value
    path = tmp_path / "p" / "bad.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(JobError, match=rf"^{path}:1: .*{expected}".replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        score.score_predictions(_settings("jsquad", tmp_path / "p", tmp_path / "out"))


def test_every_arm_and_metric_share_one_set_of_resamples(tmp_path, jsquad_data, monkeypatch):
    examples = read_eval_set(jsquad_data)
    _arm(tmp_path / "p", FINETUNE, examples)
    _arm(tmp_path / "p", LOCAL, examples)
    built = []
    original = stats.Resamples.__init__

    def counting(self, *args, **kwargs):
        built.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(stats.Resamples, "__init__", counting)
    score.score_predictions(_settings(str(jsquad_data), tmp_path / "p", tmp_path / "out"))
    assert built == [(len(examples), 200, 0)]  # 2 arms x 3 metrics, one draw
    monkeypatch.setattr(stats.Resamples, "__init__", original)
    shared = stats.Resamples(len(examples), 200, 0)
    values = np.linspace(0, 1, len(examples))
    assert stats.bootstrap_ci(values, shared) == stats.bootstrap_ci(values, 200, 0)


@pytest.mark.parametrize("option, value", [("--bootstrap", "0"), ("--bootstrap", "many"), ("--seed", "-1")])
def test_bad_numbers_are_one_line_errors(tmp_path, jsquad_data, option, value):
    result = CliRunner().invoke(main, ["score", "--task", str(jsquad_data), "--out", str(tmp_path / "out"),
                                       option, value, "--predictions", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: score: command line: {option}=")


@pytest.mark.parametrize("bad_line, expected", [
    (lambda r: json.dumps({**r, "arm": {**r["arm"], "n": "8"}}), "field arm.n: '8' is not of type 'integer'"),
    (lambda r: json.dumps({**r, "references": "東京"}), "field references: '東京' is not of type 'array'"),
    (lambda r: json.dumps(r)[:-1], "not valid JSON (Expecting ',' delimiter)"),
])
def test_a_malformed_record_is_a_one_line_error_naming_file_line_and_field(tmp_path, jsquad_data, bad_line, expected):
    examples = read_eval_set(jsquad_data)
    path = _arm(tmp_path / "p", FINETUNE, examples)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = bad_line(json.loads(lines[1]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["score", "--task", str(jsquad_data), "--out", str(out), "--predictions",
                                       str(tmp_path / "p")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: score: {path}:2: {expected}"]
    assert not out.exists() or not [p for p in out.iterdir() if p.name in score.OUTPUTS]
    assert gc.isenabled()  # the collector paused while records are read is back on after the error
