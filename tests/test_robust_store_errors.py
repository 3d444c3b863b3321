"""Store I/O errors are one-line sentences naming the URI or path (moto's server for S3)."""

from __future__ import annotations

import errno
import os
import shutil

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core.contract import JobError
from switchpoint.core.store import S3Store, open_store


def _no_credentials(monkeypatch, tmp_path):
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # the fixtures' session holds credentials
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: "), result.output
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize("args", [
    ["data", "--task", "jsquad", "--sweep", "smoke"],
    ["run", "data", "--sweep", "smoke", "--task", "jsquad"],
    ["status", "--sweep", "smoke", "--task", "jsquad"],
], ids=["data", "run", "status"])
def test_s3_without_credentials_is_a_sentence(args, tmp_path, monkeypatch, s3_bucket):
    _no_credentials(monkeypatch, tmp_path)
    uri = f"s3://{s3_bucket}/runs"
    result = CliRunner().invoke(main, [*args, "--store", uri])
    _one_line_error(result, f"s3://{s3_bucket}/runs", "no AWS credentials found", "AWS_PROFILE")


@pytest.mark.parametrize("bucket", ["My_Bucket", "ab", "a..b", "192.168.1.1", "xn--bucket", "bucket-", "-bucket",
                                    "b" * 64, "my.-bucket", "data-s3alias"])
def test_a_bucket_name_s3_rejects_is_refused_before_any_call(bucket, monkeypatch):
    def no_calls(*args, **kwargs):
        raise AssertionError("an S3 call was made")

    monkeypatch.setattr(S3Store, "client", property(no_calls))
    with pytest.raises(JobError, match=rf"store URI 's3://{bucket}/p': '{bucket}' is not a valid S3 bucket name"):
        open_store(f"s3://{bucket}/p")
    result = CliRunner().invoke(main, ["status", "--sweep", "smoke", "--task", "jsquad", "--store", f"s3://{bucket}/p"])
    _one_line_error(result, "is not a valid S3 bucket name")


def test_valid_bucket_names_pass(monkeypatch):
    for bucket in ("abc", "my-bucket.data", "b" * 63, "1bucket"):
        assert open_store(f"s3://{bucket}/p").uri == f"s3://{bucket}/p"


def test_missing_objects_and_buckets_are_named(tmp_path, s3_bucket, aws_env):
    s3 = open_store(f"s3://{s3_bucket}/p")
    with pytest.raises(JobError, match=rf"^store s3://{s3_bucket}/p: cannot read 'nope.json': no such object$"):
        s3.read_json("nope.json")
    with pytest.raises(JobError, match=rf"^store {tmp_path}: cannot read 'nope.json': it does not exist"):
        open_store(tmp_path).read_json("nope.json")
    with pytest.raises(JobError, match=r"store s3://no-such-bucket-here/p: cannot list the store \(NoSuchBucket"):
        open_store("s3://no-such-bucket-here/p").list()
    assert not s3.exists("nope.json") and s3.list("nothing") == []


def test_an_unwritable_store_folder_is_a_sentence(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: stand in for the kernel's answer
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder / "x.part"))

        monkeypatch.setattr(shutil, "copyfile", refuse)
        monkeypatch.setattr("pathlib.Path.write_bytes", refuse)
    else:
        folder.chmod(0o500)
    store = open_store(folder)
    with pytest.raises(JobError, match=rf"^store {folder}: cannot write 'x': permission denied; choose a folder you can "
                                       "write or fix its permissions"):
        store.write_text("x", "y")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with pytest.raises(JobError, match="cannot write 'a.txt': permission denied"):
        store.publish(src)
    folder.chmod(0o700)


def test_a_full_disk_is_a_sentence_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    store = open_store(tmp_path / "store")
    monkeypatch.setattr("pathlib.Path.write_bytes", full)
    with pytest.raises(JobError, match=rf"^store {tmp_path / 'store'}: cannot write 'a/b.json': the disk is full; "
                                       "free space or use another store folder$"):
        store.write_json("a/b.json", {"x": 1})
    assert not list((tmp_path / "store").rglob("*.part"))


def test_a_full_disk_while_the_data_job_publishes_is_one_line(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("switchpoint.core.store.shutil.copyfile", full)
    result = CliRunner().invoke(main, ["data", "--task", "xlsum", "--sweep", "smoke", "--store", str(tmp_path / "runs")])
    _one_line_error(result, str(tmp_path / "runs"), "the disk is full")
    assert not list((tmp_path / "runs").rglob("_SUCCESS"))


def test_large_files_move_with_managed_multipart_transfers(tmp_path, s3_bucket, monkeypatch):
    """put_file/get_file use boto3's managed transfer: above the threshold a file goes in parts."""
    from boto3.s3.transfer import TransferConfig

    part = 5 * 1024 * 1024  # S3's smallest part
    monkeypatch.setattr(S3Store, "transfer_config", staticmethod(
        lambda: TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=2)))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(part + 1024))
    store = open_store(f"s3://{s3_bucket}/p")
    store.upload_files({"w/big.bin": big})
    assert store.listing()["w/big.bin"]["etag"].endswith("-2")  # two parts
    store.download_dir(tmp_path / "back")
    assert (tmp_path / "back" / "w" / "big.bin").read_bytes() == big.read_bytes()
    marker = store.mark_complete()
    assert marker["files"]["w/big.bin"]["size"] == part + 1024


def test_a_full_disk_while_staging_a_step_is_one_line(tmp_path, monkeypatch):
    """The local runner's temporary folder fills up: a sentence naming the step and the folder."""
    from switchpoint.core import manifests
    from switchpoint.orchestration import runners
    from switchpoint.orchestration.steps import plan_steps

    sweep, task = manifests.load_sweep("smoke"), manifests.load_task("jsquad")
    score = next(s for s in plan_steps(sweep, task) if s.job == "score")
    run = open_store(tmp_path / "run")
    run.write_text("data/eval.jsonl", "{}\n")
    run.write_text("predictions/local/m/predictions.jsonl", "{}\n")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("switchpoint.core.store.shutil.copyfile", full)
    with pytest.raises(JobError, match=r"^store .*/run/data: cannot copy 'eval.jsonl' to .*: the disk is full"):
        runners.run_local(score, run)
    train = next(s for s in plan_steps(sweep, task) if s.job == "train")
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("switchpoint.orchestration.runners.write_hyperparameters", full)
    with pytest.raises(JobError, match=r"^step train-tiny-gpt-neox: cannot stage its inputs in .* \(No space left "
                                       r"on device\); set TMPDIR"):
        runners.run_local(train, run)
    assert not list(tmp_path.glob("switchpoint-*"))
