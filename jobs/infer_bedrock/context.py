"""What one run carries between its phases: settings, the model, AWS clients and the durable state."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from switchpoint.core.contract import JobError
from switchpoint.core.store import S3Store
from switchpoint.infer_bedrock.requests import Request, messages_body
from switchpoint.infer_bedrock.settings import Settings
from switchpoint.infer_bedrock.state import State

NAME = "infer-bedrock"


@dataclass
class Context:
    settings: Settings
    task: dict
    api_model: dict
    model_id: str
    max_tokens: int
    region: str | None = None
    bedrock: Any = None
    runtime: Any = None
    work: S3Store | None = None  # batch files: <s3 prefix>/<task>__<api model>/
    state: State = field(default_factory=lambda: State(None))
    problems: list[str] = field(default_factory=list)
    hash_of: dict[str, str] = field(default_factory=dict)  # record id -> request hash, computed once


def log(message: str) -> None:
    click.echo(f"{NAME}: {message}", err=True)


# Polling sleeps through this name so tests can interrupt a run between polls (a "kill").
def sleep(seconds: float) -> None:
    time.sleep(seconds)


def request_hash(model_id: str, request: Request, max_tokens: int) -> str:
    """Identity of a request: same model and body -> same answer (temperature 0) -> pay once."""
    body = json.dumps(messages_body(request, max_tokens), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(f"{model_id}\n{body}".encode()).hexdigest()[:24]


def aws_call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """A control-plane call whose failure stops the run with one line naming what was attempted."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as err:
        info = err.response.get("Error", {})
        raise JobError(f"{what} failed ({info.get('Code')}: {info.get('Message')}); check --role-arn, --s3-prefix, "
                       "the model id and your IAM policy (manifests/iam/README.md)") from err
    except BotoCoreError as err:
        raise JobError(f"{what} failed ({err})") from err
