"""Shared fixtures: offline data folders and a moto server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from switchpoint.data.job import DataSettings, prepare

# The Bedrock fake's fixture (`bedrock_fake`), available to every test module.
pytest_plugins = ["bedrock_fake"]


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path_factory):
    """No test may reach the Hub or real AWS: offline flags, dummy credentials, a private HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    hf_home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    # A developer's own HF_HUB_CACHE would win over HF_HOME, and huggingface_hub read it at import.
    from huggingface_hub import constants

    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # loopback servers (moto, the Bedrock fake) are reached directly
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("SWITCHPOINT_ML_ROOT", raising=False)


def _prepared(tmp_path_factory, task: str, sizes=(0, 2, 4, 8), seeds=(0, 1), eval_size=12) -> Path:
    out = tmp_path_factory.mktemp(f"data-{task}")
    prepare(DataSettings(task=task, sizes=list(sizes), seeds=list(seeds), source="bundled", eval_size=eval_size), out)
    return out


@pytest.fixture(scope="session")
def jsquad_data(tmp_path_factory) -> Path:
    """Bundled JSQuAD prepared for sizes 0,2,4,8 and seeds 0,1 with 12 eval examples."""
    return _prepared(tmp_path_factory, "jsquad")


@pytest.fixture(scope="session")
def xlsum_data(tmp_path_factory) -> Path:
    """Bundled XLSum prepared for sizes 0,2,4,8 and seeds 0,1 with 12 eval examples."""
    return _prepared(tmp_path_factory, "xlsum")


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's server on 127.0.0.1 (random port); yields its URL. Use with `aws_env`."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """Route every boto3 client to moto (S3, SageMaker) and give it dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture
def s3_bucket(aws_env):
    """A fresh bucket on the moto server; yields its name."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
