"""Where the train job's adapters live, when one counts as complete, and how one is published.

Each adapter is written to ``seed=S/.n=N.partial/`` and renamed to ``n=N/`` when complete, so a
folder named ``n=N`` is always whole; on restart a complete adapter (all files, same base, same
training set) is skipped and anything else is trained again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from switchpoint.core import layout

ADAPTER_FILES = ("adapter_config.json", "base.json", "train_metrics.json")  # train_metrics.json is written last


def final_dir(adapters_dir: Path, seed: int, n: int) -> Path:
    return Path(adapters_dir) / layout.adapter_dir(seed, n)


def partial_dir(adapters_dir: Path, seed: int, n: int) -> Path:
    return Path(adapters_dir) / f"seed={seed}" / f".n={n}.partial"


def train_set_sha(data_dir: Path, seed: int, n: int) -> str:
    return hashlib.sha256((Path(data_dir) / "train" / f"seed={seed}" / f"n={n}.jsonl").read_bytes()).hexdigest()


def complete_adapter(adapter_dir: Path, fingerprint: str, sha: str) -> bool:
    """An adapter counts as done only if all its files are there and it matches this base and train set.

    Files restored from S3 after a spot stop may be partial, and a checkpoint folder reused with
    other data must not be skipped; both are retrained.
    """
    if not all((adapter_dir / name).exists() for name in ADAPTER_FILES):
        return False
    if not any(adapter_dir.glob("adapter_model.*")):
        return False
    try:
        base_info = json.loads((adapter_dir / "base.json").read_text(encoding="utf-8"))
        metrics = json.loads((adapter_dir / "train_metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return base_info.get("fingerprint") == fingerprint and metrics.get("train_set_sha256") == sha


def record_quantisation(adapter_dir: Path, load_in_4bit: bool, load_in_8bit: bool) -> None:
    """Add to base.json whether the base was quantised, so infer-local can say when it is not."""
    path = Path(adapter_dir) / "base.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info.update(load_in_4bit=bool(load_in_4bit), load_in_8bit=bool(load_in_8bit))
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def publish(tmp: Path, final: Path, metrics: dict[str, Any]) -> None:
    """Write the metrics (the file that marks an adapter complete) and rename the folder into place."""
    (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)  # an incomplete or stale folder from an earlier run
    os.replace(tmp, final)
