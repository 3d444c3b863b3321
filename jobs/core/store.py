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

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from switchpoint.core.contract import JobError
from switchpoint.core.store_errors import aws_error, check_bucket_name, os_error

SUCCESS = "_SUCCESS"
HASH_LIMIT = 64 * 1024 * 1024  # files below this size get a sha256 in the marker
MULTIPART_BYTES = 64 * 1024 * 1024  # S3 transfers above this size go in concurrent parts
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
        files = raw.get("files", []) if isinstance(raw, dict) else []
        if isinstance(files, list):
            files = {str(name): {} for name in files}
        return {**raw, "files": files}

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


@dataclass
class S3Store(Store):
    bucket: str
    prefix: str

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            try:
                import boto3
            except ImportError as err:  # the core install has no boto3; the aws extra does
                raise JobError("an s3:// store needs boto3: pip install 'switchpoint[aws]'") from err
            # boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 (moto's server in tests).
            self._client = boto3.client("s3")
        return self._client

    def child(self, *parts: str) -> S3Store:
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
        new = S3Store(self.bucket, joined)
        new._client = self._client
        return new

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}".strip("/") if self.prefix else rel.strip("/")

    def _call(self, doing: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """Run one S3 call; every failure becomes a sentence naming this store and the object."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError, Boto3Error) as err:
            raise aws_error(self.uri, doing, err) from err
        except OSError as err:  # the local side of a download/upload (disk full, permissions)
            raise os_error(self.uri, doing, err) from err

    def read_bytes(self, rel: str) -> bytes:
        body = self._call(f"read {rel!r}", self.client.get_object, Bucket=self.bucket, Key=self._key(rel))
        return self._call(f"read {rel!r}", body["Body"].read)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._call(f"write {rel!r}", self.client.put_object, Bucket=self.bucket, Key=self._key(rel), Body=data)

    @staticmethod
    def transfer_config():
        """boto3's managed transfer: multipart above MULTIPART_BYTES, parts moved concurrently."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                              max_concurrency=8, use_threads=True)

    def put_file(self, rel: str, path: Path) -> None:
        self._call(f"write {rel!r}", self.client.upload_file, Filename=str(path), Bucket=self.bucket,
                   Key=self._key(rel), Config=self.transfer_config())

    def get_file(self, rel: str, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._call(f"read {rel!r} into {path}", self.client.download_file, Bucket=self.bucket, Key=self._key(rel),
                   Filename=str(path), Config=self.transfer_config())

    def _objects(self, rel: str) -> Iterator[dict]:
        base = self._key(rel)
        prefix = base + "/" if base else ""

        def pages() -> list[dict]:
            paginator = self.client.get_paginator("list_objects_v2")
            return [obj for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for obj in page.get("Contents", [])]

        yield from self._call("list the store", pages)

    def listing(self, rel: str = "") -> dict[str, dict[str, Any]]:
        own = len(self.prefix) + 1 if self.prefix else 0
        found = {obj["Key"][own:]: {"size": int(obj["Size"]), "etag": str(obj.get("ETag", "")).strip('"')}
                 for obj in self._objects(rel)}
        if not found and rel:
            head = self._head(rel)
            if head is not None:
                return {rel: {"size": int(head["ContentLength"]), "etag": str(head.get("ETag", "")).strip('"')}}
        return found

    def sizes(self, rel: str = "") -> dict[str, int]:
        return {name: entry["size"] for name, entry in self.listing(rel).items()}

    def _head(self, rel: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self._call(f"check {rel!r}", self._raw_head, rel=rel)
        except JobError as err:
            if isinstance(err.__cause__, ClientError) and \
                    err.__cause__.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _raw_head(self, rel: str) -> dict:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(rel))

    def exists(self, rel: str) -> bool:
        return self._head(rel) is not None

    def delete(self, rel: str) -> None:
        own = len(self.prefix) + 1 if self.prefix else 0
        keys = [obj["Key"] for obj in self._objects(rel)]
        if rel and not keys:
            keys = [self._key(rel)]
        for key in keys:
            self._call(f"delete {key[own:]!r}", self.client.delete_object, Bucket=self.bucket, Key=key)
