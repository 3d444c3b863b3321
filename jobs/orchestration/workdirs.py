"""The temporary ``/opt/ml``-shaped folders a runner stages a job in: private, owned, never left behind.

A folder is ``$TMPDIR/switchpoint-<step>-XXXX`` with mode 0700 (staged data and adapters are
readable only by the user who runs the job; a docker job runs as that user's uid). It holds an
owner file (host, pid) and is removed when the step ends. A runner that was killed cannot remove
its folder, so every new run first removes the folders whose owner process on this host is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from switchpoint.core.contract import JobError
from switchpoint.orchestration.records import pid_alive

PREFIX = "switchpoint-"
OWNER = ".switchpoint-owner.json"


def remove_stale(tmp_root: Path | None = None) -> list[Path]:
    """Remove staged folders left by runners of this host that no longer exist; returns them."""
    root = Path(tmp_root or tempfile.gettempdir())
    removed = []
    for folder in sorted(root.glob(f"{PREFIX}*")):
        owner_file = folder / OWNER
        try:
            owner = json.loads(owner_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours, or not readable by us: leave it alone
        if owner.get("host") == socket.gethostname() and owner.get("pid") and not pid_alive(owner["pid"]):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def staging_dir(step_name: str) -> Iterator[Path]:
    """A private folder for one step (removed on exit, also after an error or an interrupt)."""
    remove_stale()
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{step_name}-"))  # mkdtemp makes it 0700
    except OSError as err:
        raise JobError(f"cannot create a staging folder in {tempfile.gettempdir()} "
                       f"({err.strerror or err}); set TMPDIR to a writable folder with space") from err
    try:
        try:
            owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
            (folder / OWNER).write_text(owner, encoding="utf-8")
        except OSError as err:
            raise JobError(f"cannot write in the staging folder {folder} ({err.strerror or err}); "
                           "set TMPDIR to a writable folder with space") from err
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
