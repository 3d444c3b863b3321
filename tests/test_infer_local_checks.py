"""infer-local fails early: every bad input that needs no model is a one-line error before the base
loads, with no predictions written; engine choice per architecture; the 4-bit notice; stop strings
tested on the newest tokens only."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import JobError
from switchpoint.core.modeling import usable_cores
from switchpoint.infer_local import engines
from switchpoint.infer_local.hf_engine import StopWatch
from switchpoint.infer_local.job import plan
from switchpoint.infer_local.settings import Settings

MODEL = "tiny-gpt-neox"


@pytest.fixture(scope="module")
def adapter(jsquad_data, tmp_path_factory) -> Path:
    """One real adapter (seed=0, N=2) of the tiny GPT-NeoX, in train's layout."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("one-adapter")
    base = modeling.load_base(manifests.get_model(MODEL), jsquad_data)
    where = root / "seed=0" / "n=2"
    get_peft_model(base.model, LoraConfig(r=4, target_modules=base.entry["lora_target_modules"])).save_pretrained(where)
    modeling.write_base_info(where, base)
    return root


def run_cli(root: Path, data: Path, adapters: Path, *args: str):
    from switchpoint.cli import main

    root.mkdir(parents=True, exist_ok=True)
    loads = modeling.BASE_MODEL_LOADS
    result = CliRunner().invoke(main, ["infer-local", "--model", MODEL, "--data", str(data), "--adapters", str(adapters),
                                       "--seeds", "0", "--sizes", "0,2", "--ml-root", str(root), *args])
    return result, modeling.BASE_MODEL_LOADS - loads


def _truncate(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _corrupt_config(folder: Path) -> None:
    (folder / "adapter_config.json").write_text('{"r": 4, "target_modules": ["query_key_value"', encoding="utf-8")


def _foreign_targets(folder: Path) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj", "v_proj"]}))


@pytest.mark.parametrize("damage, expected", [
    (lambda f: f.joinpath("adapter_model.safetensors").unlink(), "n=2/adapter_model.safetensors: missing"),
    (_truncate, "n=2/adapter_model.safetensors: truncated"),
    (lambda f: f.joinpath("adapter_model.safetensors").write_bytes(b"\x05"), "adapter_model.safetensors: not a readable"),
    (_corrupt_config, "n=2/adapter_config.json: not valid JSON"),
    (lambda f: f.joinpath("adapter_config.json").write_text("[4]"), "adapter_config.json: expected a peft LoRA config"),
    (_foreign_targets, "adapter_config.json: LoRA target module(s) q_proj, v_proj not in model 'tiny-gpt-neox'"),
    (lambda f: f.joinpath("base.json").write_text("{"), "n=2/base.json: missing or unreadable"),
])
def test_a_damaged_adapter_fails_in_one_line_before_the_base_loads(jsquad_data, adapter, tmp_path, damage, expected):
    adapters = tmp_path / "adapters"
    shutil.copytree(adapter, adapters)
    damage(adapters / "seed=0" / "n=2")
    result, loads = run_cli(tmp_path / "ml", jsquad_data, adapters)
    assert result.exit_code == 1 and loads == 0
    reason = (tmp_path / "ml" / "output" / "failure").read_text()
    assert expected in reason and reason.count("\n") == 1, reason
    assert not (tmp_path / "ml" / "processing" / "output").exists()


@pytest.mark.parametrize("args, expected", [
    (["--max-new-tokens", "-3"], "--max-new-tokens='-3' is invalid: Input should be greater than or equal to 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens='0' is invalid"),
    (["--seeds", "-1"], "--seeds='-1' is invalid"),
    (["--batch-size", "0"], "--batch-size='0' is invalid"),
    (["--threads", "0"], "--threads='0' is invalid"),
    (["--arms", "finetune,zero-shot"], "--arms='finetune,zero-shot' is invalid"),
    (["--arms", ""], "--arms='' is invalid"),
    (["--engine", "tgi"], "--engine='tgi' is invalid"),
    (["--engine", "vllm"], "--engine vllm: vLLM does not serve LoRA adapters for GPTNeoXForCausalLM"),
    (["--load-in-4bit", "maybe"], "--load-in-4bit='maybe' is invalid"),
    (["--sizes", "0,16"], "--sizes [16]: the data folder"),
])
def test_bad_options_fail_in_one_line_before_the_base_loads(jsquad_data, adapter, tmp_path, args, expected):
    result, loads = run_cli(tmp_path / "ml", jsquad_data, adapter, *args)
    assert result.exit_code == 1 and loads == 0
    reason = (tmp_path / "ml" / "output" / "failure").read_text()
    assert expected in reason and reason.count("\n") == 1, reason
    assert not (tmp_path / "ml" / "processing" / "output").exists()


def test_load_in_4bit_without_a_gpu_is_refused_before_the_base_loads(jsquad_data, adapter, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    result, loads = run_cli(tmp_path / "ml", jsquad_data, adapter, "--load-in-4bit", "true")
    assert result.exit_code == 1 and loads == 0
    assert "--load-in-4bit true needs a CUDA GPU" in (tmp_path / "ml" / "output" / "failure").read_text()


def test_an_adapter_trained_on_a_4bit_base_gets_a_notice_on_a_full_precision_base(jsquad_data, adapter, tmp_path):
    adapters = tmp_path / "adapters"
    shutil.copytree(adapter, adapters)
    base_json = adapters / "seed=0" / "n=2" / "base.json"
    notices: list[str] = []
    entry = manifests.get_model(MODEL)
    settings = Settings(model=MODEL, sizes=[0, 2], seeds=[0], engine="hf")
    plan(settings, jsquad_data, adapters, entry, notices.append)
    assert notices == []  # written before base.json recorded quantisation: nothing to compare
    base_json.write_text(json.dumps({**json.loads(base_json.read_text()), "load_in_4bit": True}))
    plan(settings, jsquad_data, adapters, entry, notices.append)
    assert len(notices) == 1 and "trained on a 4-bit base, evaluated on a full-precision one" in notices[0]
    assert "--load-in-4bit true" in notices[0]


# --- engines ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, cuda, installed, expected", [
    ("llama", True, True, "vllm"), ("qwen2", True, True, "vllm"), ("gpt_neox", True, True, "hf"),
    ("llama", False, True, "hf"), ("llama", True, False, "hf"),
])
def test_auto_picks_vllm_only_on_a_gpu_where_it_serves_lora(family, cuda, installed, expected):
    entry = {"name": "m", "family": family}
    engine, why = engines.choose_engine("auto", entry, cuda=cuda, vllm_installed=installed)
    assert engine == expected and why.startswith("auto: ")
    if family == "gpt_neox":
        assert "GPTNeoXForCausalLM" in why


def test_every_models_yaml_family_has_a_known_architecture_and_explicit_engines_are_checked():
    families = {entry["family"] for entry in manifests.load_models().values()}
    assert families <= set(engines.ARCHITECTURES)
    rinna = {"name": "rinna", "family": "gpt_neox"}
    with pytest.raises(JobError, match="--engine vllm: vLLM does not serve LoRA adapters for GPTNeoXForCausalLM"):
        engines.choose_engine("vllm", rinna, cuda=True, vllm_installed=True)
    assert engines.choose_engine("hf", rinna, cuda=True, vllm_installed=True) == ("hf", "asked for")
    assert engines.choose_engine("vllm", {"name": "q", "family": "qwen2"}, cuda=True, vllm_installed=True)[0] == "vllm"


def test_default_threads_are_the_cores_this_process_may_use():
    import os

    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


# --- stop strings ---------------------------------------------------------------------------------------
def naive_stop(tokenizer, stops: list[str], ids: list[int]) -> int | None:
    """The reference rule: the first length at which the decoded answer, lstripped, holds a stop string."""
    for k in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:k], skip_special_tokens=True).lstrip() for s in stops):
            return k
    return None


def test_stop_strings_fire_where_decoding_everything_would_while_decoding_only_the_newest_tokens(jsquad_data):
    tokenizer = modeling.load_base(manifests.get_model(MODEL), jsquad_data).tokenizer
    rng = random.Random(0)
    pieces = ["\n", " ", "  \n", "文章", "質問", "出力", "。", "マーラー", "ab", "\n\n"]
    stops = ["\n", "。\n"]
    for trial in range(40):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        watch = StopWatch(tokenizer, stops)
        fired = next((k for k in range(1, len(ids) + 1) if watch.update(0, ids[:k])), None)
        assert fired == naive_stop(tokenizer, stops, ids), (trial, text)
    long_answer = tokenizer("マーラー" * 200 + "\n", add_special_tokens=False)["input_ids"]
    watch = StopWatch(tokenizer, stops)
    steps = next(k for k in range(1, len(long_answer) + 1) if watch.update(0, long_answer[:k]))
    assert steps == len(long_answer)
    assert watch.decoded_tokens <= steps * (watch.window + 2)  # bounded per step, not growing with the answer


def test_readme_lists_exactly_the_settings_and_help_shows_the_model_defaults():
    import re

    readme = Path(__file__).resolve().parent.parent / "images" / "infer-local" / "README.md"
    table = readme.read_text(encoding="utf-8").split("## Settings", 1)[1].split("\n\n", 2)[1]
    keys = {k.replace("-", "_") for row in table.splitlines()[2:] for k in re.findall(r"`--([a-z0-9-]+)`", row.split("|")[1])}
    assert keys == set(Settings.model_fields)
    assert f"**{Settings.model_fields['engine'].default}** (default)" in readme.read_text(encoding="utf-8")
    from switchpoint.cli import main

    help_text = " ".join(CliRunner().invoke(main, ["infer-local", "--help"]).output.split())
    assert re.search(r"--engine \[auto\|hf\|vllm\|lm-eval\] .*?\[default: auto\]", help_text)
    assert re.search(r"--batch-size INTEGER .*?\[default: 8\]", help_text)
