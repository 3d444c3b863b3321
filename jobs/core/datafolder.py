"""Reading a data folder written by the ``data`` job: every later job's view of its ``data`` channel.

The layout (``task.json``, ``data.json``, ``eval.jsonl``, ``pool.jsonl``, ``train/seed=S/n=N.jsonl``)
is the data job's output contract; these readers live in the core so that jobs depend on the
contract, not on the data job.
"""

from __future__ import annotations

import json
from pathlib import Path

from switchpoint.core.contract import JobError


def read_jsonl(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise JobError(f"{path}: cannot read ({err.strerror or err}); is this the output of `switchpoint data`?") from err
    out = []
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise JobError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    return out


def load_task_from_data(data_dir: Path) -> dict:
    path = Path(data_dir) / "task.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise JobError(f"{path}: missing; the data channel must be the output of `switchpoint data`") from err


def data_info(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "data.json").read_text(encoding="utf-8"))


def read_eval_set(data_dir: Path) -> list[dict]:
    return read_jsonl(Path(data_dir) / "eval.jsonl")


def read_train_set(data_dir: Path, seed: int, n: int) -> list[dict]:
    """The N training examples of ``seed`` (also the N few-shot shots, in order); [] for N=0."""
    if n == 0:
        return []
    path = Path(data_dir) / "train" / f"seed={seed}" / f"n={n}.jsonl"
    if not path.exists():
        info = data_info(data_dir)
        raise JobError(f"{path}: no training set for seed={seed}, N={n}; the data job prepared sizes {info['sizes']} "
                       f"and seeds {info['seeds']}")
    return read_jsonl(path)
