"""The data job's real sources and settings: XL-Sum through the Hub's Parquet conversion (a hub-cache
replica of the dataset read offline through the real ``hf_hub_download`` path, and local Parquet
through the same reader), JSQuAD v1.1, and one-line errors for bad settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import (
    api_model_entry,
    model_entry,
    read_eval_set,
    read_train_set,
    resolved_sweep,
)
from switchpoint.data.job import Settings, prepare
from switchpoint.data.sources import parquet_location

sys.path.insert(0, str(Path(__file__).parent / "replicas"))
from build import build_xlsum, bundled_xlsum, xlsum_parquet  # noqa: E402

def _xlsum_parquet(folder: Path, name: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(xlsum_parquet(rows))
    return path


def _parquet_task(tmp_path: Path) -> Path:
    """The packaged XL-Sum task with its Hub sources swapped for local Parquet files (same format)."""
    _xlsum_parquet(tmp_path / "japanese" / "train", "0000.parquet", bundled_xlsum("train.jsonl")[:60])
    _xlsum_parquet(tmp_path / "japanese" / "test", "0000.parquet", bundled_xlsum("eval.jsonl")[:20])
    text = (manifests.manifest_dir() / "tasks" / "xlsum.yaml").read_text(encoding="utf-8")
    text = text.replace("{type: hub, uri: csebuetnlp/xlsum, revision: refs/convert/parquet, path: japanese/train/0000.parquet",
                        "{type: file, uri: japanese/train/0000.parquet")
    text = text.replace("{type: hub, uri: csebuetnlp/xlsum, revision: refs/convert/parquet, path: japanese/test/0000.parquet",
                        "{type: file, uri: japanese/test/0000.parquet")
    assert "type: hub" not in text
    path = tmp_path / "xlsum-parquet.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_xlsum_reads_the_hubs_parquet_conversion_pinned_by_revision():
    task = manifests.load_task("xlsum")
    for role, split in (("train", "train"), ("eval", "test")):
        source = task["sources"][role]
        assert source["format"] == "parquet" and source["revision"] == "refs/convert/parquet"
        assert parquet_location(source) == (f"hf://datasets/csebuetnlp/xlsum@refs%2Fconvert%2Fparquet/"
                                            f"japanese/{split}/0000.parquet")


def test_local_parquet_with_xlsums_columns_goes_through_the_same_reader(tmp_path):
    out = tmp_path / "out"
    info = prepare(Settings(task=str(_parquet_task(tmp_path)), sizes=[0, 4], seeds=[0], source="remote"), out)
    assert info["eval_count"] == 20 and info["train_source_count"] == 60
    rec = read_eval_set(out)[0]
    first = bundled_xlsum("eval.jsonl")[0]
    assert rec == {"id": first["id"], "title": first["title"], "text": first["text"], "references": [first["summary"]]}
    assert len(read_train_set(out, 0, 4)) == 4


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty private hub cache, offline (huggingface_hub reads its constants at import time)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_the_real_xlsum_task_reads_the_hubs_parquet_files_from_the_cache_offline(hub_cache, tmp_path):
    build_xlsum(hub_cache)
    out = tmp_path / "out"
    info = prepare(Settings(task="xlsum", sizes=[0, 4], seeds=[0], source="remote"), out)
    assert info["eval_count"] == 20 and info["train_source_count"] == 60  # test split for eval, train for train
    first = bundled_xlsum("eval.jsonl")[0]
    assert read_eval_set(out)[0] == {"id": first["id"], "title": first["title"], "text": first["text"],
                                     "references": [first["summary"]]}


def test_a_hub_parquet_file_cached_at_another_revision_is_not_read(hub_cache, tmp_path):
    build_xlsum(hub_cache, revision="some-other-branch")
    result = CliRunner().invoke(main, ["data", "--task", "xlsum", "--source", "remote", "--sizes", "0,2",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and not (tmp_path / "o" / "data.json").exists()
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: data: eval source hf://datasets/csebuetnlp/xlsum@refs%2Fconvert%2Fparquet/"
                           "japanese/test/0000.parquet: cannot fetch it")


def test_a_file_that_is_not_parquet_names_the_source(tmp_path):
    task = _parquet_task(tmp_path)
    (tmp_path / "japanese" / "test" / "0000.parquet").write_text("id,summary\n1,x\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["data", "--task", str(task), "--source", "remote", "--sizes", "0,2",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: data: eval source ") and ": not a readable Parquet file" in line


def test_unreachable_hub_parquet_is_one_line_pointing_to_smoke(hub_cache, tmp_path):
    result = CliRunner().invoke(main, ["data", "--task", "xlsum", "--source", "remote", "--sizes", "0,2",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error:") and "hf://datasets/csebuetnlp/xlsum@" in line and "SWEEP=smoke" in line


def test_jsquad_defaults_to_v1_1_the_studys_version():
    sources = manifests.load_task("jsquad")["sources"]
    assert sources["train"]["uri"].endswith("/datasets/jsquad-v1.1/train-v1.1.json")
    assert sources["eval"]["uri"].endswith("/datasets/jsquad-v1.1/valid-v1.1.json")
    assert "/main/" not in sources["train"]["uri"]  # pinned to a commit, not a moving branch


@pytest.mark.parametrize("args, expected", [
    (["--seeds", "-1"], "--seeds='-1' is invalid"),
    (["--eval-size", "-1"], "--eval-size='-1' is invalid"),
    (["--eval-size", "0"], "--eval-size='0' is invalid"),
    (["--sizes", "0,2,2"], "size 2 is given twice"),
    (["--seeds", "0,0"], "seed 0 is given twice"),
    (["--sizes", "0,x"], "--sizes='0,x' is invalid"),
    (["--source", "web"], "--source='web' is invalid"),
    (["--seeds-up-to-n", "-4"], "--seeds-up-to-n='-4' is invalid"),
])
def test_bad_settings_are_one_line_errors_naming_the_option(tmp_path, args, expected):
    result = CliRunner().invoke(main, ["data", "--task", "jsquad", "--source", "bundled", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.output
    assert not (tmp_path / "o").exists()


def test_same_id_with_different_text_names_file_and_both_rows(tmp_path):
    from test_data import _custom_task

    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "りんごの色は？", "a": "赤"}',
                                   '{"qid": "t2", "q": "葉の色は？", "a": "緑"}',
                                   '{"qid": "t1", "q": "バナナの色は？", "a": "黄"}'])
    result = CliRunner().invoke(main, ["data", "--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "train.jsonl:3: id 't1' was already used by" in line and "train.jsonl:1" in line and "question" in line


def test_an_exact_repeated_row_is_a_counted_duplicate(tmp_path):
    from test_data import _custom_task

    row = '{"qid": "t1", "q": "りんごの色は？", "a": "赤"}'
    task = _custom_task(tmp_path, [row, '{"qid": "t2", "q": "葉の色は？", "a": "緑"}', row])
    info = prepare(Settings(task=str(task), sizes=[0, 2], seeds=[0]), tmp_path / "o")
    assert info["pool_count"] == 2 and info["dropped"]["duplicate"] == 1


def test_every_size_an_arm_reads_is_prepared_and_extra_seeds_stop_at_seeds_up_to_n(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("""
name: s
data: {source: bundled, eval_size: 8}
sizes: [0, 4, 16]
seeds: [0, 1, 2]
seeds_up_to_n: 4
models: [tiny-gpt-neox]
api_models: [claude-haiku-4.5]
fewshot_local: {enabled: true, shots: [0, 2]}
fewshot_api: {shots: [0, 1, 8]}
""", encoding="utf-8")
    sweep = manifests.load_sweep(sweep_file)
    assert manifests.prepared_sizes(sweep, "jsquad") == [0, 1, 2, 4, 8, 16]
    out = tmp_path / "o"
    from switchpoint.data.settings import settings_for_sweep

    info = prepare(settings_for_sweep("jsquad", "jsquad", sweep), out, sweep)
    assert info["train_sets"] == {"0": [1, 2, 4, 8, 16], "1": [1, 2, 4], "2": [1, 2, 4]}
    assert len(read_train_set(out, 1, 4)) == 4 and read_train_set(out, 0, 1) == read_train_set(out, 0, 16)[:1]
    with pytest.raises(JobError, match="no training set for seed=1, N=8"):
        read_train_set(out, 1, 8)
    # the data folder carries the resolved sweep and its models' entries (no host path)
    carried = resolved_sweep(out)
    assert carried["name"] == "s" and "manifest_path" not in carried and str(tmp_path) not in json.dumps(carried)
    assert model_entry(out, "tiny-gpt-neox")["family"] == "gpt_neox"
    assert api_model_entry(out, "claude-haiku-4.5")["bedrock_model_id"].startswith("anthropic.")


def test_sweep_values_override_order_command_line_wins(tmp_path):
    result = CliRunner().invoke(main, ["data", "--task", "jsquad", "--sweep", "smoke", "--sizes", "0,2", "--seeds", "3",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "o" / "data.json").read_text())
    assert info["sizes"] == [0, 2] and info["seeds"] == [3] and info["eval_count"] == 16  # eval cap from the sweep
    assert (tmp_path / "o" / "sweep.json").exists() and (tmp_path / "o" / "models.json").exists()


def test_a_repeated_eval_id_names_both_rows(tmp_path):
    from test_data import _custom_task

    task = _custom_task(tmp_path, ['{"qid": "t1", "q": "りんごの色は？", "a": "赤"}'])
    (tmp_path / "eval.jsonl").write_text('{"qid": "e1", "q": "空は何色？", "a": "青"}\n'
                                         '{"qid": "e1", "q": "海は何色？", "a": "青"}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["data", "--task", str(task), "--sizes", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "eval.jsonl:2: id 'e1' appears again (first at" in result.output and "eval.jsonl:1)" in result.output
    assert not (tmp_path / "o").exists()


def test_a_parquet_url_is_fetched_and_read(tmp_path):
    """``type: url`` Parquet (a presigned link, a mirror): fetched whole over HTTP, read from memory."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from switchpoint.data.sources import read_source

    _xlsum_parquet(tmp_path / "served", "test.parquet", bundled_xlsum("eval.jsonl")[:7])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/test.parquet"
        rows = read_source({"type": "url", "uri": url, "format": "parquet"}, "eval")
        assert [r.value["id"] for r in rows] == [r["id"] for r in bundled_xlsum("eval.jsonl")[:7]]
        assert rows[0].where == f"{url}#row0"
        with pytest.raises(JobError, match=r"eval source http://127\.0\.0\.1:\d+/missing\.parquet: cannot reach it"):
            read_source({"type": "url", "uri": url.replace("test", "missing"), "format": "parquet"}, "eval")
    finally:
        server.shutdown()
        server.server_close()
