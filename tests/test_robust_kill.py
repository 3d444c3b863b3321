"""Work published as it completes: kills of the train job and of the data step, staged folders."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from switchpoint.core import manifests
from switchpoint.core.store import open_store
from switchpoint.orchestration import runners, workdirs
from switchpoint.orchestration.records import lost_reason, read_record
from switchpoint.orchestration.status import step_status
from switchpoint.orchestration.steps import plan_steps
from switchpoint.orchestration.sweep import run_root, run_sweep

SWEEP = """
name: killme
tasks: [jsquad]
data: {source: bundled, eval_size: 4}
sizes: [0, 2, 4, 8]
seeds: [0, 1]
models: [tiny-gpt-neox]
api_models: []
fewshot_local: {enabled: false}
train: {epochs: 1, batch_size: 2, learning_rate: 0.01, min_steps: 2, lora_r: 4, lora_alpha: 8, lora_dropout: 0.0,
        cutoff_len: 256, instance_type: local}
infer: {engine: hf, batch_size: 8, instance_type: local}
score: {bootstrap: 200, instance_type: local}
"""


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Staged folders go to a folder of this test (so stale-folder clean-up sees only ours)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _sweep(tmp_path: Path) -> dict:
    path = tmp_path / "killme.yaml"
    path.write_text(SWEEP, encoding="utf-8")
    return manifests.load_sweep(path)


class Killed(Exception):
    """Stands for the runner itself being stopped (Ctrl-C, a kill of the sweep)."""


def test_a_killed_train_job_keeps_its_finished_adapters_and_they_are_not_retrained(tmp_path, private_tmp):
    sweep, task = _sweep(tmp_path), manifests.load_task("jsquad")
    store = open_store(tmp_path / "runs")
    run_sweep(sweep, task, store, job="data")
    run = run_root(store, sweep, task)
    train = next(s for s in plan_steps(sweep, task) if s.job == "train")
    first: list[str] = []

    def kill_after_the_first_adapter(adapter: str, proc: subprocess.Popen) -> None:
        first.append(adapter)
        proc.kill()  # the job dies mid-way, and so does its runner
        raise Killed(adapter)

    with pytest.raises(Killed):
        runners.run_local(train, run, poll_s=0.05, on_publish=kill_after_the_first_adapter)
    checkpoints = run.child(train.checkpoints)
    assert not run.child(train.output).is_complete()
    finished = sorted({"/".join(k.split("/")[:3]) for k in checkpoints.list() if k.endswith("/train_metrics.json")})
    assert first[0] in finished and len(finished) < 6  # published while the job ran; not all of them
    for adapter in finished:  # each published adapter is whole
        assert {"adapter_config.json", "base.json", "train_metrics.json"} <= {k.rsplit("/", 1)[1] for k in
                                                                             checkpoints.list(adapter)}
    record = read_record(run, train.name)
    assert record["status"] == "failed" and "Killed" in record["reason"]
    assert not list(private_tmp.glob("switchpoint-*"))  # the staged folder went with the runner
    before = {a: checkpoints.read_bytes(f"{a}/train_metrics.json") for a in finished}

    done = runners.run_local(train, run, poll_s=0.05)
    assert done["status"] == "done" and run.child(train.output).is_complete()
    summary = json.loads(checkpoints.read_text("adapters/train_summary.json"))
    skipped = sorted(f"adapters/seed={a['seed']}/n={a['n']}" for a in summary["adapters"] if a["skipped"])
    assert skipped == finished  # every adapter published before the kill is reused, none trained twice
    assert all(checkpoints.read_bytes(f"{a}/train_metrics.json") == before[a] for a in finished)
    assert len(summary["adapters"]) == 6


def test_staged_folders_are_private_and_removed_and_a_dead_runners_folder_is_cleaned(private_tmp):
    with workdirs.staging_dir("train-x") as folder:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.parent == private_tmp and folder.name.startswith("switchpoint-train-x-")
    assert not folder.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    owners = {"stale": {"host": socket.gethostname(), "pid": int(dead.stdout)},
              "alive": {"host": socket.gethostname(), "pid": os.getpid()},
              "elsewhere": {"host": "another-host", "pid": int(dead.stdout)}}
    for name, owner in owners.items():
        (private_tmp / f"switchpoint-{name}-abc").mkdir()
        (private_tmp / f"switchpoint-{name}-abc" / workdirs.OWNER).write_text(json.dumps(owner), encoding="utf-8")
    (private_tmp / "switchpoint-unowned-abc").mkdir()
    removed = workdirs.remove_stale()
    assert [p.name for p in removed] == ["switchpoint-stale-abc"]
    assert sorted(p.name for p in private_tmp.iterdir()) == ["switchpoint-alive-abc", "switchpoint-elsewhere-abc",
                                                             "switchpoint-unowned-abc"]


def test_a_crash_of_the_data_step_is_recorded_as_failed(tmp_path, monkeypatch, private_tmp):
    from switchpoint.data import job as data_job

    sweep, task = _sweep(tmp_path), manifests.load_task("jsquad")
    store = open_store(tmp_path / "runs")

    def crash(*args, **kwargs):
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(data_job, "prepare", crash)
    with pytest.raises(RuntimeError):
        run_sweep(sweep, task, store, job="data")
    record = read_record(run_root(store, sweep, task), "data")
    assert record["status"] == "failed" and record["reason"] == "RuntimeError: disk controller on fire"
    states = {r["step"]: (r["state"], r["reason"]) for r in step_status(sweep, task, store)}
    assert states["data"] == ("failed", "RuntimeError: disk controller on fire")
    assert not list(private_tmp.glob("switchpoint-*"))


def test_a_killed_data_step_shows_as_killed_not_running(tmp_path, private_tmp):
    """SIGKILL in the middle of the in-process data step: nothing can record it, status still tells."""
    sweep_path = tmp_path / "killme.yaml"
    sweep_path.write_text(SWEEP, encoding="utf-8")
    script = textwrap.dedent(f"""
        import os, signal, tempfile
        tempfile.tempdir = {str(private_tmp)!r}
        from switchpoint.core import manifests
        from switchpoint.core.store import open_store
        from switchpoint.data import job
        from switchpoint.orchestration.sweep import run_sweep
        job.prepare = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        run_sweep(manifests.load_sweep({str(sweep_path)!r}), manifests.load_task("jsquad"),
                  open_store({str(tmp_path / "runs")!r}), job="data")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr
    sweep, task = manifests.load_sweep(sweep_path), manifests.load_task("jsquad")
    store = open_store(tmp_path / "runs")
    record = read_record(run_root(store, sweep, task), "data")
    assert record["status"] == "running" and record["host"] == socket.gethostname() and record["heartbeat"]
    state, reason = next((r["state"], r["reason"]) for r in step_status(sweep, task, store) if r["step"] == "data")
    assert state == "killed" and f"pid {record['pid']}" in reason and "is gone" in reason
    leftover = list(private_tmp.glob("switchpoint-data-*"))
    assert len(leftover) == 1  # a kill cannot clean up: the next run does
    run_sweep(sweep, task, store, job="data")
    assert not leftover[0].exists()
    assert next(r["state"] for r in step_status(sweep, task, store) if r["step"] == "data") == "done"


def test_a_running_record_from_another_host_is_lost_only_when_its_heartbeat_is_old():
    now = time.time()
    record = {"status": "running", "host": "elsewhere", "pid": 1, "heartbeat": now - 30}
    assert lost_reason(record, now) is None
    stale = lost_reason({**record, "heartbeat": now - 3600}, now)
    assert stale == "no heartbeat from elsewhere (pid 1) for 60 min"
    assert lost_reason({**record, "status": "done", "heartbeat": 0}, now) is None
