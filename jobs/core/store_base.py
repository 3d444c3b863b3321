"""The store's common part: the completion marker, folders, and the primitives each store provides.

``_SUCCESS`` lists every file with its size (and sha256 below ``HASH_LIMIT``) and the step's
fingerprint; ``is_complete`` checks the list against the store, never the marker's word alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from switchpoint.core.contract import JobError

SUCCESS = "_SUCCESS"
HASH_LIMIT = 64 * 1024 * 1024  # files below this size get a sha256 in the marker


def file_entry(path: Path) -> dict[str, Any]:
    """A marker's record of one local file: its size, and its sha256 when the file is small enough."""
    size = path.stat().st_size
    entry: dict[str, Any] = {"size": size}
    if size < HASH_LIMIT:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    return entry


def local_files(local: Path, skip: tuple[str, ...] = (SUCCESS,)) -> dict[str, Path]:
    """Relative path -> file of every file under ``local`` (none when it does not exist)."""
    local = Path(local)
    if not local.is_dir():
        return {}
    return {p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file() and p.name not in skip}


class Store:
    """Common operations; subclasses provide the primitives (bytes, files, sizes, exists, delete)."""

    uri: str

    def child(self, *parts: str) -> Store:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def put_file(self, rel: str, path: Path) -> None:
        """Copy one local file to ``rel`` (streamed; multipart on S3)."""
        raise NotImplementedError

    def get_file(self, rel: str, path: Path) -> None:
        """Copy ``rel`` to one local file (streamed; multipart on S3)."""
        raise NotImplementedError

    def sizes(self, rel: str = "") -> dict[str, int]:
        """Size in bytes of every file under ``rel`` (recursively), keyed by path relative to this store."""
        raise NotImplementedError

    def listing(self, rel: str = "") -> dict[str, dict[str, Any]]:
        """What the store knows of each file without reading it: its size (and S3's ETag)."""
        return {name: {"size": size} for name, size in self.sizes(rel).items()}

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    # -- built on the primitives -------------------------------------------------------------
    def list(self, rel: str = "") -> list[str]:
        """Relative paths of all files under ``rel`` (recursively), sorted."""
        return sorted(self.sizes(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_json(self, rel: str):
        try:
            return json.loads(self.read_text(rel))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise JobError(f"store {self.uri}: {rel!r} is not valid JSON ({err})") from err

    def write_json(self, rel: str, value) -> None:
        self.write_text(rel, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n")

    # -- completion ---------------------------------------------------------------------------
    def marker(self) -> dict[str, Any] | None:
        """The parsed ``_SUCCESS`` (files as {name: {size, sha256?}}), or None when there is none.

        A marker from before sizes were recorded (a plain list of names) reads with empty entries:
        its files must exist, their size is not checked.
        """
        if not self.exists(SUCCESS):
            return None
        raw = self.read_json(SUCCESS)
        base = raw if isinstance(raw, dict) else {}
        files = base.get("files", []) if isinstance(raw, dict) else raw
        if isinstance(files, list):
            files = {str(name): {} for name in files}
        return {**base, "files": files}

    def incomplete_reason(self, marker: dict[str, Any] | None = None) -> str | None:
        """Why this prefix is not complete (no marker, a listed file missing or resized), or None."""
        marker = marker if marker is not None else self.marker()
        if marker is None:
            return f"no {SUCCESS}"
        present = self.sizes()
        for name, entry in sorted(marker["files"].items()):
            if name not in present:
                return f"{name} is listed in {SUCCESS} but missing"
            if "size" in entry and present[name] != entry["size"]:
                return f"{name} is {present[name]} bytes, {SUCCESS} recorded {entry['size']}"
        return None

    def is_complete(self) -> bool:
        return self.incomplete_reason() is None

    def mark_complete(self, files: list[str] | dict[str, dict] | None = None,
                      fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``_SUCCESS`` (last) listing the files with their sizes, and the step's fingerprint.

        ``files`` may carry entries already (from ``file_entry`` of the uploaded files); names alone
        get their sizes from the store, and all of them (under this prefix) are taken when not given.
        Every listed file must be in the store with its size, else nothing is marked.
        """
        listed = self.listing()
        if files is None:
            files = [f for f in listed if f != SUCCESS]
        entries = {name: listed.get(name, {}) for name in files} if isinstance(files, list) else dict(files)
        for name, entry in entries.items():
            found = listed.get(name, {}).get("size")
            if found is None or found != entry.get("size"):
                raise JobError(f"store {self.uri}: cannot mark complete: {name} is not in the store with "
                               f"{entry.get('size')} bytes (found {found})")
        marker = {"files": {k: entries[k] for k in sorted(entries) if k != SUCCESS}}
        if fingerprint is not None:
            marker["fingerprint"] = fingerprint
        self.write_json(SUCCESS, marker)
        return marker

    def success_files(self) -> list[str]:
        marker = self.marker() if self.is_complete() else None
        return sorted(marker["files"]) if marker else []

    def marker_digest(self, exclude: tuple[str, ...] = ()) -> str | None:
        """sha256 of the marker's files (names, sizes, hashes), leaving out ``exclude``: the identity of
        this output as a later step sees it. None when there is no marker."""
        marker = self.marker()
        if marker is None:
            return None
        files = {k: v for k, v in marker["files"].items() if k not in exclude}
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()

    # -- folders ------------------------------------------------------------------------------
    def upload_files(self, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Copy local files to their relative paths here; returns their marker entries."""
        entries = {}
        for rel, path in files.items():
            entries[rel] = file_entry(path)
            self.put_file(rel, path)
        return entries

    def upload_dir(self, local: Path, *, skip: tuple[str, ...] = (SUCCESS,)) -> list[str]:
        """Copy every file under ``local`` to this prefix; returns the relative paths copied."""
        return list(self.upload_files(local_files(local, skip)))

    def download_dir(self, local: Path, rel: str = "") -> list[str]:
        """Copy every file under this prefix (or ``rel`` below it) into ``local``."""
        base = rel.strip("/")
        names = [n for n in self.list(base) if Path(n).name != SUCCESS]
        for name in names:
            self.get_file(name, Path(local) / (name[len(base) + 1:] if base else name))
        return names

    def download_files(self, local: Path, names: list[str]) -> list[str]:
        """Copy the named files (those present) into ``local`` at the same relative paths."""
        present = self.sizes()
        got = [n for n in names if n in present]
        for name in got:
            self.get_file(name, Path(local) / name)
        return got

    def publish(self, local: Path, fingerprint: dict[str, Any] | None = None) -> list[str]:
        """Upload a finished job's folder and mark it complete (``_SUCCESS`` last)."""
        if self.exists(SUCCESS):
            self.delete(SUCCESS)
        entries = self.upload_files(local_files(local))
        self.mark_complete(entries, fingerprint)
        return list(entries)

    def __str__(self) -> str:
        return self.uri
