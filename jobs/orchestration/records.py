"""What the orchestration records of each step in ``runs/<step>.json``, and whether its runner lives.

Every record of a step that is running names the host and the process that runs it and carries a
heartbeat that a background thread renews while the step runs, so ``status`` can tell a running
step from one whose runner crashed or was killed: on this host by the process id, on another host
by the age of the heartbeat.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Self

from switchpoint.core import layout
from switchpoint.core.contract import JobError
from switchpoint.core.store import Store
from switchpoint.orchestration.steps import Step

HEARTBEAT_S = 60.0  # how often a running step's record is renewed
STALE_S = 10 * 60.0  # a record from another host with no heartbeat for this long counts as lost


def record_run(run: Store, step: Step, **fields: Any) -> dict:
    record = {"step": step.name, "job": step.job, "instance_type": step.instance_type, "spot": step.spot,
              "gpu": step.gpu, **fields}
    run.write_json(layout.run_record(step.name), record)
    return record


def read_record(run: Store, step_name: str) -> dict:
    rel = layout.run_record(step_name)
    return run.read_json(rel) if run.exists(rel) else {}


def runner_fields() -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now}


class Heartbeat:
    """Records the step as running, then renews the record's heartbeat until the block ends.

    The thread is stopped and joined before the block's final record is written, so a late beat
    can never turn ``done`` or ``failed`` back into ``running``.
    """

    def __init__(self, run: Store, step: Step, every_s: float = HEARTBEAT_S, **fields: Any) -> None:
        self.run, self.step, self.every_s = run, step, every_s
        self.fields = {**fields, "status": "running", **runner_fields()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{step.name}", daemon=True)

    def __enter__(self) -> Self:
        record_run(self.run, self.step, **self.fields)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self.fields["heartbeat"] = time.time()
            try:
                record_run(self.run, self.step, **self.fields)
            except JobError:  # a store hiccup must not kill the step; the next beat tries again
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def lost_reason(record: dict, now: float | None = None) -> str | None:
    """Why a record that says ``running`` is not (its runner is gone), or None when it may be running."""
    if record.get("status") != "running":
        return None
    host, pid = record.get("host"), record.get("pid")
    if host == socket.gethostname() and pid:
        return None if pid_alive(pid) else f"its runner (pid {pid} on {host}) is gone"
    beat = record.get("heartbeat") or record.get("started")
    if host and beat is not None:
        age = (now if now is not None else time.time()) - float(beat)
        if age > STALE_S:
            return f"no heartbeat from {host} (pid {pid}) for {age / 60:.0f} min"
    return None
