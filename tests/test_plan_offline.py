"""`plan` on a machine without network whose Hugging Face cache holds the sweep's models and data
(hub-cache replicas under the real ids, ``HF_HUB_OFFLINE=1``): it passes with the real reachability
check, and names what the cache lacks at the pinned revision."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.core import manifests
from switchpoint.orchestration.plan import check_sweep, needed_hosts, reachable
from switchpoint.orchestration.steps import model_entries

sys.path.insert(0, str(Path(__file__).parent / "replicas"))
from specs import SPECS  # noqa: E402

from build import build_one, build_xlsum, corpus, manifest_revisions  # noqa: E402

SWEEPS = ("default", "study")


def _hub_ids(sweep_name: str) -> list[str]:
    entries = model_entries(manifests.load_sweep(sweep_name)).values()
    return [entry["hub_id"] for entry in entries if entry["source"] == "hub"]


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory) -> Path:
    """The study's and the default sweep's models at their pinned revisions, and XL-Sum's Parquet files."""
    cache = tmp_path_factory.mktemp("filled-hub-cache")
    sentences, revisions = corpus(), manifest_revisions()
    for hub_id in sorted({h for name in SWEEPS for h in _hub_ids(name)}):
        build_one(SPECS[hub_id], cache, revisions[hub_id], sentences)
    build_xlsum(cache)
    return cache


@pytest.fixture
def offline_hub(filled_cache, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(filled_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(filled_cache))
    return filled_cache


@pytest.mark.parametrize("sweep_name", SWEEPS)
def test_xlsum_sweeps_pass_plan_offline_from_a_filled_cache_with_the_real_network_check(offline_hub, sweep_name, tmp_path):
    result = CliRunner().invoke(main, ["plan", "--sweep", sweep_name, "--task", "xlsum", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "plan: OK for backend local" in result.output and "PROBLEM" not in result.output
    sweep, task = manifests.load_sweep(sweep_name), manifests.load_task("xlsum")
    for backend in ("local", "docker"):  # docker mounts this cache
        assert needed_hosts(sweep, task, backend=backend) == {}


def test_jsquad_still_needs_its_data_host_when_the_models_are_cached(offline_hub):
    sweep, task = manifests.load_sweep("study"), manifests.load_task("jsquad")
    hosts = needed_hosts(sweep, task)
    assert list(hosts) == ["raw.githubusercontent.com"]  # the JGLUE files; no model needs the Hub
    problems = check_sweep(sweep, task, check=lambda host: host != "raw.githubusercontent.com")[1].problems
    assert len(problems) == 1 and "cannot reach raw.githubusercontent.com" in problems[0]


def test_a_model_cached_at_another_revision_is_named_with_hf_hub_offline(offline_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    other = tmp_path / "other-cache"
    build_xlsum(other)
    qwen = manifests.get_model("qwen2.5-1.5b-instruct")["hub_id"]
    build_one(SPECS[qwen], other, "0" * 40, corpus())  # main of another commit than the pinned one
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(other))
    assert not reachable("huggingface.co")  # HF_HUB_OFFLINE: the jobs would not try the Hub
    problems = check_sweep(manifests.load_sweep("default"), manifests.load_task("xlsum"), check=reachable)[1].problems
    assert len(problems) == 1
    assert problems[0].startswith(f"HF_HUB_OFFLINE is set and this machine's Hugging Face cache lacks model {qwen} "
                                  "at the pinned revision")
    assert "csebuetnlp" not in problems[0]  # the data files are cached


def test_the_data_files_cached_at_another_branch_are_named(offline_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    other = tmp_path / "other-cache"
    build_xlsum(other, revision="main")
    qwen = manifests.get_model("qwen2.5-1.5b-instruct")["hub_id"]
    build_one(SPECS[qwen], other, manifest_revisions()[qwen], corpus())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(other))
    hosts = needed_hosts(manifests.load_sweep("default"), manifests.load_task("xlsum"))
    assert hosts == {"huggingface.co": ["train data csebuetnlp/xlsum", "eval data csebuetnlp/xlsum"]}


@pytest.mark.parametrize("sweep_name", SWEEPS)
def test_plan_offline_on_sagemaker_reads_no_store_and_validates_every_spec(sweep_name, monkeypatch):
    """--offline: no host is tried and the (unreachable) S3 store is not read; every job spec is still
    built and validated with botocore."""
    monkeypatch.setenv("SWITCHPOINT_SAGEMAKER_ROLE", "arn:aws:iam::123456789012:role/switchpoint-sagemaker")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a read would fail
    args = ["plan", "--sweep", sweep_name, "--store", "s3://no-such-bucket/runs", "--backend", "sagemaker",
            "--registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com"]
    result = CliRunner().invoke(main, [*args, "--offline"])
    assert result.exit_code == 0, result.output
    assert result.output.count("sweep " + sweep_name + " / task") == 2  # both tasks: jsquad and xlsum
    assert "plan: OK for backend sagemaker" in result.output
    online = CliRunner().invoke(main, args)  # without --offline the store is read, and cannot be
    assert online.exit_code == 1 and "cannot check '_SUCCESS'" in online.output


def test_a_half_downloaded_sharded_model_is_not_cached(tmp_path, monkeypatch):
    """An interrupted download leaves the index and some shards: the job would fail, so plan names it."""
    import json

    from huggingface_hub import constants
    from switchpoint.orchestration.plan import model_cached

    from build import lay_out

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "1" * 40
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                            "b.weight": "model-00002-of-00002.safetensors"}}
    files = {"config.json": b"{}", "tokenizer_config.json": b"{}", "tokenizer.model": b"spm",
             "model-00001-of-00002.safetensors": b"1", "model.safetensors.index.json": json.dumps(index).encode()}
    repo = tmp_path / "models--org--sharded"
    lay_out(repo, commit, files, None)
    assert not model_cached("org/sharded", commit)
    lay_out(repo, commit, {"model-00002-of-00002.safetensors": b"2"}, None)
    assert model_cached("org/sharded", commit) and model_cached("org/sharded", "main")
    assert not model_cached("org/sharded", "2" * 40)  # another commit: not what the job would load
    (repo / "snapshots" / commit / "tokenizer.model").unlink()
    assert not model_cached("org/sharded", commit)  # no tokenizer file


@pytest.mark.parametrize("index", [b"not json", b"[1, 2]", b'{"weight_map": {}}', b'{"weight_map": {"a": 3}}',
                                   b'{"weight_map": {"a": {"b": 1}}}', b'{"weight_map": {"a": "../../escape.bin"}}'])
def test_an_index_that_is_not_one_counts_as_not_cached(index, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from switchpoint.orchestration.plan import model_cached

    from build import lay_out

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    files = {"config.json": b"{}", "tokenizer_config.json": b"{}", "tokenizer.json": b"{}",
             "model.safetensors.index.json": index}
    lay_out(tmp_path / "models--org--odd", "3" * 40, files, None)
    assert model_cached("org/odd", "3" * 40) is False


@pytest.mark.parametrize(("env", "switch"), [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
                                             ({"TRANSFORMERS_OFFLINE": "yes"}, "TRANSFORMERS_OFFLINE"),
                                             ({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, None), ({}, None)])
def test_offline_is_read_as_huggingface_hub_reads_it(env, switch, monkeypatch):
    from switchpoint.orchestration.plan import hub_offline, offline_switch

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert offline_switch() == switch and hub_offline() is (switch is not None)


def test_the_problem_names_the_offline_switch_that_is_set(offline_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # empty
    problems = check_sweep(manifests.load_sweep("default"), manifests.load_task("xlsum"), check=reachable)[1].problems
    assert len(problems) == 1 and problems[0].startswith("TRANSFORMERS_OFFLINE is set and this machine's")
    assert "or unset TRANSFORMERS_OFFLINE." in problems[0]
