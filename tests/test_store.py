"""The store: the same code on a local folder and on S3 (moto's server on loopback)."""

from __future__ import annotations

import pytest
from switchpoint.core.contract import JobError
from switchpoint.core.store import LocalStore, S3Store, open_store


def _exercise(store, tmp_path):
    src = tmp_path / "src"
    (src / "train" / "seed=0").mkdir(parents=True)
    (src / "eval.jsonl").write_text('{"id": "1"}\n', encoding="utf-8")
    (src / "train" / "seed=0" / "n=2.jsonl").write_text("日本語\n", encoding="utf-8")
    step = store.child("smoke", "jsquad", "data")
    assert not step.is_complete()
    step.upload_dir(src)
    assert not step.is_complete()  # files alone never count as done
    step.mark_complete()
    assert step.is_complete()
    assert step.success_files() == ["eval.jsonl", "train/seed=0/n=2.jsonl"]
    assert step.list() == ["_SUCCESS", "eval.jsonl", "train/seed=0/n=2.jsonl"]
    dest = tmp_path / "dest"
    step.download_dir(dest)
    assert (dest / "train" / "seed=0" / "n=2.jsonl").read_text(encoding="utf-8") == "日本語\n"
    assert not (dest / "_SUCCESS").exists()
    step.write_json("runs/x.json", {"ok": True})
    assert step.read_json("runs/x.json") == {"ok": True}
    sub = tmp_path / "sub"
    step.download_dir(sub, "train")
    assert (sub / "seed=0" / "n=2.jsonl").exists()
    step.delete("runs")
    assert not step.exists("runs/x.json")
    # publish replaces an old marker: the new one lists the new files, written last
    src2 = tmp_path / "src2"
    src2.mkdir()
    (src2 / "a.txt").write_text("a")
    other = store.child("other")
    other.publish(src2)
    assert other.success_files() == ["a.txt"]


def test_local_folder(tmp_path):
    store = open_store(tmp_path / "runs")
    assert isinstance(store, LocalStore)
    _exercise(store, tmp_path)


def test_s3_on_moto_server(s3_bucket, tmp_path):
    store = open_store(f"s3://{s3_bucket}/team/runs")
    assert isinstance(store, S3Store) and store.uri == f"s3://{s3_bucket}/team/runs"
    _exercise(store, tmp_path)
    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert "team/runs/smoke/jsquad/data/_SUCCESS" in keys


def test_missing_bucket_is_a_clear_error(aws_env):
    store = open_store("s3://no-such-bucket-here/prefix")
    with pytest.raises(JobError, match=r"store s3://no-such-bucket-here/prefix: cannot write 'x' \(NoSuchBucket"):
        store.write_text("x", "y")


@pytest.mark.parametrize("uri,message", [
    ("", "store URI is empty"),
    ("s3://", "has no bucket"),
    ("gs://bucket/prefix", "unsupported scheme 'gs'"),
])
def test_bad_store_uris(uri, message):
    with pytest.raises(JobError, match=message):
        open_store(uri)


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(JobError, match="exists and is not a folder"):
        open_store(tmp_path / "f")
