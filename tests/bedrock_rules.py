"""What Amazon Bedrock accepts: the request rules the Bedrock fake enforces (botocore's service model,
the API reference and the batch inference user guide), kept apart from the fake's machinery."""

from __future__ import annotations

import re
from typing import Any

MAX_RECORDS = 50_000  # records per batch job (and per input file)
JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
CLIENT_TOKEN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
ANTHROPIC_VERSION = "bedrock-2023-05-31"


def message_text(content: Any) -> str:
    """Text of a Messages/Converse content (a string or a list of text blocks)."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "".join(block.get("text", "") for block in system)


def job_request_problem(body: dict) -> str | None:
    """CreateModelInvocationJob's parameter constraints (botocore's model and the API reference)."""
    name, token = body["jobName"], body.get("clientRequestToken")
    if len(name) > 63 or not JOB_NAME.fullmatch(name):
        return f"jobName {name!r} must be 1-63 characters matching {JOB_NAME.pattern}"
    if not ROLE_ARN.fullmatch(body["roleArn"]):
        return f"roleArn {body['roleArn']!r} is not an IAM role ARN"
    if token is not None and not CLIENT_TOKEN.fullmatch(token):
        return f"clientRequestToken {token!r} does not match {CLIENT_TOKEN.pattern}"
    hours = body.get("timeoutDurationInHours")
    if hours is not None and not 24 <= int(hours) <= 168:
        return f"timeoutDurationInHours {hours} must be between 24 and 168"
    for key, config in (("inputDataConfig", "s3InputDataConfig"), ("outputDataConfig", "s3OutputDataConfig")):
        uri = (body[key].get(config) or {}).get("s3Uri", "")
        if not str(uri).startswith("s3://"):
            return f"{key}.{config}.s3Uri {uri!r} must be an s3:// URI"
    return None


def _turns_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if not isinstance(message, dict) or message.get("role") != expected:
            return f"messages.{i}.role: roles must alternate, starting with user (expected {expected})"
        if not message_text(message.get("content", "")):
            return f"messages.{i}.content: text content blocks must be non-empty"
    return None


def messages_problem(body: dict) -> str | None:
    """Why an Anthropic Messages body (InvokeModel, batch modelInput) is invalid, or None."""
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        return f"anthropic_version must be {ANTHROPIC_VERSION}"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: a positive integer is required"
    if not 0 <= body.get("temperature", 1) <= 1:
        return "temperature: must be between 0 and 1"
    return _turns_problem(body.get("messages"))


def converse_problem(body: dict) -> str | None:
    """Why a Converse body is invalid, or None."""
    config = body.get("inferenceConfig") or {}
    if "maxTokens" in config and (not isinstance(config["maxTokens"], int) or config["maxTokens"] < 1):
        return "inferenceConfig.maxTokens: must be at least 1"
    if not 0 <= config.get("temperature", 1) <= 1:
        return "inferenceConfig.temperature: must be between 0 and 1"
    return _turns_problem(body.get("messages"))
