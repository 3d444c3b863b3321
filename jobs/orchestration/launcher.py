"""The local runner's warm launcher: jobs forked from a server that has imported torch once.

A local step used to start as ``python -m switchpoint <job> ...``, and each torch job paid ~3.4 s
of imports (torch, transformers, peft) before doing any work; the smoke sweep pays it in train and
again in infer-local. Here a multiprocessing ``forkserver`` imports those once (``warm_imports``),
started early in a sweep (while the data step runs), and each job is a child forked from it that
runs the very same click command, under the same contract as the plain process:

- the same argv (``sys.argv`` too, which the train job's multi-GPU relaunch re-uses);
- the runner's environment and working folder *at launch*: the server's environment is fixed when
  it starts, and packages read some variables (``HF_HOME``, ``HF_HUB_OFFLINE``) at import time, so
  a job runs warm only on a server started with the runner's current environment (a torch job
  restarts the server for a changed one); the environment is passed and set in the child as well;
- the runner's stdout and stderr at launch (passed as file descriptors);
- its exit code (a ``SystemExit`` code, 1 for an uncaught exception, ``-N`` for a signal), so the
  ``output/failure`` file and its reason work as before; ``terminate``/``kill``/``wait``/``poll``
  as on a ``subprocess.Popen``; Ctrl-C reaches the job as ``KeyboardInterrupt`` (the server
  itself ignores SIGINT);
- torch's threads are set by the job itself from the cores it may use (``--threads``), as before;
- the runner's umask, and numpy's global random state drawn afresh (a forked child would otherwise
  share the server's).

Two differences remain, by design: a warm job's stdin is ``/dev/null`` (multiprocessing sets it so;
no job reads stdin), and the server holds the code as it was when the sweep started it, so an edit
to the package made mid-sweep is seen only by plain processes. If the server dies while a job runs,
the job is ended too (it would otherwise outlive the runner, which cannot learn its exit code) and
fails with code 255; the reason is said once on stderr, and later jobs run as plain processes.

Plain ``subprocess.Popen`` stays: for docker and SageMaker (other code paths), off Linux, on a
machine with a GPU driver (see ``enabled``), on a Python whose forkserver socket any local user
could use (CVE-2022-42919: 3.10.0-3.10.8 and 3.11.0), with ``SWITCHPOINT_WARM_LAUNCHER=0`` (or any
value that is not a yes or a no: a note says so once), for a light job
(score, report) when no warm server is ready (waiting for torch's imports would cost it more than
it saves), whenever the server cannot start or fork, and after a server was not ready within
``READY_TIMEOUT_S`` (it is ended; the reason is said once).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import threading
from typing import Any

from switchpoint.orchestration.warm_child import (  # noqa: F401 - _prepare_child: for the tests
    VOLATILE_ENV,
    _InheritedFd,
    _noop,
    _prepare_child,
    _run_job,
)

ENV_SWITCH = "SWITCHPOINT_WARM_LAUNCHER"  # "0" runs every local job as a plain subprocess
TORCH_JOBS = frozenset({"train", "infer-local"})  # jobs that import torch: worth waiting for the server
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA's, AMD ROCm's and WSL2's GPU devices
READY_TIMEOUT_S = 120.0  # a server not ready by then is ended (its jobs start as plain processes)
END_WAIT_S = 5.0  # how long a job orphaned by a dead server has to end on SIGTERM before SIGKILL
SERVER_EXIT = 255  # what multiprocessing reports for a forked child whose server went away
SWITCH_ON = frozenset({"1", "true", "yes", "on"})
SWITCH_OFF = frozenset({"0", "false", "no", "off"})
PRELOAD = ["switchpoint.orchestration.warm_imports", "switchpoint.orchestration.launcher"]

__all__ = ["ENV_SWITCH", "TORCH_JOBS", "WarmJob", "enabled", "fork", "launch", "ready", "warm_up"]


def enabled() -> bool:
    """Warm launches are on unless switched off, on Linux where a fork server exists, and on CPU machines.

    With a GPU driver present they stay off: a package that asks CUDA for its devices while the server
    imports it would leave every forked job unable to use CUDA, and a GPU job runs long enough for
    3 s of imports not to matter.
    """
    if not _switched_on() or _vulnerable_python(sys.version_info):
        return False
    if any(os.path.exists(device) for device in GPU_DEVICES):
        return False
    return sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods()


_SWITCH_NOTED: set[str] = set()  # unknown switch values already told to the user


def _switched_on() -> bool:
    """The switch's value; one that is neither a yes nor a no means off, and says so once."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value in SWITCH_ON or value in SWITCH_OFF:
        return value in SWITCH_ON
    if value not in _SWITCH_NOTED:
        _SWITCH_NOTED.add(value)
        known = ", ".join(sorted(SWITCH_ON | SWITCH_OFF))
        print(f"note: {ENV_SWITCH}={os.environ[ENV_SWITCH]!r} is not one of {known}; the warm launcher stays off",
              file=sys.stderr)
    return False


def _vulnerable_python(version: tuple) -> bool:
    """CVE-2022-42919: on these versions any local user can ask the forkserver to run code as us."""
    return tuple(version[:3]) < (3, 10, 9) or tuple(version[:3]) == (3, 11, 0)


# --- the runner side ---------------------------------------------------------------------------
class WarmJob:
    """A job forked from the server, with the parts of ``subprocess.Popen`` the runners use."""

    def __init__(self, process: Any, args: list[str], pidfd: int | None = None) -> None:
        self._process = process
        self.args = args
        self.pid: int = process.pid
        self._pidfd = pidfd  # the job itself, not a pid that could be reused once it is gone
        self.returncode: int | None = None
        self.lost_server = False  # ended because the server died under it (the runner says so)

    def poll(self) -> int | None:
        if self.returncode is None and self._process.exitcode is not None:
            code = self._process.exitcode
            if code == SERVER_EXIT and self._alive():  # the server died, not the job: end it too
                self._end()
                self.lost_server = True
                _SERVER.died(self.pid)
            self.returncode = code
            _SERVER.finished()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode

    def _alive(self) -> bool:
        if self._pidfd is not None:
            return not _exited(self._pidfd, 0)
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, PermissionError):  # gone (a PermissionError: the pid was reused)
            return False
        return True

    def _signal(self, sig: int) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _end(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within END_WAIT_S (at once without a pidfd to wait on)."""
        self._signal(signal.SIGTERM)
        if self._pidfd is not None and _exited(self._pidfd, END_WAIT_S):
            return
        self._signal(signal.SIGKILL)
        if self._pidfd is not None:
            _exited(self._pidfd, END_WAIT_S)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._process.join(timeout)
        code = self.poll()
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self._signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _exited(pidfd: int, timeout: float) -> bool:
    """Whether the process behind ``pidfd`` has ended (a pidfd turns readable then), waiting up to ``timeout``."""
    poller = select.poll()  # not select.select: a runner with many files open has fds past FD_SETSIZE
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class _Server:
    """The one fork server of this process, the environment it started with, and its readiness."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.env: dict[str, str] | None = None
        self.ready = threading.Event()
        self.failed: str | None = None
        self.live = 0  # warm jobs still running (the server is never restarted under them)
        self.end_registered = False  # whether _end_server is registered
        self.generation = 0  # which server the probe's answer is about
        self.reported: str | None = None  # the failure last told to the user

    def usable_now(self) -> bool:
        return self.env == _environment() and self.ready.is_set() and self.failed is None

    def start(self) -> bool:
        """Start (or restart, for a changed environment) the server; False when it cannot be."""
        from multiprocessing import forkserver

        with self.lock:
            env = _environment()
            if self.env == env:  # started with this environment (a failure stays one)
                return self.failed is None
            if self.live:
                return False  # another environment's jobs still run on the current server
            if self.env is not None:
                stop = getattr(forkserver._forkserver, "_stop", None)
                if stop is None:
                    return False
                _end_server(reap=False)  # at once, even while it still imports (stop then reaps it)
                stop()
            self.env, self.failed = env, None
            self.generation += 1
            self.ready = threading.Event()  # a probe of the old server sets only its own
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            try:
                forkserver.ensure_running()  # spawns the server with this environment; it imports in the background
                if not self.end_registered:
                    atexit.register(_end_server)
                    self.end_registered = True
            except Exception as err:  # noqa: BLE001 - no server: jobs run as plain processes
                self.failed = f"{type(err).__name__}: {err}"
                self.ready.set()
                return False
            threading.Thread(target=self._probe, args=(context, self.generation, self.ready),
                             name="warm-launcher-probe", daemon=True).start()
            return True

    def _probe(self, context: Any, generation: int, ready: threading.Event) -> None:
        failed = None
        try:
            probe = context.Process(target=_noop, name="switchpoint-warm-probe")
            probe.start()  # blocks until the server has imported everything and forked
            probe.join()
            if probe.exitcode != 0:
                failed = f"the probe exited with code {probe.exitcode}"
        except Exception as err:  # noqa: BLE001 - any failure means: run jobs as plain processes
            failed = f"{type(err).__name__}: {err}"
        finally:
            with self.lock:
                if generation == self.generation and self.failed is None:  # not replaced nor given up meanwhile
                    self.failed = failed
            ready.set()

    def finished(self) -> None:
        with self.lock:
            self.live = max(0, self.live - 1)

    def died(self, pid: int) -> None:
        """The server went away under a running job (ended now, pid ``pid``): said at once, jobs run plain."""
        with self.lock:
            self.failed = (f"the warm launcher's server died while job pid {pid} ran; "
                           f"that job was ended and fails with code {SERVER_EXIT}")
        _say_why_cold()

    def give_up(self, generation: int, waited: float) -> None:
        """A server not ready after ``waited`` s (stuck in its imports): ended, so later jobs do not wait again."""
        with self.lock:
            if generation != self.generation or self.ready.is_set():
                return  # another server by now, or this one became ready meanwhile
            self.failed = f"the warm server was not ready after {waited:g} s"
            _end_server(reap=False)  # forkserver's _stop reaps it on a restart, _end_server at exit
            self.ready.set()  # the other jobs waiting for it go on at once


def _end_server(reap: bool = True) -> None:
    """At the runner's exit: end the server now. Left alone it would finish its imports first and then
    tear torch down, holding the runner's stdout and stderr meanwhile (a pipe reading them waits)."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
            if reap:  # gone before this process is (a restart leaves the reaping to forkserver's _stop)
                os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _environment() -> dict[str, str]:
    """This process's environment as far as it matters to a server's imports."""
    return {k: v for k, v in os.environ.items() if k not in VOLATILE_ENV}


_SERVER = _Server()


def warm_up(jobs: list[str] | tuple[str, ...] = ()) -> bool:
    """Start the server in the background when a torch job is coming; True when it is (being) started."""
    if not enabled() or not TORCH_JOBS.intersection(jobs):
        return False
    try:
        return _SERVER.start()
    except Exception as err:  # noqa: BLE001 - a server that cannot start leaves the plain launcher in place
        with _SERVER.lock:
            _SERVER.failed = f"{type(err).__name__}: {err}"
        return False


def ready(timeout: float | None = None) -> bool:
    """Wait until a started server has imported everything; True when jobs can be forked from it now.

    A server not ready within ``timeout`` (``READY_TIMEOUT_S`` by default) is ended and its failure kept,
    so the next jobs run as plain processes at once instead of each waiting as long again."""
    with _SERVER.lock:
        started, event, generation = _SERVER.env is not None, _SERVER.ready, _SERVER.generation
    if not started:
        return False
    waited = READY_TIMEOUT_S if timeout is None else timeout
    if not event.wait(waited):
        _SERVER.give_up(generation, waited)
    return _SERVER.usable_now()


def _warm_ready(job: str) -> bool:
    """Whether ``job`` should run warm now: a torch job waits for the server; a light one only uses a ready one."""
    if not enabled():
        return False
    if _SERVER.usable_now():
        return True
    if job not in TORCH_JOBS or not warm_up([job]):
        return False
    return ready()


def fork(target: Any, args: tuple, cmd: list[str]) -> WarmJob:
    """Run ``target(*args)`` in a child forked from the (ready) server; ``cmd`` names it in errors."""
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("forkserver")
    process = context.Process(target=target, args=args, name=f"switchpoint-{cmd[3] if len(cmd) > 3 else 'job'}")
    with _SERVER.lock:
        _SERVER.live += 1
    try:
        process.start()
    except BaseException:
        _SERVER.finished()
        raise
    try:
        pidfd: int | None = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # an older kernel or Python: signals and liveness go by pid
        pidfd = None
    return WarmJob(process, cmd, pidfd)


def launch(cmd: list[str]) -> subprocess.Popen | WarmJob:
    """Start ``cmd`` (``python -m switchpoint <job> ...``) forked from the warm server, else as ``subprocess.Popen``."""
    is_job = len(cmd) > 3 and cmd[:3] == [sys.executable, "-m", "switchpoint"]
    if not is_job or not _warm_ready(cmd[3]):
        _say_why_cold()
        return subprocess.Popen(cmd)
    go_read, go_write = os.pipe()  # the child runs only once this runner holds it (warm_child._go)
    try:
        args = (cmd[3:], dict(os.environ), os.getcwd(), _InheritedFd(1), _InheritedFd(2), _InheritedFd(go_read),
                _umask())
        job = fork(_run_job, args, cmd)
        os.write(go_write, b"1")
        return job
    except Exception as err:  # noqa: BLE001 - the server went away: this job runs as a plain process
        _SERVER.failed = f"the server could not fork a job ({type(err).__name__}: {err})"
        _say_why_cold()
        return subprocess.Popen(cmd)  # a child forked meanwhile gets no go (the pipe closes) and never runs
    finally:
        os.close(go_read)
        os.close(go_write)


def _umask() -> int:
    """The runner's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _say_why_cold() -> None:
    """Once per failure: the jobs still run, each paying its own imports, and the user learns why."""
    failed = _SERVER.failed
    if failed and failed != _SERVER.reported:
        _SERVER.reported = failed
        print(f"note: the warm launcher is not available ({failed}); local jobs run as plain processes "
              f"(set {ENV_SWITCH}=0 to say so)", file=sys.stderr)
