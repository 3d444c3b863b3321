"""The report's view of scores.jsonl: a bad record is a one-line error naming file and line, never a default."""

from __future__ import annotations

import json

import pytest
from switchpoint.core.contract import JobError
from switchpoint.report.tables import load_scores

ARM = {"kind": "finetune", "model": "m", "n": 2, "seed": 0, "variant": None}


def _run(tmp_path, lines: list[str]):
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "scores.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("second, expected", [
    (json.dumps({"id": "q1", "arm": ARM}), ":2: field f1 is missing"),
    (json.dumps({"id": "q0", "arm": ARM, "f1": 1.0}), ":2: id 'q0' appears twice"),
    (json.dumps({"id": "q1", "arm": ARM, "f1": "high"}), ":2: field f1: expected a number in 0..1"),
    (json.dumps({"id": "q1", "arm": {"kind": "finetune"}, "f1": 1.0}), ":2: not a score record with id and arm"),
    ("{not json", ":2: not valid JSON"),
])
def test_a_bad_score_record_names_file_and_line(tmp_path, second, expected):
    run = _run(tmp_path, [json.dumps({"id": "q0", "arm": ARM, "f1": 0.5}), second])
    with pytest.raises(JobError, match="scores.jsonl" + expected):
        load_scores(run)


def test_scores_become_one_matrix_per_metric_with_gaps_for_unscored_examples(tmp_path):
    other = {**ARM, "n": 4}
    run = _run(tmp_path, [json.dumps({"id": "q0", "arm": ARM, "f1": 0.5}), json.dumps({"id": "q1", "arm": ARM, "f1": 1.0}),
                          json.dumps({"id": "q0", "arm": other, "f1": 0.25, "error": "timeout"})])
    scores = load_scores(run)
    assert scores.ids == ["q0", "q1"] and scores.arms == [("finetune", "m", "", 2, 0), ("finetune", "m", "", 4, 0)]
    matrix = scores.values["f1"]
    assert matrix[0, 0] == pytest.approx(0.5) and matrix[1, 0] == pytest.approx(1.0)
    assert matrix[0, 1] == pytest.approx(0.25) and matrix[1, 1] != matrix[1, 1]  # NaN: q1 not scored by n=4
    assert list(scores.errors) == [0, 1]
