"""The local runner's warm launcher: a job forked from the warm server keeps the plain process's contract.

One server serves the whole module (it imports torch once, a few seconds); every test compares what a
user sees (exit code, failure file, output, signals) with ``python -m switchpoint`` run as a process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from switchpoint.orchestration import launcher

pytestmark = pytest.mark.skipif(not launcher.enabled(), reason="no fork server on this platform")


def switchpoint(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchpoint", *args]


@pytest.fixture
def ready_server():
    assert launcher.warm_up(["train"]) and launcher.ready(), launcher._SERVER.failed
    return launcher._SERVER


def both(cmd: list[str], capfd) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of ``cmd`` forked warm, then run as a plain process."""
    results = []
    for start in (launcher.launch, subprocess.Popen):
        proc = start(cmd)
        assert isinstance(proc, launcher.WarmJob) == (start is launcher.launch)
        code = proc.wait(timeout=120)
        out, err = capfd.readouterr()
        results.append((code, out, err))
    return results


def test_a_warm_job_prints_what_the_process_prints_to_the_runners_own_stdout(ready_server, capfd):
    capfd.readouterr()
    warm, cold = both(switchpoint("train", "--help"), capfd)
    assert warm == cold and warm[0] == 0 and "Usage: python -m switchpoint train" in warm[1]


def test_a_failing_warm_job_exits_like_the_process_and_writes_the_same_failure(ready_server, tmp_path, capfd):
    roots = {"warm": tmp_path / "warm", "cold": tmp_path / "cold"}
    outcomes = {}
    for how, root in roots.items():
        root.mkdir()
        cmd = switchpoint("score", "--ml-root", str(root))
        proc = launcher.launch(cmd) if how == "warm" else subprocess.Popen(cmd)
        assert isinstance(proc, launcher.WarmJob) == (how == "warm")
        code = proc.wait(timeout=120)
        failure = (root / "output" / "failure").read_text(encoding="utf-8")
        outcomes[how] = (code, failure.replace(str(root), "<root>"),
                         capfd.readouterr().err.replace(str(root), "<root>"))
    assert outcomes["warm"] == outcomes["cold"]
    code, failure, err = outcomes["warm"]
    assert code == 1 and failure.startswith("score: ") and f"error: {failure.strip()}" in err


def _wait_for_a_signal(flag: str, started: int) -> None:
    """A job that blocks until a signal; on Ctrl-C (KeyboardInterrupt) it leaves a file and exits 3."""
    try:
        os.write(started, b"1")  # the runner's side reads this: the job is inside its handler now
        signal.pause()
    except KeyboardInterrupt:
        Path(flag).write_text("interrupted", encoding="utf-8")
        raise SystemExit(3) from None


def _blocking_job(tmp_path: Path, name: str) -> tuple[launcher.WarmJob, Path]:
    flag = tmp_path / name
    read, write = os.pipe()
    try:
        job = launcher.fork(_wait_for_a_signal, (str(flag), launcher._InheritedFd(write)), switchpoint("test-job"))
        os.close(write)
        assert os.read(read, 1) == b"1"  # blocks until the child runs
    finally:
        os.close(read)
    with pytest.raises(subprocess.TimeoutExpired):
        job.wait(timeout=0.05)  # running: wait gives up like Popen.wait
    assert job.poll() is None
    return job, flag


@pytest.mark.parametrize(("stop", "code"), [("terminate", -signal.SIGTERM), ("kill", -signal.SIGKILL)])
def test_a_warm_job_is_terminated_and_killed_with_the_codes_of_a_process(ready_server, tmp_path, stop, code):
    job, _ = _blocking_job(tmp_path, stop)
    getattr(job, stop)()
    assert job.wait(timeout=60) == code and job.returncode == code
    assert ready_server.live == 0  # a finished job no longer holds the server


def test_ctrl_c_reaches_a_warm_job_as_keyboard_interrupt(ready_server, tmp_path):
    """The server ignores SIGINT (a Ctrl-C must not end it); the jobs forked from it must not."""
    job, flag = _blocking_job(tmp_path, "interrupt")
    job.send_signal(signal.SIGINT)
    assert job.wait(timeout=60) == 3 and flag.read_text(encoding="utf-8") == "interrupted"


def test_a_changed_environment_or_the_switch_sends_jobs_to_plain_processes(ready_server, monkeypatch):
    monkeypatch.setenv("HF_HOME", "/elsewhere")  # read at import time: the server's copy would be stale
    proc = launcher.launch(switchpoint("score", "--help"))  # a light job does not wait for a new server
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv(launcher.ENV_SWITCH, "0")
    assert not launcher.enabled() and not launcher.warm_up(["train"])
    proc = launcher.launch(switchpoint("train", "--help"))
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0


def test_other_commands_are_never_forked(ready_server):
    proc = launcher.launch([sys.executable, "-c", "import sys; sys.exit(5)"])
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=60) == 5


def test_a_warm_job_runs_in_the_runners_working_folder(ready_server, tmp_path, monkeypatch):
    (tmp_path / "relative-root").mkdir()
    monkeypatch.chdir(tmp_path)  # after the server started: the job must follow the runner, not the server
    proc = launcher.launch(switchpoint("score", "--ml-root", "relative-root"))
    assert isinstance(proc, launcher.WarmJob) and proc.wait(timeout=120) == 1
    assert (tmp_path / "relative-root" / "output" / "failure").read_text(encoding="utf-8").startswith("score: ")


def _state(pid: int) -> str:
    """A process's state letter from /proc (Z: a zombie, already dead), or "gone"."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return "gone"
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))


def test_a_runner_that_ends_while_the_server_still_imports_takes_the_server_with_it():
    """Else the server would hold the runner's stdout/stderr for seconds (a pipe reading them would wait)."""
    script = ("from multiprocessing import forkserver\n"
              "from switchpoint.orchestration import launcher\n"
              "assert launcher.warm_up(['train'])\n"
              "print(forkserver._forkserver._forkserver_pid, flush=True)\n")  # and exit at once, mid-import
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        server = int(proc.stdout.readline())
        assert proc.wait(timeout=120) == 0  # the runner has exited; its stdout is not read to the end
        assert _state(server) == "gone"


def _report_environment(name: str, out: int) -> None:
    """Writes what the server's environment (not the runner's, passed later by _run_job) holds for ``name``."""
    os.write(out, os.environ.get(name, "<unset>").encode())


def test_a_torch_job_after_an_environment_change_gets_a_server_started_with_it(ready_server, monkeypatch):
    """Packages read HF_HOME and the like at import: the server's own environment must be the runner's."""
    before = ready_server.generation
    monkeypatch.setenv("SWITCHPOINT_TEST_MARK", "changed")
    assert launcher.warm_up(["infer-local"]) and launcher.ready(), ready_server.failed
    assert ready_server.generation == before + 1
    read, write = os.pipe()
    try:
        job = launcher.fork(_report_environment, ("SWITCHPOINT_TEST_MARK", launcher._InheritedFd(write)),
                            switchpoint("test-job"))
        os.close(write)
        assert job.wait(timeout=60) == 0 and os.read(read, 100) == b"changed"
    finally:
        os.close(read)


def test_a_server_that_cannot_start_leaves_jobs_to_plain_processes_and_says_so(monkeypatch, tmp_path, capfd):
    (tmp_path / "broken_for_the_launcher_test.py").write_text("raise RuntimeError('broken on purpose')\n")
    # The server imports with its environment's path; a new environment also means a new server.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(launcher, "PRELOAD", ["broken_for_the_launcher_test"])
    proc = launcher.launch(switchpoint("train", "--help"))
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0
    err = capfd.readouterr().err
    assert err.count("the warm launcher is not available") == 1 and "local jobs run as plain processes" in err
    assert isinstance(launcher.launch(switchpoint("train", "--help")), subprocess.Popen)  # told once
    assert "warm launcher" not in capfd.readouterr().err
