"""Completion that cannot lie: a marker's files are checked, and stale inputs or settings are redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from switchpoint.core import manifests
from switchpoint.core.store import SUCCESS, open_store
from switchpoint.orchestration import freshness
from switchpoint.orchestration.steps import plan_steps
from switchpoint.orchestration.sweep import run_root, run_sweep

SWEEP = """
name: fresh
tasks: [colors]
data: {{source: remote, eval_size: {eval_size}}}
sizes: {sizes}
seeds: [0]
models: [tiny-gpt-neox]
api_models: []
train: {{epochs: {epochs}, batch_size: 2, learning_rate: 0.01, min_steps: 4, instance_type: local}}
infer: {{engine: hf, batch_size: 8, instance_type: local}}
score: {{bootstrap: 200, instance_type: local}}
"""


def _task(tmp_path: Path, eval_rows: int = 8) -> dict:
    """A user's task on local JSONL files (so its eval file can be edited between runs)."""
    rows = [{"qid": f"q{i}", "q": f"質問{i}", "a": "赤青"[i % 2]} for i in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:30]),
                                          encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[30:30 + eval_rows]),
                                         encoding="utf-8")
    path = tmp_path / "colors.yaml"
    path.write_text("""
name: colors
sources:
  train: {type: file, uri: train.jsonl, format: jsonl}
  eval: {type: file, uri: eval.jsonl, format: jsonl}
fields: {id: qid, inputs: {question: q}, references: a}
prompt: {instruction: 色を答えてください。, input_template: "{question}"}
generation: {max_new_tokens: 4}
metrics: [exact_match]
""", encoding="utf-8")
    return manifests.load_task(path)


def _sweep(tmp_path: Path, sizes=(0, 2, 4), epochs: int = 3, eval_size: int = 100) -> dict:
    path = tmp_path / "fresh.yaml"
    path.write_text(SWEEP.format(sizes=list(sizes), epochs=epochs, eval_size=eval_size), encoding="utf-8")
    return manifests.load_sweep(path)


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha", encoding="utf-8")
    (src / "sub" / "b.bin").write_bytes(b"\0" * 1000)
    return src


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_marker_lists_sizes_and_hashes_and_a_missing_or_resized_file_is_not_complete(tmp_path, where, request):
    uri = str(tmp_path / "store") if where == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/p"
    step = open_store(uri).child("step")
    step.publish(_folder(tmp_path), {"digest": "d"})
    marker = step.marker()
    assert marker["files"]["a.txt"]["size"] == 5 and marker["files"]["sub/b.bin"]["size"] == 1000
    assert len(marker["files"]["a.txt"]["sha256"]) == 64 and marker["fingerprint"] == {"digest": "d"}
    assert step.is_complete() and step.success_files() == ["a.txt", "sub/b.bin"]
    step.write_text("a.txt", "a longer alpha")
    assert not step.is_complete()
    assert step.incomplete_reason() == f"a.txt is 14 bytes, {SUCCESS} recorded 5"
    step.write_text("a.txt", "alpha")
    assert step.is_complete()
    step.delete("sub/b.bin")
    assert not step.is_complete() and step.incomplete_reason() == f"sub/b.bin is listed in {SUCCESS} but missing"
    assert step.success_files() == []


def test_a_marker_cannot_list_a_file_the_store_does_not_hold(tmp_path):
    from switchpoint.core.contract import JobError

    step = open_store(tmp_path).child("s")
    step.write_text("x", "1")
    with pytest.raises(JobError, match="cannot mark complete: y is not in the store"):
        step.mark_complete(["x", "y"])
    assert not step.exists(SUCCESS)


def test_an_old_style_marker_still_reads_and_is_checked_for_presence(tmp_path):
    step = open_store(tmp_path).child("s")
    step.write_text("x", "1")
    step.write_json(SUCCESS, {"files": ["x"]})
    assert step.is_complete()
    step.delete("x")
    assert not step.is_complete()


def test_a_deleted_output_file_makes_the_step_run_again(tmp_path, capsys):
    """A listed file removed from the store: the step is not done, and `run` says why it redoes it."""
    sweep, task = _sweep(tmp_path), _task(tmp_path)
    store = open_store(tmp_path / "runs")
    assert [r["status"] for r in run_sweep(sweep, task, store, job="data")] == ["done"]
    assert run_sweep(sweep, task, store, job="data") == []  # same inputs, same settings: skipped
    run_root(store, sweep, task).child("data").delete("eval.jsonl")
    capsys.readouterr()
    assert [r["status"] for r in run_sweep(sweep, task, store, job="data")] == ["done"]
    err = capsys.readouterr().err
    assert "data: output not complete" in err and "eval.jsonl is listed in _SUCCESS but missing); running again" in err


def test_a_data_step_rerun_after_the_eval_file_or_the_sizes_changed_makes_new_data(tmp_path, capsys):
    sweep, task = _sweep(tmp_path), _task(tmp_path)
    store = open_store(tmp_path / "runs")
    data = run_root(store, sweep, task).child("data")
    run_sweep(sweep, task, store, job="data")
    assert len(data.read_text("eval.jsonl").splitlines()) == 8
    # the eval file grows: the old data must not be reused
    _task(tmp_path, eval_rows=10)
    capsys.readouterr()
    assert [r["status"] for r in run_sweep(sweep, task, store, job="data")] == ["done"]
    assert "input source:eval" in capsys.readouterr().err
    assert len(data.read_text("eval.jsonl").splitlines()) == 10
    # the sizes change: the new training set is there, and the message names the change
    bigger = _sweep(tmp_path, sizes=(0, 2, 8))
    assert [r["status"] for r in run_sweep(bigger, task, store, job="data")] == ["done"]
    assert "settings" in capsys.readouterr().err
    assert data.exists("train/seed=0/n=8.jsonl") and data.is_complete()
    assert json.loads(data.read_text("data.json"))["sizes"] == [0, 2, 8]


def test_force_runs_a_complete_step_again(tmp_path):
    sweep, task = _sweep(tmp_path), _task(tmp_path)
    store = open_store(tmp_path / "runs")
    run_sweep(sweep, task, store, job="data")
    assert run_sweep(sweep, task, store, job="data") == []
    assert [r["status"] for r in run_sweep(sweep, task, store, job="data", force=True)] == ["done"]


def test_a_step_below_a_changed_input_or_with_changed_settings_is_stale(tmp_path):
    """The train step's fingerprint follows the data marker and its own hyperparameters."""
    sweep, task = _sweep(tmp_path), _task(tmp_path)
    store = open_store(tmp_path / "runs")
    run = run_root(store, sweep, task)
    run_sweep(sweep, task, store, job="data")
    steps = plan_steps(sweep, task)
    train = next(s for s in steps if s.job == "train")
    before = freshness.step_fingerprint(train, run, steps, sweep)
    assert freshness.what_changed(before, freshness.step_fingerprint(train, run, steps, sweep)) is None
    # the settings change: the message names the hyperparameter, old and new
    slower = _sweep(tmp_path, epochs=4)
    steps4 = plan_steps(slower, task)
    train4 = next(s for s in steps4 if s.job == "train")
    changed = freshness.what_changed(before, freshness.step_fingerprint(train4, run, steps4, slower))
    assert changed is not None and 'hyperparameters.epochs "3" -> "4"' in changed
    # the data is made again from another eval cap: the input changed
    capped = _sweep(tmp_path, eval_size=5)
    run_sweep(capped, task, store, job="data")
    steps5 = plan_steps(capped, task)
    train5 = next(s for s in steps5 if s.job == "train")
    assert freshness.what_changed(before, freshness.step_fingerprint(train5, run, steps5, capped)) == "input data"
    # a marker without a fingerprint (an older version's) is never taken as current
    assert "no fingerprint" in freshness.what_changed(None, before)
    # a step is upstream of another only through its inputs
    names = {s.name: [u.name for u in freshness.upstream(s, steps)] for s in steps}
    assert names["train-tiny-gpt-neox"] == ["data"]
    assert names["infer-local-tiny-gpt-neox"] == ["data", "train-tiny-gpt-neox"]
    assert names["score"] == ["data", "infer-local-tiny-gpt-neox"]
    assert set(names["report"]) == {"data", "train-tiny-gpt-neox", "infer-local-tiny-gpt-neox", "score"}


def test_status_tells_done_from_stale_and_incomplete(tmp_path):
    from switchpoint.orchestration.status import step_status

    sweep, task = _sweep(tmp_path), _task(tmp_path)
    store = open_store(tmp_path / "runs")
    run_sweep(sweep, task, store, job="data")
    assert next(r for r in step_status(sweep, task, store) if r["step"] == "data")["state"] == "done"
    row = next(r for r in step_status(_sweep(tmp_path, sizes=(0, 2, 8)), task, store) if r["step"] == "data")
    assert row["state"] == "stale" and "settings.sizes [0, 2, 4] -> [0, 2, 8]" in row["reason"]
    assert row["reason"].startswith("changed since it ran: ")
    run_root(store, sweep, task).child("data").delete("pool.jsonl")
    row = next(r for r in step_status(sweep, task, store) if r["step"] == "data")
    assert (row["state"], row["reason"]) == ("incomplete", f"pool.jsonl is listed in {SUCCESS} but missing")
