"""The artifact store: one API over a local folder or an ``s3://bucket/prefix``.

Jobs hand artefacts to each other only through the store. A step's output counts as complete only
once ``_SUCCESS`` (a JSON list of its files with sizes) is written, and it is written last, so a job
killed half-way never looks done and a re-run redoes it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from switchpoint.core.contract import JobError

SUCCESS = "_SUCCESS"


def open_store(uri: str | Path) -> "Store":
    """A Store for a local path (``runs``, ``/abs/path``, ``file:///…``) or ``s3://bucket/prefix``."""
    text = str(uri).strip()
    if not text:
        raise JobError("store URI is empty; give a folder such as 'runs' or 's3://bucket/prefix'")
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise JobError(f"store URI {text!r} has no bucket; expected s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a Windows drive letter is not a scheme
        raise JobError(f"store URI {text!r}: unsupported scheme {parsed.scheme!r}; use a folder or s3://bucket/prefix")
    return LocalStore(Path(text))


class Store:
    """Common operations; subclasses provide the five primitives (read/write bytes, list, exists, delete)."""

    uri: str

    def child(self, *parts: str) -> "Store":
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def list(self, rel: str = "") -> list[str]:
        """Relative paths of all files under ``rel`` (recursively), sorted."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    # -- built on the primitives -------------------------------------------------------------
    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_json(self, rel: str):
        return json.loads(self.read_text(rel))

    def write_json(self, rel: str, value) -> None:
        self.write_text(rel, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n")

    def is_complete(self) -> bool:
        return self.exists(SUCCESS)

    def mark_complete(self, files: list[str] | None = None) -> None:
        """Write ``_SUCCESS`` listing the files (all of them under this prefix when not given)."""
        names = sorted(f for f in (files if files is not None else self.list()) if f != SUCCESS)
        self.write_json(SUCCESS, {"files": names})

    def success_files(self) -> list[str]:
        return list(self.read_json(SUCCESS)["files"]) if self.is_complete() else []

    def upload_dir(self, local: Path, *, skip: tuple[str, ...] = (SUCCESS,)) -> list[str]:
        """Copy every file under ``local`` to this prefix; returns the relative paths copied."""
        copied = []
        for path in sorted(Path(local).rglob("*")):
            if path.is_file() and path.name not in skip:
                rel = path.relative_to(local).as_posix()
                self.write_bytes(rel, path.read_bytes())
                copied.append(rel)
        return copied

    def download_dir(self, local: Path, rel: str = "") -> list[str]:
        """Copy every file under this prefix (or ``rel`` below it) into ``local``."""
        local = Path(local)
        got = []
        base = rel.strip("/")
        for name in self.list(base):
            if Path(name).name == SUCCESS:
                continue
            target = local / (name[len(base) + 1:] if base else name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(name))
            got.append(name)
        return got

    def publish(self, local: Path) -> list[str]:
        """Upload a finished job's folder and mark it complete (``_SUCCESS`` last)."""
        if self.is_complete():
            self.delete(SUCCESS)
        files = self.upload_dir(local)
        self.mark_complete(files)
        return files

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

    def child(self, *parts: str) -> "LocalStore":
        return LocalStore(self.path.joinpath(*[p.strip("/") for p in parts if p]))

    def _file(self, rel: str) -> Path:
        return self.path / rel if rel else self.path

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self._file(rel).read_bytes()
        except OSError as err:
            raise JobError(f"store {self.uri}: cannot read {rel!r} ({err.strerror or err})") from err

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self._file(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # atomic: a reader never sees half a file

    def list(self, rel: str = "") -> list[str]:
        root = self._file(rel)
        if not root.exists():
            return []
        if root.is_file():
            return [rel]
        return sorted(p.relative_to(self.path).as_posix() for p in root.rglob("*")
                      if p.is_file() and not p.name.endswith(".part"))

    def exists(self, rel: str) -> bool:
        return self._file(rel).exists()

    def delete(self, rel: str) -> None:
        target = self._file(rel)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


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

    def child(self, *parts: str) -> "S3Store":
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
        new = S3Store(self.bucket, joined)
        new._client = self._client
        return new

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}".strip("/") if self.prefix else rel.strip("/")

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            raise JobError(f"store {self.uri}: {what} failed ({code}: {err.response.get('Error', {}).get('Message', '')})") from err
        except BotoCoreError as err:
            raise JobError(f"store {self.uri}: {what} failed ({err})") from err

    def read_bytes(self, rel: str) -> bytes:
        body = self._call(f"reading {rel!r}", self.client.get_object, Bucket=self.bucket, Key=self._key(rel))
        return body["Body"].read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._call(f"writing {rel!r}", self.client.put_object, Bucket=self.bucket, Key=self._key(rel), Body=data)

    def _iter_keys(self, rel: str) -> Iterator[str]:
        base = self._key(rel)
        prefix = base + "/" if base else ""
        paginator = self.client.get_paginator("list_objects_v2")
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            raise JobError(f"store {self.uri}: listing failed ({code})") from err
        except BotoCoreError as err:
            raise JobError(f"store {self.uri}: listing failed ({err})") from err

    def list(self, rel: str = "") -> list[str]:
        own = len(self.prefix) + 1 if self.prefix else 0
        keys = [k[own:] for k in self._iter_keys(rel)]
        if not keys and rel and self.exists(rel):
            return [rel]
        return sorted(keys)

    def exists(self, rel: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise JobError(f"store {self.uri}: cannot check {rel!r} ({err})") from err

    def delete(self, rel: str) -> None:
        keys = list(self._iter_keys(rel)) if rel else list(self._iter_keys(""))
        if rel and not keys:
            keys = [self._key(rel)]
        for key in keys:
            self._call(f"deleting {key!r}", self.client.delete_object, Bucket=self.bucket, Key=key)
