"""The data job: deterministic, nested, leak-free training sets; a user's own task; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core.datafolder import read_eval_set, read_jsonl, read_train_set
from switchpoint.data.job import DataSettings, prepare


def _prepare(tmp_path: Path, task: str = "jsquad", **kw) -> Path:
    out = tmp_path / f"out-{task}-{len(list(tmp_path.iterdir()))}"
    settings = DataSettings(task=task, sizes=kw.pop("sizes", [0, 2, 4, 8, 16]), seeds=kw.pop("seeds", [0, 1]),
                            source=kw.pop("source", "bundled"), eval_size=kw.pop("eval_size", 20), **kw)
    prepare(settings, out)
    return out


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", ["jsquad", "xlsum"])
def test_same_inputs_and_seed_give_the_same_bytes(tmp_path, task):
    assert _tree_bytes(_prepare(tmp_path, task)) == _tree_bytes(_prepare(tmp_path, task))


def test_training_sets_are_nested_per_seed_and_differ_between_seeds(jsquad_data):
    for seed in (0, 1):
        sets = [read_train_set(jsquad_data, seed, n) for n in (2, 4, 8)]
        assert [len(s) for s in sets] == [2, 4, 8]
        assert sets[0] == sets[1][:2] and sets[1] == sets[2][:4]
    assert [r["id"] for r in read_train_set(jsquad_data, 0, 8)] != [r["id"] for r in read_train_set(jsquad_data, 1, 8)]
    assert read_train_set(jsquad_data, 0, 0) == []


def test_jsquad_training_contexts_are_unique_and_never_in_eval(tmp_path):
    out = _prepare(tmp_path, sizes=[0, 64, 256], seeds=[0, 3], eval_size=None)
    eval_set = read_eval_set(out)
    eval_contexts = {r["context"] for r in eval_set}
    eval_ids = {r["id"] for r in eval_set}
    for seed in (0, 3):
        train = read_train_set(out, seed, 256)
        contexts = [r["context"] for r in train]
        assert len(set(contexts)) == 256  # no two training examples share a context
        assert not eval_contexts & set(contexts)
        assert not eval_ids & {r["id"] for r in train}
    pool = read_jsonl(out / "pool.jsonl")
    assert not eval_contexts & {r["context"] for r in pool}


def test_canonical_records_keep_all_gold_answers(jsquad_data, xlsum_data):
    rec = read_eval_set(jsquad_data)[0]
    assert set(rec) == {"id", "title", "context", "question", "references"}
    assert len(rec["references"]) >= 2
    summary = read_eval_set(xlsum_data)[0]
    assert set(summary) == {"id", "title", "text", "references"} and len(summary["references"]) == 1


def test_eval_cap_is_a_fixed_subset_independent_of_training_seed(tmp_path):
    a = read_eval_set(_prepare(tmp_path, seeds=[0], eval_size=10))
    b = read_eval_set(_prepare(tmp_path, seeds=[5], eval_size=10))
    assert a == b and len(a) == 10


def _custom_task(tmp_path: Path, rows: list[str], extra: str = "") -> Path:
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text('{"qid": "e1", "q": "空は何色？", "a": "青"}\n', encoding="utf-8")
    task = tmp_path / "colors.yaml"
    task.write_text(f"""
name: colors
sources:
  train: {{type: file, uri: train.jsonl, format: jsonl}}
  eval: {{type: file, uri: eval.jsonl, format: jsonl}}
fields: {{id: qid, inputs: {{question: q}}, references: a}}
prompt: {{instruction: 色を答えてください。, input_template: "質問：{{question}}"}}
generation: {{max_new_tokens: 8, stop: ["\\n"]}}
metrics: [exact_match, f1]
{extra}""", encoding="utf-8")
    return task


def test_a_custom_task_is_a_yaml_next_to_a_jsonl(tmp_path):
    rows = [json.dumps({"qid": f"t{i}", "q": f"物{i}の色は？", "a": ["赤", "青", "緑"][i % 3]}, ensure_ascii=False) for i in range(6)]
    task = _custom_task(tmp_path, rows)
    result = CliRunner().invoke(main, ["data", "--task", str(task), "--sizes", "0,2,4", "--seeds", "0",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_eval_set(tmp_path / "out")] == ["e1"]
    train = read_train_set(tmp_path / "out", 0, 4)
    assert len(train) == 4 and all(set(r) == {"id", "question", "references"} for r in train)


# --- bad input: one line naming the file/row/field, non-zero exit, nothing marked complete ------
def _run(args: list[str]):
    return CliRunner().invoke(main, ["data", *args])


def test_n_larger_than_the_pool_names_the_largest_possible_n(tmp_path):
    result = _run(["--task", "jsquad", "--source", "bundled", "--sizes", "0,1000", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "N=1000 is larger than the training pool: at most 300 examples with distinct 'context'" in result.output


def test_malformed_jsonl_names_file_and_line(tmp_path):
    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "x", "a": "赤"}', '{"qid": "t2", "q": broken}'])
    result = _run(["--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "train.jsonl:2: not valid JSON" in result.output


def test_missing_field_names_row_and_field(tmp_path):
    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "x", "a": "赤"}', '{"qid": "t2", "a": "赤"}'])
    result = _run(["--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "train.jsonl:2: field 'q' (input 'question') is missing" in result.output


def test_empty_references_are_rejected(tmp_path):
    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "x", "a": []}'])
    result = _run(["--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "train.jsonl:1: field 'a' (references)" in result.output


def test_empty_pool_after_overlap_filter(tmp_path):
    task = _custom_task(tmp_path, ['{"qid": "e1", "q": "空は何色？", "a": "青"}'])
    result = _run(["--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "training pool is empty" in result.output


def test_unreadable_source_file(tmp_path):
    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "x", "a": "赤"}'])
    (tmp_path / "train.jsonl").unlink()
    result = _run(["--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "train.jsonl: cannot read" in result.output


def test_unknown_task(tmp_path):
    result = _run(["--task", "squad-fr", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown task 'squad-fr'; known: jsquad, " in result.output


def test_failed_run_leaves_nothing_marked_complete_in_the_store(tmp_path):
    store = tmp_path / "store"
    result = _run(["--task", "jsquad", "--sweep", "smoke", "--sizes", "0,5000", "--store", str(store)])
    assert result.exit_code == 1
    assert not list(store.rglob("_SUCCESS"))


def test_remote_source_without_network_points_to_smoke(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    result = _run(["--task", "jsquad", "--source", "remote", "--sizes", "0,2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "cannot reach it" in result.output and "SWEEP=smoke" in result.output


def test_data_writes_the_store_layout_with_success_marker(tmp_path):
    result = _run(["--task", "xlsum", "--sweep", "smoke", "--store", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "smoke" / "xlsum" / "data"
    success = json.loads((folder / "_SUCCESS").read_text())
    assert "eval.jsonl" in success["files"] and "train/seed=0/n=8.jsonl" in success["files"]
    info = json.loads((folder / "data.json").read_text())
    assert info["sizes"] == [0, 2, 4, 8] and info["eval_count"] == 16


def test_sources_can_live_in_the_store(tmp_path, s3_bucket):
    """A task's data may come from the store (here moto's S3), not just files and URLs."""
    from switchpoint.core.store import open_store

    store = open_store(f"s3://{s3_bucket}/datasets")
    rows = [json.dumps({"qid": f"t{i}", "q": f"物{i}の色は？", "a": "赤"}, ensure_ascii=False) for i in range(5)]
    store.write_text("colors/train.jsonl", "\n".join(rows) + "\n")
    store.write_text("colors/eval.jsonl", '{"qid": "e1", "q": "空は何色？", "a": "青"}\n')
    task = _custom_task(tmp_path, [])
    text = task.read_text().replace("{type: file, uri: train.jsonl", f"{{type: store, uri: s3://{s3_bucket}/datasets/colors/train.jsonl")
    text = text.replace("{type: file, uri: eval.jsonl", f"{{type: store, uri: s3://{s3_bucket}/datasets/colors/eval.jsonl")
    task.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    prepare(DataSettings(task=str(task), sizes=[0, 2], seeds=[0]), out)
    assert len(read_train_set(out, 0, 2)) == 2 and read_eval_set(out)[0]["id"] == "e1"
