"""The score job: outputs, intervals, errors a user can act on, the job layout, and paired comparisons."""

from __future__ import annotations

import csv
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
FEWSHOT = Arm("fewshot-api", "claude-haiku-4.5", 8, 0, "full")


def _write_arm(folder: Path, arm: Arm, examples: list[dict], answer, error_at: set[int] = frozenset()) -> Path:
    path = folder / arm.filename
    write_predictions(path, [prediction_record(arm, ex["id"], answer(i, ex), ex["references"],
                                               error="throttled" if i in error_at else None)
                             for i, ex in enumerate(examples)])
    return path


def _raw_lines(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _summary(out: Path) -> list[dict]:
    with (out / "summary.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def jsquad_preds(tmp_path, jsquad_data):
    """Two arms on the 12 eval examples: A answers gold or a wrong string alternately, B always the
    last gold but errors on example 0."""
    examples = read_eval_set(jsquad_data)
    folder = tmp_path / "preds"
    _write_arm(folder, FINETUNE, examples, lambda i, ex: ex["references"][0] if i % 2 else "まちがい")
    _write_arm(folder, FEWSHOT, examples, lambda i, ex: ex["references"][-1], error_at={0})
    return folder, examples


def test_scores_summary_and_metrics_files(tmp_path, jsquad_data, jsquad_preds):
    folder, examples = jsquad_preds
    out = tmp_path / "out"
    report = score.score_predictions(score.ScoreSettings(task=str(jsquad_data), predictions=[str(folder)],
                                                         out=str(out), bootstrap=2000, seed=3))
    assert sorted(p.name for p in out.iterdir()) == ["score_metrics.json", "scores.jsonl", "summary.csv"]

    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 * len(examples)
    by_arm = {}
    for rec in lines:
        assert set(rec) == {"id", "arm", "error", "exact_match", "f1", "f1_mecab"}
        assert all(0.0 <= rec[m] <= 1.0 for m in ("exact_match", "f1", "f1_mecab"))
        by_arm.setdefault(Arm.from_dict(rec["arm"]), []).append(rec)
    ft, fs = by_arm[FINETUNE], by_arm[FEWSHOT]
    assert [r["exact_match"] for r in ft] == [0.0, 1.0] * (len(examples) // 2)
    assert fs[0]["error"] is True and fs[0]["f1"] == 0.0 and fs[0]["exact_match"] == 0.0  # errors score 0
    assert all(r["exact_match"] == 1.0 for r in fs[1:])
    assert by_arm[FEWSHOT][0]["arm"] == FEWSHOT.to_dict()  # the arm as given

    rows = _summary(out)
    assert list(rows[0]) == list(score.SUMMARY_COLUMNS)
    assert list(score.SUMMARY_COLUMNS) == ["task", "kind", "model", "n", "seed", "variant", "metric", "mean",
                                           "ci_low", "ci_high", "count", "errors"]
    assert len(rows) == 2 * 3
    em_fs = next(r for r in rows if r["kind"] == "fewshot-api" and r["metric"] == "exact_match")
    assert em_fs["task"] == "jsquad" and em_fs["variant"] == "full" and em_fs["n"] == "8"
    assert float(em_fs["mean"]) == pytest.approx(100 * 11 / 12, abs=1e-3)
    assert em_fs["count"] == "12" and em_fs["errors"] == "1"
    expected = stats.bootstrap_ci([r["exact_match"] for r in fs], 2000, 3)
    assert float(em_fs["ci_low"]) == pytest.approx(expected.ci_low, abs=1e-3)
    assert float(em_fs["ci_high"]) == pytest.approx(expected.ci_high, abs=1e-3)
    assert float(em_fs["ci_low"]) < float(em_fs["mean"]) <= float(em_fs["ci_high"]) <= 100
    f1_ft = next(r for r in rows if r["kind"] == "finetune" and r["metric"] == "f1")
    assert f1_ft["variant"] == "" and f1_ft["errors"] == "0"
    assert float(f1_ft["mean"]) == pytest.approx(100 * np.mean([r["f1"] for r in ft]), abs=1e-3)

    saved = json.loads((out / "score_metrics.json").read_text(encoding="utf-8"))
    assert saved["records"] == 24 and saved["errors"] == 1 and len(saved["arms"]) == 2
    assert saved["pairs_per_s"] > 0 and saved["wall_s"] >= saved["scoring_s"] > 0
    assert saved["id_set_mismatches"] == [] and saved["metrics"] == ["exact_match", "f1", "f1_mecab"]
    assert saved["implementation"]["neologdn"] and saved["implementation"]["unidic-lite"]
    assert report["records"] == 24


def test_same_seed_same_summary_and_rouge_on_identical_summaries(tmp_path, xlsum_data):
    examples = read_eval_set(xlsum_data)
    folder = tmp_path / "preds"
    _write_arm(folder, FEWSHOT, examples, lambda i, ex: ex["references"][0])
    summaries = []
    for run in ("a", "b"):
        score.score_predictions(score.ScoreSettings(task="xlsum", predictions=[str(folder)],
                                                    out=str(tmp_path / run), bootstrap=500, seed=7))
        summaries.append((tmp_path / run / "summary.csv").read_text(encoding="utf-8"))
    assert summaries[0] == summaries[1]
    rows = _summary(tmp_path / "a")
    assert [r["metric"] for r in rows] == ["rouge1", "rouge2", "rougeL"]
    assert all(float(r[k]) == pytest.approx(100.0) for r in rows for k in ("mean", "ci_low", "ci_high"))


def test_empty_references_stop_with_file_and_line(tmp_path, jsquad_data):
    examples = read_eval_set(jsquad_data)
    good = prediction_record(FINETUNE, examples[0]["id"], "x", examples[0]["references"])
    bad = prediction_record(FINETUNE, examples[1]["id"], "x", [])
    path = _raw_lines(tmp_path / "p" / FINETUNE.filename, [good, bad])
    with pytest.raises(JobError, match=rf"{path.name}:2: field references is empty"):
        score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(path)], out=str(tmp_path / "o")))
    missing = dict(good)
    del missing["references"]
    _raw_lines(path, [missing])
    with pytest.raises(JobError, match=rf"{path.name}:1: .*references"):
        score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(path)], out=str(tmp_path / "o")))


def test_duplicate_id_in_an_arm_stops_with_both_places(tmp_path, jsquad_data):
    ex = read_eval_set(jsquad_data)[0]
    rec = prediction_record(FINETUNE, ex["id"], "x", ex["references"])
    path = _raw_lines(tmp_path / "p" / FINETUNE.filename, [rec, rec])
    with pytest.raises(JobError, match=rf"{path.name}:2: id '{ex['id']}' appears twice .*first at .*:1\)"):
        score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(path)], out=str(tmp_path / "o")))
    # the same id in two different arms is fine
    other = prediction_record(FEWSHOT, ex["id"], "x", ex["references"])
    _raw_lines(path, [rec, other])
    score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(path)], out=str(tmp_path / "o")))


def test_unknown_metric_in_a_task_json_names_file_and_line(tmp_path, jsquad_data, jsquad_preds):
    folder, _ = jsquad_preds
    data = tmp_path / "data"
    data.mkdir()
    task = json.loads((jsquad_data / "task.json").read_text(encoding="utf-8"))
    task["metrics"] = ["exact_match", "bleu"]
    (data / "task.json").write_text(json.dumps(task, indent=2), encoding="utf-8")
    line = next(i for i, text in enumerate((data / "task.json").read_text().splitlines(), 1) if '"bleu"' in text)
    with pytest.raises(JobError, match=rf"task.json:{line}: metrics: unknown metric 'bleu'"):
        score.score_predictions(score.ScoreSettings(task=str(data), predictions=[str(folder)], out=str(tmp_path / "o")))


def test_arms_on_different_id_sets_are_reported(tmp_path, jsquad_data, capsys):
    examples = read_eval_set(jsquad_data)
    folder = tmp_path / "preds"
    _write_arm(folder, FINETUNE, examples, lambda i, ex: "x")
    _write_arm(folder, Arm("finetune", "tiny-llama", 8, 0), examples, lambda i, ex: "x")
    _write_arm(folder, FEWSHOT, examples[:9], lambda i, ex: "x")
    report = score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(folder)],
                                                         out=str(tmp_path / "o"), bootstrap=100))
    (item,) = report["id_set_mismatches"]
    assert item["arm"] == FEWSHOT.to_dict() and item["missing"] == 3 and item["extra"] == 0
    assert sorted(item["missing_examples"]) == sorted(ex["id"] for ex in examples[9:])
    assert "arm 'fewshot-api claude-haiku-4.5 n=8 seed=0 [full]' was evaluated on 9 ids" in capsys.readouterr().err


def test_a_failure_mid_job_leaves_no_complete_looking_output(tmp_path, jsquad_preds, monkeypatch):
    folder, _ = jsquad_preds
    out = tmp_path / "out"
    settings = score.ScoreSettings(task="jsquad", predictions=[str(folder)], out=str(out), bootstrap=100)
    score.score_predictions(settings)
    assert (out / "summary.csv").exists()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(score.stats, "bootstrap_cis", killed)
    with pytest.raises(KeyboardInterrupt):
        score.score_predictions(settings)
    assert not [name for name in score.OUTPUTS if (out / name).exists()]
    monkeypatch.undo()

    # Killed while writing: scores.jsonl is done, summary.csv is not. Nothing may sit under its final name.
    monkeypatch.setattr(score.csv, "DictWriter", killed)
    with pytest.raises(KeyboardInterrupt):
        score.score_predictions(settings)
    assert (out / "scores.jsonl.part").exists()
    assert not [name for name in score.OUTPUTS if (out / name).exists()]


def test_processing_job_layout_with_only_ml_root(tmp_path, jsquad_data):
    """The image's entrypoint (`switchpoint score`) reads processing/input/predictions and writes
    processing/output under a moved root; a failure writes output/failure and exits 1."""
    root = tmp_path / "ml"
    examples = read_eval_set(jsquad_data)
    pred_root = root / "processing" / "input" / "predictions"
    _write_arm(pred_root / "local" / "tiny-gpt-neox", FINETUNE, examples, lambda i, ex: ex["references"][0])
    _write_arm(pred_root / "bedrock" / "claude-haiku-4.5", FEWSHOT, examples, lambda i, ex: "")
    (pred_root / "local" / "tiny-gpt-neox" / "infer_metrics.json").write_text("{}", encoding="utf-8")

    result = CliRunner().invoke(main, ["score", "--ml-root", str(root), "--task", "jsquad", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    out = root / "processing" / "output"
    rows = _summary(out)
    means = {(r["kind"], r["metric"]): float(r["mean"]) for r in rows}
    assert means[("finetune", "exact_match")] == pytest.approx(100.0)
    assert means[("fewshot-api", "f1")] == 0.0
    assert not (root / "output" / "failure").exists()

    dup = json.loads((pred_root / "local" / "tiny-gpt-neox" / FINETUNE.filename).read_text().splitlines()[0])
    _raw_lines(pred_root / "extra" / "dup.jsonl", [dup])
    result = CliRunner().invoke(main, ["score", "--ml-root", str(root), "--task", "jsquad"])
    assert result.exit_code == 1
    failure = (root / "output" / "failure").read_text(encoding="utf-8")
    assert failure.startswith("score: ") and "appears twice" in failure and "dup.jsonl:1" in failure
    assert not (out / "summary.csv").exists()


def test_predictions_from_several_paths_and_a_store_uri(tmp_path, jsquad_data, jsquad_preds, s3_bucket):
    import boto3

    folder, _ = jsquad_preds
    s3 = boto3.client("s3")
    for path in folder.glob("*.jsonl"):
        s3.put_object(Bucket=s3_bucket, Key=f"sweep/jsquad/predictions/{path.name}", Body=path.read_bytes())
    out = tmp_path / "from-s3"
    report = score.score_predictions(score.ScoreSettings(task="jsquad", out=str(out), bootstrap=100,
                                                         predictions=[f"s3://{s3_bucket}/sweep/jsquad/predictions"]))
    assert report["records"] == 24
    assert all(i.startswith(f"s3://{s3_bucket}/sweep/jsquad/predictions/") for i in report["inputs"])
    one = f"s3://{s3_bucket}/sweep/jsquad/predictions/{FINETUNE.filename}"
    report = score.score_predictions(score.ScoreSettings(task="jsquad", out=str(tmp_path / "one"), bootstrap=100,
                                                         predictions=[one, f"file://{folder / FEWSHOT.filename}"]))
    assert report["inputs"] == [one, str(folder / FEWSHOT.filename)] and report["records"] == 24
    local = tmp_path / "local"
    result = CliRunner().invoke(main, ["score", "--task", "jsquad", "--out", str(local), "--bootstrap", "100",
                                       "--predictions", str(folder / FINETUNE.filename), str(folder / FEWSHOT.filename)])
    assert result.exit_code == 0, result.output
    assert (local / "summary.csv").read_text() == (out / "summary.csv").read_text()


def test_compare_arms_is_a_paired_difference_on_common_ids(tmp_path, jsquad_data):
    examples = read_eval_set(jsquad_data)
    folder = tmp_path / "preds"
    _write_arm(folder, FINETUNE, examples, lambda i, ex: ex["references"][0] if i < 8 else "x")
    _write_arm(folder, FEWSHOT, examples[:10], lambda i, ex: ex["references"][0] if i < 4 else "x")
    out = tmp_path / "out"
    score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(folder)], out=str(out), bootstrap=100))
    records = score.load_scores(out)
    assert len(records) == 22

    diff = score.compare_arms(records, FINETUNE.to_dict(), FEWSHOT.to_dict(), "exact_match", 2000, 1)
    # on the 10 common ids A is right on 8, B on 4: +40 points; ids 10, 11 only in A
    assert diff.mean_diff == pytest.approx(40.0)
    assert (diff.count, diff.only_a, diff.only_b) == (10, 2, 0)
    assert diff.ci_low < 40.0 < diff.ci_high
    assert diff == score.compare_arms(records, {"kind": "finetune"}, {"variant": "full"}, "exact_match", 2000, 1)

    result = CliRunner().invoke(main, ["score", "--compare", str(out / "scores.jsonl"), "--metric", "exact_match",
                                       "--arm-a", FINETUNE.label, "--arm-b", "fewshot-api n=8 [full]",
                                       "--bootstrap", "2000", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert f"A - B = +40.00 points, 95% paired bootstrap interval [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}]" in result.output
    assert "over 10 common examples" in result.output

    result = CliRunner().invoke(main, ["score", "--compare", str(out), "--arm-a", "n=8", "--arm-b", "finetune"])
    assert result.exit_code == 1 and "choose one with --metric" in result.output
    result = CliRunner().invoke(main, ["score", "--compare", str(out), "--metric", "f1", "--arm-a", "n=8",
                                       "--arm-b", "finetune"])
    assert result.exit_code == 1 and "matches 2 arms" in result.output


def test_arm_spec_syntax():
    assert score.parse_arm_spec("finetune tiny-gpt-neox n=8 seed=0") == {"kind": "finetune", "model": "tiny-gpt-neox",
                                                                         "n": 8, "seed": 0}
    assert score.parse_arm_spec(FEWSHOT.label) == FEWSHOT.to_dict()
    assert score.parse_arm_spec("model=tiny-llama variant=none") == {"model": "tiny-llama", "variant": None}
    with pytest.raises(JobError, match="unknown field 'shots'"):
        score.parse_arm_spec("shots=8")
    with pytest.raises(JobError, match="n='eight' is not an integer"):
        score.parse_arm_spec("n=eight")


def test_help_explains_inputs_outputs_and_compare():
    result = CliRunner().invoke(main, ["score", "--help"])
    assert result.exit_code == 0
    for word in ("--predictions", "summary.csv", "scores.jsonl", "--compare", "--arm-a", "--bootstrap", "--ml-root"):
        assert word in result.output



def test_scores_jsonl_is_each_record_as_json_dumps_writes_it_in_input_order(tmp_path):
    from switchpoint.score import metrics

    refs = [["東京"], ['"引用"と\\記号'], ["さくら", "桜"]]
    preds = ["東京", '"引用"と\\記号', "桜の花"]
    folder = tmp_path / "p"
    for arm, error_at in ((FINETUNE, None), (FEWSHOT, 1)):
        write_predictions(folder / arm.filename, [
            prediction_record(arm, f'例"{i}\\', preds[i], refs[i], error="boom" if i == error_at else None)
            for i in range(3)])
    score.score_predictions(score.ScoreSettings(task="jsquad", predictions=[str(folder)], out=str(tmp_path / "o"),
                                                bootstrap=50))
    lines = (tmp_path / "o" / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    expected = metrics.score_batch(["exact_match", "f1", "f1_mecab"], preds, refs)
    files = sorted(folder.glob("*.jsonl"))  # read in this order: fewshot-api, then finetune
    assert [Arm.from_dict(json.loads(line)["arm"]) for line in lines] == [FEWSHOT] * 3 + [FINETUNE] * 3
    assert files[0].name == FEWSHOT.filename
    for k, line in enumerate(lines):
        record = json.loads(line)
        assert line == json.dumps(record, ensure_ascii=False)  # the format the job always wrote
        assert list(record) == ["id", "arm", "error", "exact_match", "f1", "f1_mecab"]
        i, in_error = k % 3, k == 1
        assert record["id"] == f'例"{i}\\' and record["error"] is in_error
        for name in ("exact_match", "f1", "f1_mecab"):
            assert record[name] == (0.0 if in_error else expected[name][i])
