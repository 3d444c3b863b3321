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


def test_a_job_whose_server_dies_is_ended_with_it_and_fails_saying_why(ready_server, tmp_path, monkeypatch, capfd):
    """multiprocessing reports 255 when the server goes away; the job itself must not outlive the runner."""
    from multiprocessing import forkserver

    monkeypatch.setenv("SWITCHPOINT_TEST_MARK", "a server of its own")  # the module's server stays whole
    assert launcher.warm_up(["train"]) and launcher.ready(), ready_server.failed
    capfd.readouterr()
    job, _ = _blocking_job(tmp_path, "orphaned")
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
    assert job.wait(timeout=60) == launcher.SERVER_EXIT and job.poll() == launcher.SERVER_EXIT and job.lost_server
    assert _state(job.pid) in ("gone", "Z")  # ended (a zombie only until its new parent reaps it)
    assert ready_server.live == 0 and "server died" in ready_server.failed
    err = capfd.readouterr().err
    assert err.count("the warm launcher's server died while job pid") == 1
    proc = launcher.launch(switchpoint("train", "--help"))  # later jobs run as plain processes, told once
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0
    assert "warm launcher" not in capfd.readouterr().err


def test_a_server_stuck_in_its_imports_is_given_up_once(monkeypatch, tmp_path, capfd):
    from multiprocessing import forkserver

    (tmp_path / "stuck_for_the_launcher_test.py").write_text("import threading\nthreading.Event().wait()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(launcher, "PRELOAD", ["stuck_for_the_launcher_test"])
    monkeypatch.setattr(launcher, "READY_TIMEOUT_S", 0.3)  # read at call time
    capfd.readouterr()
    proc = launcher.launch(switchpoint("train", "--help"))
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0
    assert _state(forkserver._forkserver._forkserver_pid) in ("gone", "Z")  # the stuck server was ended
    err = capfd.readouterr().err
    assert err.count("the warm server was not ready after 0.3 s") == 1
    assert not launcher.ready(timeout=60)  # no second wait: it answers at once
    assert isinstance(launcher.launch(switchpoint("train", "--help")), subprocess.Popen)
    assert "warm" not in capfd.readouterr().err


def test_a_warm_up_that_raises_keeps_the_reason_to_say(monkeypatch, capfd):
    def broken() -> bool:
        raise OSError("no room for a server")

    monkeypatch.setattr(launcher._SERVER, "failed", None)  # put back as it was after the test
    monkeypatch.setattr(launcher._SERVER, "start", broken)
    assert not launcher.warm_up(["train"])
    assert launcher._SERVER.failed == "OSError: no room for a server"
    capfd.readouterr()
    launcher._say_why_cold()
    assert "(OSError: no room for a server)" in capfd.readouterr().err


@pytest.mark.parametrize(("version", "vulnerable"), [
    ((3, 10, 0), True), ((3, 10, 8), True), ((3, 10, 9), False), ((3, 11, 0), True), ((3, 11, 1), False),
    ((3, 12, 0), False), ((3, 9, 18), True),
])
def test_pythons_with_the_forkserver_socket_cve_get_no_warm_launcher(monkeypatch, version, vulnerable):
    monkeypatch.setattr(sys, "version_info", (*version, "final", 0))
    assert launcher._vulnerable_python(sys.version_info) == vulnerable
    if vulnerable:
        assert not launcher.enabled()


def test_an_unknown_switch_value_means_off_and_says_so_once(monkeypatch, capfd):
    capfd.readouterr()
    monkeypatch.setenv(launcher.ENV_SWITCH, "sometimes")
    assert not launcher.enabled() and not launcher.enabled()
    err = capfd.readouterr().err
    assert err.count(f"note: {launcher.ENV_SWITCH}='sometimes' is not one of") == 1
    for value in ("On", "yes", "TRUE"):
        monkeypatch.setenv(launcher.ENV_SWITCH, value)
        assert launcher._switched_on()
    assert capfd.readouterr().err == ""


def _report_child_state(out: int) -> None:
    """In a warm child, after what _run_job does first: its umask and a draw from numpy's global RNG."""
    import numpy

    launcher._prepare_child(os.dup(1), os.dup(2), 0o027)
    mask = os.umask(0)
    os.write(out, f"{mask:o} {numpy.random.random()!r}".encode())


def test_warm_children_get_the_runners_umask_and_numpy_draws_of_their_own(ready_server):
    draws = []
    for _ in range(2):
        read, write = os.pipe()
        try:
            job = launcher.fork(_report_child_state, (launcher._InheritedFd(write),), switchpoint("test-job"))
            os.close(write)
            assert job.wait(timeout=60) == 0
            mask, draw = os.read(read, 100).decode().split()
        finally:
            os.close(read)
        assert mask == "27"
        draws.append(float(draw))
    assert draws[0] != draws[1]  # forked from one server state, they would draw the same number


def test_a_server_that_initialised_cuda_exits_so_jobs_run_plain(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("class cuda:\n    @staticmethod\n    def is_initialized():\n        return True\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", "import switchpoint.orchestration.warm_imports"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3 and "initialised CUDA" in done.stderr
    assert "/dev/dxg" in launcher.GPU_DEVICES  # WSL2's GPU device also keeps the launcher off


def test_a_warm_job_is_given_the_runners_umask_at_launch(monkeypatch):
    sent = []
    monkeypatch.setattr(launcher, "_warm_ready", lambda job: True)
    monkeypatch.setattr(launcher, "fork", lambda target, args, cmd: sent.append((target, args)))
    previous = os.umask(0o027)
    try:
        launcher.launch(switchpoint("score", "--help"))
    finally:
        os.umask(previous)
    assert sent[0][0] is launcher._run_job and sent[0][1][-1] == 0o027


def test_a_forked_job_without_the_runners_go_never_runs(ready_server, tmp_path):
    """If the runner gives a job up while the server forks it (Ctrl-C, or a fork error and a plain
    process instead), the forked child must not run it as well."""
    from switchpoint.orchestration import warm_child

    marker = tmp_path / "ran"
    go_read, go_write = os.pipe()
    args = (["score", "--help"], dict(os.environ), str(tmp_path), launcher._InheritedFd(1), launcher._InheritedFd(2),
            launcher._InheritedFd(go_read), 0o022)
    job = launcher.fork(_touch_after_go, (str(marker), *args), switchpoint("score"))
    os.close(go_read)
    os.close(go_write)  # given up: no go byte
    assert job.wait(timeout=60) == 0 and not marker.exists()
    assert warm_child._run_job.__code__.co_varnames[:6] == ("argv", "env", "cwd", "stdout", "stderr", "go")


def _touch_after_go(marker: str, argv, env, cwd, stdout, stderr, go, umask) -> None:
    """_run_job's go, then a trace of having run instead of the command."""
    from switchpoint.orchestration import warm_child

    if warm_child._go(go):
        open(marker, "w").close()
