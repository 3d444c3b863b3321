"""Store failures as one-line sentences that name the URI or path and say what to do.

A store error is nearly always the user's environment (no credentials, a bucket name S3 rejects, a
folder they cannot write, a full disk), so it must read as a sentence, never as a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
import re

from switchpoint.core.contract import JobError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NO_CREDENTIALS = ("no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                   "(or run `aws configure`), or use a local folder as the store")


def check_bucket_name(bucket: str, uri: str) -> None:
    """Reject, before any call, a bucket name S3 would refuse (its general-purpose bucket rules)."""
    why = None
    if not _BUCKET.match(bucket):
        why = "3 to 63 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    elif ".." in bucket or ".-" in bucket or "-." in bucket:
        why = "no two adjacent periods and no period next to a hyphen"
    elif bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        why = "none of the reserved prefixes (xn--, sthree-) or suffixes (-s3alias, --ol-s3, .mrap, --x-s3)"
    else:
        try:
            ipaddress.ip_address(bucket)
            why = "not an IP address"
        except ValueError:
            pass
    if why:
        raise JobError(f"store URI {uri!r}: {bucket!r} is not a valid S3 bucket name (expected {why})")


def os_error(where: str, doing: str, err: OSError) -> JobError:
    """``store X: cannot write 'a/b' (…)`` with a hint for the errors a user can fix."""
    code = err.errno
    reason = err.strerror or str(err)
    if code == errno.ENOSPC:
        hint = "the disk is full; free space or use another store folder"
    elif code == errno.EDQUOT:
        hint = "the disk quota is exceeded; free space or use another store folder"
    elif code in (errno.EACCES, errno.EPERM):
        hint = "permission denied; choose a folder you can write or fix its permissions"
    elif code == errno.EROFS:
        hint = "the file system is read-only; choose another store folder"
    elif code == errno.ENOENT:
        hint = "it does not exist"
    else:
        hint = reason
    path = f" ({err.filename})" if err.filename and str(err.filename) not in where else ""
    return JobError(f"store {where}: cannot {doing}: {hint}{path}")


def aws_error(where: str, doing: str, err: Exception) -> JobError:
    """A botocore/boto3 failure as a sentence (credentials, missing bucket or object, access denied)."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    cause = getattr(err, "__cause__", None) or getattr(err, "__context__", None)
    if isinstance(err, (NoCredentialsError, PartialCredentialsError)) or isinstance(
            cause, (NoCredentialsError, PartialCredentialsError)) or "Unable to locate credentials" in str(err):
        return JobError(f"store {where}: cannot {doing}: {_NO_CREDENTIALS}")
    if isinstance(err, ClientError):
        info = err.response.get("Error", {})
        code, message = str(info.get("Code", "")), info.get("Message", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return JobError(f"store {where}: cannot {doing}: no such object")
        if code == "NoSuchBucket":
            return JobError(f"store {where}: cannot {doing} (NoSuchBucket: the bucket does not exist; create it or fix the URI)")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return JobError(f"store {where}: cannot {doing} ({code}: check the credentials and that they may use "
                            f"this bucket{': ' + message if message else ''})")
        return JobError(f"store {where}: cannot {doing} ({code}: {message})")
    return JobError(f"store {where}: cannot {doing} ({' '.join(str(err).split())})")
