"""The artifact store: one API over a local folder or an ``s3://bucket/prefix``.

Jobs hand artefacts to each other only through the store. A step's output counts as complete only
once ``_SUCCESS`` is written, and it is written last, so a job killed half-way never looks done and
a re-run redoes it. The marker does not take its own word: it lists every file with its size (and
sha256 for files under 64 MiB, where that is cheap), and ``is_complete`` is false as soon as a listed
file is missing or has another size. It also carries the step's fingerprint (its inputs' markers and
its resolved settings, see ``switchpoint.orchestration.freshness``) so a stale result is not reused.

Errors (credentials, a bad bucket name, an unwritable folder, a full disk, a missing object) are
``JobError`` sentences naming the URI or path (``switchpoint.core.store_errors``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from switchpoint.core.contract import JobError
from switchpoint.core.store_base import (
    HASH_LIMIT,
    SUCCESS,
    Store,
    file_entry,
    local_files,
)
from switchpoint.core.store_errors import check_bucket_name, os_error
from switchpoint.core.store_s3 import MULTIPART_BYTES, S3Store

__all__ = ["HASH_LIMIT", "MULTIPART_BYTES", "SUCCESS", "LocalStore", "S3Store", "Store", "file_entry", "local_files",
           "open_store"]
T = TypeVar("T")


def open_store(uri: str | Path) -> Store:
    """A Store for a local path (``runs``, ``/abs/path``, ``file:///…``) or ``s3://bucket/prefix``."""
    text = str(uri).strip()
    if not text:
        raise JobError("store URI is empty; give a folder such as 'runs' or 's3://bucket/prefix'")
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise JobError(f"store URI {text!r} has no bucket; expected s3://bucket/prefix")
        check_bucket_name(parsed.netloc, text)
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a Windows drive letter is not a scheme
        raise JobError(f"store URI {text!r}: unsupported scheme {parsed.scheme!r}; use a folder or s3://bucket/prefix")
    return LocalStore(Path(text))


@dataclass
class LocalStore(Store):
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise JobError(f"store {self.path} exists and is not a folder")
        self.uri = str(self.path)

    def child(self, *parts: str) -> LocalStore:
        return LocalStore(self.path.joinpath(*[p.strip("/") for p in parts if p]))

    def _file(self, rel: str) -> Path:
        return self.path / rel if rel else self.path

    def _io(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OSError as err:
            raise os_error(self.uri, doing, err) from err

    def read_bytes(self, rel: str) -> bytes:
        return self._io(f"read {rel!r}", self._file(rel).read_bytes)

    def _atomic(self, rel: str, write: Callable[[Path], Any]) -> None:
        """Write through ``<name>.part`` and rename: a reader never sees half a file."""
        target = self._file(rel)
        tmp = target.with_name(target.name + ".part")

        def go() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                write(tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        self._io(f"write {rel!r}", go)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._atomic(rel, lambda tmp: tmp.write_bytes(data))

    def put_file(self, rel: str, path: Path) -> None:
        self._atomic(rel, lambda tmp: shutil.copyfile(path, tmp))

    def get_file(self, rel: str, path: Path) -> None:
        def go() -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._file(rel), path)

        self._io(f"copy {rel!r} to {path}", go)

    def sizes(self, rel: str = "") -> dict[str, int]:
        root = self._file(rel)
        if not root.exists():
            return {}
        if root.is_file():
            return {rel: root.stat().st_size}
        return {p.relative_to(self.path).as_posix(): p.stat().st_size for p in root.rglob("*")
                if p.is_file() and not p.name.endswith(".part")}

    def exists(self, rel: str) -> bool:
        return self._file(rel).exists()

    def delete(self, rel: str) -> None:
        target = self._file(rel)

        def go() -> None:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

        self._io(f"delete {rel!r}", go)
