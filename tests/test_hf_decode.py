"""The hf engine's decode loop frees finished sequences and still gives ``model.generate``'s output.

Checked on tiny replicas of three families (rinna's GPT-NeoX with its sentencepiece tokenizer and
``<NL>`` newlines, ELYZA's Llama-2, Qwen2.5 with its two EOS ids and its generation config's
repetition penalty), on the base and with a LoRA adapter attached, for batches whose sequences end
at different steps: some on an EOS id, some on a stop string, some at the token limit.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import load_task_from_data, read_eval_set
from switchpoint.core.prompts import decode_generation, encode_prompt, model_prompt
from switchpoint.infer_local import decode, hf_engine

sys.path.insert(0, str(Path(__file__).parent / "replicas"))
from specs import SPECS  # noqa: E402

from build import build_one, corpus, manifest_revisions  # noqa: E402

FAMILIES = {"rinna-3.6b-ppo": "gpt_neox", "elyza-7b": "llama", "qwen2.5-1.5b-instruct": "qwen2"}
MAX_NEW = 12


@pytest.fixture(scope="module")
def bases(tmp_path_factory, jsquad_data) -> dict[str, modeling.BaseModel]:
    """Each family's replica loaded through the real Hub path (offline), on one torch thread (the job's
    own setting on a shared 2-core machine; two threads per process there are many times slower)."""
    import torch
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("decode-hub-cache")
    sentences, revisions = corpus(), manifest_revisions()
    loaded, threads = {}, torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(cache))
        mp.setattr(constants, "HF_HUB_CACHE", str(cache))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        for name in FAMILIES:
            entry = {**manifests.get_model(name), "name": name}
            build_one(SPECS[entry["hub_id"]], cache, revisions.get(entry["hub_id"]), sentences)
            loaded[name] = modeling.load_base(entry, None, device="cpu")
            loaded[name].tokenizer.padding_side = "left"
            loaded[name].model.eval()
    # Qwen's replica ties its embeddings: at the replica's small random weights it echoes its last token
    # ("\n") at every step. Larger layer weights give answers that differ, as the test needs.
    with torch.no_grad():
        for param_name, param in loaded["qwen2.5-1.5b-instruct"].model.named_parameters():
            if ".layers." in param_name and param.dim() == 2:
                param.mul_(5)
    torch.set_num_threads(1)
    yield loaded
    torch.set_num_threads(threads)


def with_adapter(base: modeling.BaseModel):
    """The base wrapped in a peft model with random LoRA weights (so the adapter changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=base.entry["lora_target_modules"], init_lora_weights=False)
    return get_peft_model(copy.deepcopy(base.model), lora).eval()


def prompt_ids(base: modeling.BaseModel, data_dir: Path, count: int = 8) -> list[list[int]]:
    """Real JSQuAD prompts in the model card's layout, cut to different lengths (cheap, and padded unevenly)."""
    task = load_task_from_data(data_dir)
    ids = [encode_prompt(base.tokenizer, base.entry, model_prompt(task, base.entry, ex, [], base.tokenizer))
           for ex in read_eval_set(data_dir)[:count]]
    return [p[-(9 + 13 * i):] for i, p in enumerate(ids)]


@contextmanager
def ending_also_on(model, tokenizer, token: int):
    """The model's generation config with one more EOS id (``stop_token_ids`` reads it, as both paths do)."""
    config = decode.transformers_model(model).generation_config
    before = config.eos_token_id
    config.eos_token_id = [*modeling.stop_token_ids(model, tokenizer), token]
    try:
        yield
    finally:
        config.eos_token_id = before


def ended_by(generations, stops: list[str]) -> list[str]:
    return ["stop" if any(s in g.text for s in stops) else "eos" if g.output_tokens < MAX_NEW else "limit"
            for g in generations]


def uneven_endings(model, base: modeling.BaseModel, prompts: list[list[int]]) -> tuple[int, list[str]]:
    """An extra EOS id and a stop string that end this model's answers at different steps, some on the EOS
    id, some on the stop string (found by trying tokens and characters of its own free-running output)."""
    import torch

    with torch.inference_mode():
        free = decode.greedy_decode(model, prompts, len(prompts), MAX_NEW, [], 0, lambda *_: False)
    last_text = decode_generation(base.tokenizer, base.entry, free[-1])
    for eos in dict.fromkeys(free[0][2:8]):
        eos_text = decode_generation(base.tokenizer, base.entry, [eos])
        for char in dict.fromkeys(last_text[2:]):
            if char.isspace() or char == "\ufffd" or char in eos_text:
                continue
            stops = [char, "\n"]
            with ending_also_on(model, base.tokenizer, eos):
                gens = hf_engine.generate_batch(model, base.tokenizer, prompts, MAX_NEW, stops, base.entry)
            if {"stop", "eos"} <= set(ended_by(gens, stops)) and len({g.output_tokens for g in gens}) >= 3:
                return eos, stops
    raise AssertionError("no EOS id and stop string of this model's own output end its answers unevenly")


@pytest.mark.parametrize("adapter", [False, True], ids=["base", "lora"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_freeing_loop_gives_model_generates_predictions(bases, jsquad_data, name, adapter):
    base = bases[name]
    model = with_adapter(base) if adapter else base.model
    prompts = prompt_ids(base, jsquad_data)
    eos, stops = uneven_endings(model, base, prompts)
    with ending_also_on(model, base.tokenizer, eos):
        for batch_size in (3, 8):  # 3: freed slots refilled from the queue; 8: one batch, rows only leave
            old = [g for b in range(0, len(prompts), batch_size) for g in
                   hf_engine.generate_batch_static(model, base.tokenizer, prompts[b:b + batch_size], MAX_NEW, stops,
                                                   base.entry)]
            new = hf_engine.generate_batch(model, base.tokenizer, prompts, MAX_NEW, stops, base.entry, batch_size)
            assert [(g.text, g.input_tokens, g.output_tokens) for g in new] == \
                   [(g.text, g.input_tokens, g.output_tokens) for g in old]


def test_the_base_path_under_disable_adapter_matches_too(bases, jsquad_data):
    base = bases["elyza-7b"]
    model, prompts = with_adapter(base), prompt_ids(base, jsquad_data)

    def texts(generate, model):
        return [g.text for g in generate(model, base.tokenizer, prompts, MAX_NEW, ["。"], base.entry)]

    with model.disable_adapter():  # how run_hf serves the base model once a peft model exists
        disabled = texts(hf_engine.generate_batch, model)
        assert disabled == texts(hf_engine.generate_batch_static, model)
    assert disabled == texts(hf_engine.generate_batch, base.model)
    assert texts(hf_engine.generate_batch, model) != disabled, "the adapter must change the output"


def test_finished_rows_leave_the_batch_and_free_slots_are_refilled(bases, jsquad_data):
    base = bases["qwen2.5-1.5b-instruct"]
    prompts = prompt_ids(base, jsquad_data)
    eos, stops = uneven_endings(base.model, base, prompts)
    with ending_also_on(base.model, base.tokenizer, eos):
        one_batch: list[int] = []
        new = hf_engine.generate_batch(base.model, base.tokenizer, prompts, MAX_NEW, stops, base.entry,
                                       on_forward=one_batch.append)
        lengths = [g.output_tokens for g in new]
        # One forward row per generated token: a finished row costs nothing more.
        assert one_batch[0] == len(prompts) and one_batch == sorted(one_batch, reverse=True)
        assert sum(one_batch) == sum(lengths) and len(one_batch) == max(lengths)
        assert sum(one_batch) < len(prompts) * max(lengths), "static batching would run every row every step"

        refilled: list[int] = []
        finished: list[int] = []
        hf_engine.generate_batch(base.model, base.tokenizer, prompts, MAX_NEW, stops, base.entry, 3,
                                 on_forward=refilled.append, on_finish=finished.append)
    batches = [lengths[b:b + 3] for b in range(0, len(prompts), 3)]
    assert max(refilled) <= 3 and sum(refilled) == sum(lengths) and sorted(finished) == list(range(len(prompts)))
    assert len(refilled) < sum(max(b) for b in batches), "freed slots must take the next prompts"


def test_the_models_own_greedy_settings_still_apply(bases):
    import torch

    qwen, elyza = bases["qwen2.5-1.5b-instruct"].model, bases["elyza-7b"].model
    ids = torch.tensor([[5, 6, 7]])
    names = [type(p).__name__ for p in decode.greedy_processors(qwen, ids, [151645, 151643], 151643, 4)]
    assert names == ["RepetitionPenaltyLogitsProcessor"]  # Qwen2.5's generation_config.json: 1.1
    assert list(decode.greedy_processors(elyza, ids, [2], 0, 4)) == []


def test_the_repetition_penalty_ignores_a_rows_left_padding_as_generate_does():
    """generate tells the penalty each row's padding; with the pad id a token the padded row emits,
    counting the padding as context would penalise it (8 of 15 of these seeds disagreed before)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    prompts, end = [[5, 9, 12, 3, 7, 20, 11, 4], [8, 2, 30]], 63
    for seed in range(8):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2)).eval()
        model.generation_config = GenerationConfig(repetition_penalty=1.1, eos_token_id=[end])

        def generate(pad: int) -> list[list[int]]:
            ids = torch.tensor([prompts[0], [pad] * 5 + prompts[1]])
            mask = torch.tensor([[1] * 8, [0] * 5 + [1] * 3])
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                     pad_token_id=pad, eos_token_id=[end])
            return out[:, 8:].tolist()

        pad = generate(0)[1][0]  # the padded row's first answer token becomes the pad id
        with torch.inference_mode():
            ours = decode.greedy_decode(model, prompts, 2, 6, [end], pad, lambda *_: False)
        assert ours == generate(pad), f"seed {seed}"


def test_a_generation_setting_that_needs_the_whole_batch_is_refused(bases, monkeypatch):
    import torch

    model = bases["elyza-7b"].model
    monkeypatch.setattr(model.generation_config, "encoder_repetition_penalty", 1.3)
    with pytest.raises(JobError, match="EncoderRepetitionPenaltyLogitsProcessor.*generation_config.json"):
        decode.greedy_processors(model, torch.tensor([[5, 6, 7]]), [2], 0, 4)


def test_a_cache_implementation_the_loop_does_not_use_is_refused(bases, monkeypatch):
    import torch

    model = bases["elyza-7b"].model
    monkeypatch.setattr(model.generation_config, "cache_implementation", "quantized")
    with pytest.raises(JobError, match="cache_implementation=quantized"):
        decode.greedy_processors(model, torch.tensor([[5, 6, 7]]), [2], 0, 4)


def test_a_sliding_window_cache_is_never_padded_so_batches_run_one_after_another(jsquad_data):
    """A sliding-window layer keeps only its last tokens, so rows cannot join it padded: each of
    generate's batches runs alone (finished rows still leave), with generate's tokens."""
    import torch
    from switchpoint.core.tiny import train_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    texts = [f"{ex['context']}{ex['question']}" for ex in read_eval_set(jsquad_data)]
    tokenizer = train_tokenizer(texts, 1024)
    tokenizer.padding_side = "left"
    config = AutoConfig.for_model("mistral", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, sliding_window=12,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger layer weights than the random init: answers that differ
        for name, param in model.named_parameters():
            if ".layers." in name and param.dim() == 2:
                param.mul_(5)
    prompts = sorted((tokenizer(t, add_special_tokens=False)["input_ids"][: 5 + 9 * i] for i, t in enumerate(texts[:9])),
                     key=len, reverse=True)
    with torch.inference_mode():
        free = decode.greedy_decode(model, prompts, len(prompts), MAX_NEW, [], 1, lambda *_: False)
    model.generation_config.eos_token_id = [0, free[1][3], free[5][6]]  # two answers end early
    old = [g for b in range(0, 9, 3) for g in hf_engine.generate_batch_static(model, tokenizer, prompts[b:b + 3], MAX_NEW,
                                                                               [], {})]
    forwards: list[int] = []
    new = hf_engine.generate_batch(model, tokenizer, prompts, MAX_NEW, [], {}, 3, on_forward=forwards.append)
    assert [(g.text, g.output_tokens) for g in new] == [(g.text, g.output_tokens) for g in old]
    lengths = [g.output_tokens for g in new]
    assert min(lengths) < MAX_NEW and sum(forwards) == sum(lengths)
    assert len(forwards) == sum(max(lengths[b:b + 3]) for b in range(0, 9, 3)), "no batch may join a running one"
