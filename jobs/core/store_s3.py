"""The store on S3: ``s3://bucket/prefix`` through boto3 (moto's server in tests).

Small objects (markers, records) are single PUT/GETs; files move with boto3's managed transfer
(multipart above ``MULTIPART_BYTES``, parts in parallel). Every failure is a ``JobError`` sentence
naming the URI and the object (``store_errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from switchpoint.core.contract import JobError
from switchpoint.core.store_base import Store
from switchpoint.core.store_errors import aws_error, os_error

MULTIPART_BYTES = 64 * 1024 * 1024  # S3 transfers above this size go in concurrent parts
T = TypeVar("T")


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
            boto3 = import_boto3("an s3:// store")
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


def import_boto3(needed_for: str, extra: str = "aws") -> Any:
    """boto3, or a one-line error naming the extra that brings it (the core install has no boto3)."""
    try:
        import boto3
    except ImportError as err:
        raise JobError(f"{needed_for} needs boto3: pip install 'switchpoint[{extra}]'") from err
    return boto3
