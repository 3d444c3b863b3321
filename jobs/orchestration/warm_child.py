"""What runs inside a job forked from the warm launcher's server (launcher.py): it becomes
``python -m switchpoint <job> ...`` with the runner's stdout, stderr, umask, environment and
working folder, and a numpy random state of its own. Kept apart so the runner side stays small.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
from typing import Any

# Variables that change between otherwise equal environments and that no package reads at import.
VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})


class _InheritedFd:
    """A file descriptor sent to the forked job (pickled while multiprocessing launches it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple:
        from multiprocessing import reduction

        return (_received, (reduction.DupFd(self.fd),))


def _received(dup: Any) -> int:
    return dup.detach()


def _prepare_child(stdout: int, stderr: int, umask: int) -> None:
    """In the forked child: the runner's stdout, stderr and umask, and numpy's random state of its own."""
    for fd, target in ((stdout, 1), (stderr, 2)):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    os.umask(umask)
    numpy = sys.modules.get("numpy")
    if numpy is not None:  # forked children would all draw the server's sequence
        numpy.random.seed()


def _go(fd: int) -> bool:
    """Wait for the runner's go: one byte once it holds this job; end of file when it gave the job up
    (interrupted while the server forked, or started it as a plain process instead)."""
    try:
        return os.read(fd, 1) == b"1"
    finally:
        os.close(fd)


def _run_job(argv: list[str], env: dict[str, str], cwd: str, stdout: int, stderr: int, go: int,
             umask: int) -> None:
    """In the forked child: once the runner says go, become ``python -m switchpoint <argv>`` and run it
    to its exit. Without the go it returns at once: a job nobody waits for must not run (twice)."""
    if not _go(go):
        return
    _prepare_child(stdout, stderr, umask)
    if hasattr(sys.stdout, "reconfigure"):  # line-buffered on a terminal, as Python sets up a process
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
    # The server started with this environment (launch checks it); what its imports added stays, as it
    # would in a process that imported them; the runner's values are set again all the same.
    os.environ.update(env)
    for name in VOLATILE_ENV - env.keys():
        os.environ.pop(name, None)
    os.chdir(cwd)
    sys.argv = ["-m", *argv]  # runpy sets argv[0] to the package's __main__.py, as `python -m` does
    try:
        # Exactly what `python -m switchpoint` runs (click then names the program as it does there);
        # the command ends in SystemExit(code).
        runpy.run_module("switchpoint", run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # what a plain interpreter runs at exit (the child ends in os._exit)


def _noop() -> None:
    """The readiness probe: returns once the server has imported everything and can fork."""


