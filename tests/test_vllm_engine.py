"""The vLLM engine's glue, on a stand-in ``vllm`` module (no GPU here): what it asks vLLM for and how
it reads vLLM's answer. vLLM itself is exercised only on a GPU machine (bench_infer --gpu-config)."""

from __future__ import annotations

import json
import sys
import types
from contextlib import nullcontext
from typing import ClassVar

import pytest
from switchpoint.core import manifests, modeling
from switchpoint.core.tiny import save_tiny
from switchpoint.infer_local.passes import EngineStats, Pass
from switchpoint.infer_local.vllm_engine import run_vllm


class FakeLLM:
    """Records the engine's requests; answers each prompt with the ids a test gave it."""

    made: ClassVar[list[dict]] = []
    asked: ClassVar[list[tuple]] = []
    answers: ClassVar[list[list[int]]] = []

    def __init__(self, **kwargs):
        FakeLLM.made.append(kwargs)

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        FakeLLM.asked.append((prompts, params, lora_request))
        return [types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                      outputs=[types.SimpleNamespace(token_ids=list(ids), text="(vLLM's own text)")])
                for p, ids in zip(prompts, FakeLLM.answers)]


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *args: args
    for name, module in {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.made, FakeLLM.asked = [], []
    return FakeLLM


def test_vllm_is_given_prompt_ids_and_every_end_id_and_its_ids_are_decoded_by_the_cards_tokenizer(
        fake_vllm, jsquad_data, tmp_path, monkeypatch):
    import torch

    entry = {**manifests.get_model("tiny-llama"), "name": "tiny-llama"}
    base = modeling.load_base(entry, jsquad_data, device="cpu")
    tok = base.tokenizer
    folder = save_tiny(base.model, tok, tmp_path / "base")
    second_end = tok.convert_tokens_to_ids(tok.tokenize("。")[-1])  # a second end id, as Qwen2.5 lists two
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, second_end],
                                                               "repetition_penalty": 1.1}))
    prompt_ids = [tok("東京", add_special_tokens=False)["input_ids"], tok("大阪", add_special_tokens=False)["input_ids"]]
    answer = tok("京都", add_special_tokens=False)["input_ids"]
    fake_vllm.answers = [[*answer, second_end, *answer], [*answer, tok.eos_token_id]]
    passes = [Pass(None, None, [], prompts=["東京", "大阪"], prompt_ids=prompt_ids)]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # after the CPU load: run_vllm checks for a GPU
    out = run_vllm(str(folder), entry, tok, passes, tmp_path, 8, False, EngineStats(), lambda p: nullcontext(
        types.SimpleNamespace(update=lambda n: None)))

    (prompts, params, lora), = fake_vllm.asked
    assert [p["prompt_token_ids"] for p in prompts] == prompt_ids and lora is None
    assert set(params.stop_token_ids) == {tok.eos_token_id, second_end} and params.temperature == 0.0
    assert params.repetition_penalty == pytest.approx(1.1)  # as the hf engine applies it (Qwen2.5's config)
    from switchpoint.core.prompts import decode_generation

    expected = decode_generation(tok, entry, answer)
    assert [g.text for g in out[0]] == [expected, expected] and expected and "vLLM" not in expected
    assert [g.input_tokens for g in out[0]] == [len(i) for i in prompt_ids]


def test_a_greedy_setting_vllm_cannot_apply_is_refused_in_one_line():
    from types import SimpleNamespace

    from switchpoint.core.contract import JobError
    from switchpoint.infer_local.vllm_engine import sampling_settings

    tokenizer = SimpleNamespace(eos_token_id=2)
    with pytest.raises(JobError, match="no_repeat_ngram_size=3.*--engine hf"):
        sampling_settings(SimpleNamespace(no_repeat_ngram_size=3, eos_token_id=2), {"name": "m"}, tokenizer)
    plain = sampling_settings(None, {"name": "m"}, tokenizer)  # no generation config: the tokenizer's EOS
    assert plain["stop_token_ids"] == [2] and plain["repetition_penalty"] == 1.0
