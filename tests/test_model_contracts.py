"""Every Hub model of models.yaml, on a tiny replica of its real repository, meets its model card.

The replicas (tests/replicas/) keep each repository's config keys, special-token ids, tokenizer
class and kind of tokenizer file, tokenizer_config.json and generation_config.json, laid out as a
hub cache under the real Hub id, so the real ``from_pretrained(hub_id, revision=...)`` path runs
offline. Where transformers 5 differs from a card (rinna's sentencepiece tokenizers), the card wins.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from switchpoint.core import manifests, modeling, prompts
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import (
    load_task_from_data,
    read_eval_set,
    read_train_set,
)

sys.path.insert(0, str(Path(__file__).parent / "replicas"))
from specs import SPECS  # noqa: E402

from build import build_all, manifest_revisions  # noqa: E402

HUB_MODELS = sorted(k for k, m in manifests.load_models().items() if m["source"] == "hub")


@pytest.fixture(scope="session")
def replica_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("replica-hub-cache")
    build_all(cache, manifest_revisions())
    return cache


@pytest.fixture
def hub(replica_cache, monkeypatch) -> Path:
    """The replica cache as this test's HF hub cache, offline (constants are read at import time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(replica_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(replica_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return replica_cache


_BASES: dict[str, modeling.BaseModel] = {}


def base_of(name: str, data_dir: Path) -> modeling.BaseModel:
    if name not in _BASES:
        _BASES[name] = modeling.load_base({**manifests.get_model(name), "name": name}, data_dir, device="cpu")
    return _BASES[name]


def test_every_hub_model_has_a_replica_and_a_revision():
    entries = {k: manifests.get_model(k) for k in HUB_MODELS}
    assert sorted(m["hub_id"] for m in entries.values()) == sorted(SPECS)
    assert all(m.get("revision") for m in entries.values())


@pytest.mark.parametrize("name", HUB_MODELS)
def test_replica_loads_through_the_real_hub_path_with_the_published_contract(hub, jsquad_data, name):
    entry = manifests.get_model(name)
    spec = SPECS[entry["hub_id"]]
    base = base_of(name, jsquad_data)
    config = base.model.config
    assert type(base.model).__name__ == spec.config["architectures"][0]
    assert config.model_type == spec.config["model_type"] and config.vocab_size == spec.vocab_size
    assert config.max_position_embeddings >= entry["context_length"]
    assert config.tie_word_embeddings == spec.config["tie_word_embeddings"]
    if config.model_type == "gpt_neox":
        assert config.use_parallel_residual is False
    snapshot = next((hub / f"models--{entry['hub_id'].replace('/', '--')}" / "snapshots").iterdir())
    assert (snapshot / spec.tokenizer_file).is_file()
    if spec.tokenizer_file != "tokenizer.json" and not spec.tokenizer_json:
        assert not (snapshot / "tokenizer.json").exists()  # sentencepiece only, as published
    assert (snapshot / "tokenizer.json").exists() == bool(spec.tokenizer_json or spec.tokenizer_file == "tokenizer.json")
    for token, index in spec.specials.items():
        assert base.tokenizer.convert_tokens_to_ids(token) == index


def _example_and_prompt(name: str, data_dir: Path, shots: int = 0):
    task = load_task_from_data(data_dir)
    entry = {**manifests.get_model(name), "name": name}
    base = base_of(name, data_dir)
    example = read_eval_set(data_dir)[0]
    example = {**example, "context": example["context"][:80] + "\n" + example["context"][80:160]}
    text = prompts.model_prompt(task, entry, example, read_train_set(data_dir, 0, shots) if shots else (),
                                tokenizer=base.tokenizer)
    return task, entry, base, example, text


CARD_LAYOUT = {
    "rinna-3.6b-ppo": (lambda t: t.startswith("ユーザー: ") and t.endswith("<NL>システム: ") and "\n" not in t),
    "rinna-4b-ppo": (lambda t: t.startswith("ユーザー: ") and t.endswith("\nシステム: ") and "<NL>" not in t),
    "elyza-7b": (lambda t: t.startswith("[INST] <<SYS>>\n") and "\n<</SYS>>\n\n" in t and t.endswith(" [/INST] ")),
    "swallow-13b": (lambda t: t.startswith(prompts.SWALLOW_HEADER + "\n\n### 指示:\n") and "\n\n### 入力:\n" in t
                    and t.endswith("\n\n### 応答:")),
    "open-calm-1b": (lambda t: t.startswith(prompts.ALPACA_HEADER) and t.endswith("### 応答:\n")),
    "qwen2.5-1.5b-instruct": (lambda t: t.startswith("<|im_start|>system\n") and t.endswith("<|im_start|>assistant\n")),
    "llm-jp-3-1.8b-instruct": (lambda t: t.startswith("<s>以下は、タスクを説明する指示です。") and t.endswith("\n\n### 応答:\n")),
    "sarashina2.2-1b-instruct": (lambda t: t.startswith("<|system|>") and t.endswith("<|assistant|>")),
}


@pytest.mark.parametrize("name", HUB_MODELS)
def test_prompt_is_laid_out_as_the_model_card_says(hub, jsquad_data, name):
    task, entry, base, example, text = _example_and_prompt(name, jsquad_data, shots=2)
    assert CARD_LAYOUT[name](text), text[:200]
    assert task["prompt"]["instruction"].splitlines()[0] in text.replace("<NL>", "\n")  # never dropped by a template
    assert example["question"] in text


@pytest.mark.parametrize("name", HUB_MODELS)
def test_prompt_ids_hold_bos_only_where_the_card_puts_it_and_never_end_in_eos(hub, jsquad_data, name):
    _, entry, base, example, text = _example_and_prompt(name, jsquad_data)
    tok = base.tokenizer
    ids = prompts.encode_prompt(tok, entry, text)
    assert ids[-1] not in modeling.stop_token_ids(base.model, base.tokenizer)
    if entry["add_bos"]:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    else:
        assert tok.bos_token_id is None or tok.bos_token_id not in ids
    # The card's own recipe gives the same ids.
    if entry.get("tokenizer") == "sentencepiece" and entry["prompt_format"] != "chat-template":  # rinna's cards
        assert ids == tok.sp_model.encode(text)
    elif entry["prompt_format"] in ("llama2", "swallow"):  # Llama-2's reference: [bos] + sentencepiece ids
        import sentencepiece
        from huggingface_hub import hf_hub_download

        sp = sentencepiece.SentencePieceProcessor(model_file=hf_hub_download(entry["hub_id"], "tokenizer.model",
                                                                             revision=entry["revision"]))
        assert ids == [tok.bos_token_id] * entry["add_bos"] + sp.encode(text)
    elif entry["prompt_format"] == "chat-template":  # the card: apply_chat_template(..., tokenize=True)
        system, turns = prompts.build_turns(load_task_from_data(jsquad_data), example)
        messages = [{"role": "system", "content": system}, *turns]
        if entry["hub_id"].startswith("llm-jp/"):  # its template drops the system text: folded into the question
            messages = [messages[0], {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}]
        templated = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        assert ids == list(templated["input_ids"] if hasattr(templated, "keys") else templated)


def test_transformers_conversion_of_rinnas_tokenizer_breaks_the_card_and_the_project_does_not_use_it(hub, jsquad_data):
    from transformers import AutoTokenizer

    entry = manifests.get_model("rinna-4b-ppo")
    converted = AutoTokenizer.from_pretrained(entry["hub_id"], revision=entry["revision"])
    ours = base_of("rinna-4b-ppo", jsquad_data).tokenizer
    text = "一行目\n二行目☃"
    assert converted(text)["input_ids"][-1] == converted.eos_token_id  # transformers 5 appends </s>
    assert "\n" not in converted.decode(converted(text, add_special_tokens=False)["input_ids"])  # and drops \n
    assert converted.bos_token_id == 2 and 2 in converted("☃", add_special_tokens=False)["input_ids"]  # unknown -> <s>
    ids = prompts.encode_prompt(ours, {**entry, "name": "rinna-4b-ppo"}, text)
    assert ours.decode(ids) == text and ids[-1] != ours.eos_token_id and 2 not in ids  # ☃ as its UTF-8 byte pieces


@pytest.mark.parametrize("name", HUB_MODELS)
def test_newlines_survive_both_ways(hub, jsquad_data, name):
    entry = {**manifests.get_model(name), "name": name}
    tok = base_of(name, jsquad_data).tokenizer
    answer = "一行目\n二行目"
    target = prompts.encode_answer(tok, entry, answer)
    assert target[-1] == tok.eos_token_id
    written = tok.decode(target[:-1], skip_special_tokens=True)
    if entry.get("newline"):
        assert written == answer.replace("\n", entry["newline"])  # trained on <NL>, as the card writes
    generated = prompts.decode_generation(tok, entry, target, [tok.eos_token_id])
    assert generated == answer
    task = {"generation": {"stop": ["\n"]}}
    assert prompts.postprocess(task, generated) == "一行目"  # JSQuAD's stop at "\n" fires


@pytest.mark.parametrize("name", HUB_MODELS)
def test_the_training_answer_is_exactly_its_text_after_the_prompt(hub, jsquad_data, name):
    """A tokenizer with a dummy prefix (ELYZA's Llama, llm-jp's normaliser) starts a text encoded alone
    with a "▁": a target encoded alone would teach the model a space the answer does not have."""
    _, entry, base, example, text = _example_and_prompt(name, jsquad_data)
    tok = base.tokenizer
    prompt_ids = prompts.encode_prompt(tok, entry, text)
    for answer in ("東京", "東京 タワー", "Tokyo"):
        target = prompts.encode_answer(tok, entry, answer, text)
        assert target[-1] == tok.eos_token_id
        assert tok.decode(prompt_ids + target[:-1]) == tok.decode(prompt_ids) + prompts.to_model_text(entry, answer)
        # without the prompt (a seam that merges), the answer is tokenised after a newline: no dummy prefix either
        alone = prompts.encode_answer(tok, entry, answer)
        assert tok.decode(prompt_ids + alone[:-1]) == tok.decode(prompt_ids) + prompts.to_model_text(entry, answer)


@pytest.mark.parametrize("name", HUB_MODELS)
def test_training_prompt_ids_equal_inference_prompt_ids(hub, jsquad_data, xlsum_data, name):
    from switchpoint.infer_local.passes import Pass, build_prompts
    from switchpoint.train.loop import encode_example

    for data_dir in (jsquad_data, xlsum_data):
        task = load_task_from_data(data_dir)
        entry = {**manifests.get_model(name), "name": name}
        base = base_of(name, jsquad_data)
        example = read_train_set(data_dir, 0, 2)[0]
        p = Pass(None, None, [])
        build_prompts(p, task, entry, [example], data_dir, base.tokenizer, budget=10_000)
        encoded = encode_example(task, entry, base.tokenizer, example, cutoff_len=10_000)
        n = len(p.prompt_ids[0])
        assert encoded["input_ids"][:n] == p.prompt_ids[0] and encoded["labels"][:n] == [-100] * n
        # Too long for both: the same function cuts the article, so equal budgets give equal ids.
        answer = prompts.encode_answer(base.tokenizer, entry, prompts.answer_text(example),
                                       prompts.model_prompt(task, entry, example, (), base.tokenizer))
        assert encoded["input_ids"][n:] == answer
        budget = n - 12
        short = Pass(None, None, [])
        build_prompts(short, task, entry, [example], data_dir, base.tokenizer, budget=budget)
        cut = encode_example(task, entry, base.tokenizer, example, cutoff_len=budget + len(answer))
        assert short.truncated == 1 and cut["truncated"]
        assert cut["input_ids"] == short.prompt_ids[0] + answer


@pytest.mark.parametrize("name", HUB_MODELS)
def test_lora_target_modules_exist_in_the_model(hub, jsquad_data, name):
    entry = manifests.get_model(name)
    names = {n.rsplit(".", 1)[-1] for n, _ in base_of(name, jsquad_data).model.named_modules()}
    assert set(entry["lora_target_modules"]) <= names


@pytest.mark.parametrize("name", HUB_MODELS)
def test_generations_carry_no_special_token_text_or_byte_pieces(hub, jsquad_data, name):
    import torch

    _, entry, base, _, text = _example_and_prompt(name, jsquad_data)
    tok = base.tokenizer
    ids = torch.tensor([prompts.encode_prompt(tok, entry, text)])
    with torch.inference_mode():
        out = base.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                  pad_token_id=tok.pad_token_id,
                                  eos_token_id=modeling.stop_token_ids(base.model, base.tokenizer))
    # A random model's tokens, plus every special token and a split multi-byte character.
    generated = out[0, ids.shape[1]:].tolist() + tok.all_special_ids + tok.encode("☃日本", add_special_tokens=False)
    decoded = prompts.decode_generation(tok, entry, generated)
    assert "<0x" not in decoded and "<NL>" not in decoded
    assert not any(s in decoded for s in tok.all_special_tokens if s)


def test_generate_keeps_every_eos_id_of_qwens_generation_config(hub, jsquad_data):
    base = base_of("qwen2.5-1.5b-instruct", jsquad_data)
    assert base.model.generation_config.eos_token_id == [151645, 151643]
    assert modeling.stop_token_ids(base.model, base.tokenizer) == [151645, 151643]


def test_swallows_sampling_generation_config_leaves_the_hf_engine_greedy(hub, jsquad_data):
    """Swallow's generation_config.json asks for sampling (do_sample, temperature 0.6, top_p 0.9): a generate
    call that relied on the model's defaults would sample, so predictions would change from run to run."""
    import torch
    from switchpoint.infer_local.hf_engine import generate_batch, generate_batch_static

    _, entry, base, _, text = _example_and_prompt("swallow-13b", jsquad_data)
    config = base.model.generation_config
    assert config.do_sample is True and config.temperature == pytest.approx(0.6) and config.top_p == pytest.approx(0.9)
    ids = [prompts.encode_prompt(base.tokenizer, entry, text)]
    runs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        runs.append([g.text for g in generate_batch(base.model, base.tokenizer, ids, 8, [], entry)])
    torch.manual_seed(3)
    runs.append([g.text for g in generate_batch_static(base.model, base.tokenizer, ids, 8, [], entry)])
    assert runs[0][0] and all(run == runs[0] for run in runs)


@pytest.mark.parametrize("name", HUB_MODELS)
def test_an_adapter_trains_and_infers_on_the_replica_hf_engine(hub, jsquad_data, tmp_path, name):
    from switchpoint.core.contract import job_paths
    from switchpoint.core.predictions import read_predictions
    from switchpoint.infer_local.job import infer
    from switchpoint.infer_local.settings import Settings as InferSettings
    from switchpoint.train.job import train
    from switchpoint.train.settings import Settings

    paths = job_paths(tmp_path / "ml")
    train(Settings(model=name, sizes=[2], seeds=[0], epochs=1, batch_size=2, min_steps=2, learning_rate=1e-2,
                   lora_r=4, lora_alpha=8, lora_dropout=0.0, cutoff_len=192, load_in_4bit=False), paths, jsquad_data)
    adapter = paths.checkpoints / "adapters" / "seed=0" / "n=2"
    assert (adapter / "adapter_config.json").is_file()
    metrics = infer(InferSettings(model=name, sizes=[2], seeds=[0], max_new_tokens=6, load_in_4bit=False), jsquad_data,
                    paths.checkpoints / "adapters", tmp_path / "out")
    assert metrics["base_model_loads"] == 1 and metrics["adapter_switches"] == 1 and len(metrics["arms"]) == 1
    tok = base_of(name, jsquad_data).tokenizer
    for row in metrics["arms"]:
        predictions = read_predictions(tmp_path / "out" / row["file"])
        assert len(predictions) == len(read_eval_set(jsquad_data))
        for record in predictions:
            assert "<0x" not in record["prediction"] and "<NL>" not in record["prediction"]
            assert not any(s in record["prediction"] for s in tok.all_special_tokens if s)


@pytest.mark.parametrize("name", HUB_MODELS)
def test_lm_eval_is_given_the_card_prompt_ids(hub, jsquad_data, name):
    """lm-eval encodes prompts itself: no second BOS where the template writes one and the tokenizer
    adds one too (llm-jp's post-processor), none where the card has none."""
    from lm_eval.models.huggingface import HFLM
    from switchpoint.infer_local.lm_eval_engine import lm_eval_model

    _, entry, base, _, text = _example_and_prompt(name, jsquad_data)
    spec = lm_eval_model(base, str(next((hub / f"models--{entry['hub_id'].replace('/', '--')}" / "snapshots").iterdir())),
                         entry, None, "cpu", 2, False)
    lm = spec["model"] if isinstance(spec["model"], HFLM) else HFLM.create_from_arg_string(spec["model_args"], {"device": "cpu"})
    assert lm.tok_batch_encode([text])[0][0].tolist() == prompts.encode_prompt(base.tokenizer, entry, text)


# lm-eval's two paths: its own loading from model_args (ELYZA: add_bos_token) and an HFLM given this
# job's sentencepiece tokenizer (rinna); the other models take the first path.
@pytest.mark.parametrize("name", ["rinna-3.6b-ppo", "elyza-7b"])
def test_lm_eval_engine_sees_the_same_prompt_ids_and_gives_the_hf_predictions(hub, jsquad_data, tmp_path, name):
    from lm_eval.models.huggingface import HFLM
    from switchpoint.core.predictions import read_predictions
    from switchpoint.infer_local.job import infer
    from switchpoint.infer_local.lm_eval_engine import lm_eval_model
    from switchpoint.infer_local.settings import Settings

    _, entry, base, _, text = _example_and_prompt(name, jsquad_data)
    spec = lm_eval_model(base, str(next((hub / f"models--{entry['hub_id'].replace('/', '--')}" / "snapshots").iterdir())),
                         entry, None, "cpu", 2, False)
    lm = spec["model"] if isinstance(spec["model"], HFLM) else HFLM.create_from_arg_string(spec["model_args"], {"device": "cpu"})
    assert lm.tok_batch_encode([text])[0][0].tolist() == prompts.encode_prompt(base.tokenizer, entry, text)

    from switchpoint.core.contract import job_paths
    from switchpoint.train.job import train
    from switchpoint.train.settings import Settings as TrainSettings

    paths = job_paths(tmp_path / "ml")  # an adapter too: lm-eval loads it through peft= on the same base
    train(TrainSettings(model=name, sizes=[2], seeds=[0], epochs=1, batch_size=2, min_steps=2, learning_rate=1e-2,
                        lora_r=4, lora_alpha=8, lora_dropout=0.0, cutoff_len=192), paths, jsquad_data)
    adapters = paths.checkpoints / "adapters"
    settings = dict(model=name, sizes=[0, 2], seeds=[0], max_new_tokens=6)
    infer(Settings(**settings, engine="hf"), jsquad_data, adapters, tmp_path / "hf")
    infer(Settings(**settings, engine="lm-eval"), jsquad_data, adapters, tmp_path / "lm")
    files = sorted(p.name for p in (tmp_path / "hf").glob("*.jsonl"))
    assert len(files) == 2 and files == sorted(p.name for p in (tmp_path / "lm").glob("*.jsonl"))
    for f in files:
        hf = [r["prediction"] for r in read_predictions(tmp_path / "hf" / f)]
        assert hf == [r["prediction"] for r in read_predictions(tmp_path / "lm" / f)]


def _sarashina_variant(tmp_path, monkeypatch, spm_options=None, tokenizer_config=None) -> dict:
    """sarashina2.2 with other sentencepiece training options or tokenizer_config, in its own cache."""
    import dataclasses

    from huggingface_hub import constants

    from build import build_one, corpus

    entry = {**manifests.get_model("sarashina2.2-1b-instruct"), "name": "sarashina2.2-1b-instruct"}
    spec = SPECS[entry["hub_id"]]
    spec = dataclasses.replace(spec, spm_options={**spec.spm_options, **(spm_options or {})},
                               tokenizer_config={**spec.tokenizer_config, **(tokenizer_config or {})})
    build_one(spec, tmp_path, entry["revision"], corpus())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return entry


@pytest.fixture
def sarashina_without_tokenizer_json(tmp_path, monkeypatch) -> dict:
    """sarashina2.2 as a repository that ships tokenizer.model only (as its base repositories do)."""
    entry = _sarashina_variant(tmp_path, monkeypatch)
    (tmp_path / f"models--{entry['hub_id'].replace('/', '--')}" / "snapshots" / entry["revision"] / "tokenizer.json").unlink()
    return entry


def test_a_dummy_prefix_in_the_sentencepiece_model_is_cleared_where_the_config_turns_it_off(tmp_path, monkeypatch):
    """sentencepiece trains with a dummy prefix by default; sarashina's config says add_dummy_prefix_space
    false, and its published tokenizer.json (Metaspace, prepend never) adds none: neither may the job."""
    import tokenizers
    from huggingface_hub import hf_hub_download

    entry = _sarashina_variant(tmp_path, monkeypatch, spm_options={"add_dummy_prefix": True})
    tok = modeling.load_tokenizer(entry)
    published = tokenizers.Tokenizer.from_file(hf_hub_download(entry["hub_id"], "tokenizer.json", revision=entry["revision"]))
    for text in ("東京は日本の首都です", "<|user|>東京 タワー</s><|assistant|>", " 先頭に空白"):
        assert prompts.encode_prompt(tok, entry, text) == published.encode(text, add_special_tokens=False).ids, text
    assert tok.convert_ids_to_tokens(tok("東京", add_special_tokens=False)["input_ids"])[0] != "▁"


def test_a_special_token_the_sentencepiece_model_lacks_is_one_clear_error(tmp_path, monkeypatch):
    entry = _sarashina_variant(tmp_path, monkeypatch, tokenizer_config={"pad_token": "<|no-such-piece|>"})
    with pytest.raises(JobError, match=r"tokenizer_config.json names the special token '<\|no-such-piece\|>'; the "
                                       r"sentencepiece model has no such piece. Set tokenizer: auto"):
        modeling.load_tokenizer(entry)
    moved = {"9": {"content": "<|assistant|>", "special": True}}  # at another id than the model's 8
    entry = _sarashina_variant(tmp_path / "b", monkeypatch, tokenizer_config={"added_tokens_decoder": moved})
    with pytest.raises(JobError, match=r"'<\|assistant\|>' at id 9; the sentencepiece model has it at id 8"):
        modeling.load_tokenizer(entry)


def test_tokenizer_json_asked_for_but_not_published_is_one_clear_error(sarashina_without_tokenizer_json):
    entry = {**sarashina_without_tokenizer_json, "tokenizer": "tokenizer-json"}
    with pytest.raises(JobError, match=r"says tokenizer: tokenizer-json, but sbintuitions/sarashina2.2-1b-instruct-v0.1 "
                                       r"\(revision 08cf5a8\w+\) has no tokenizer.json"):
        modeling.load_tokenizer(entry)


def test_sarashina_through_sentencepiece_gives_the_published_tokenizer_jsons_ids_not_transformers_rebuild(
        hub, jsquad_data):
    """The card's ids, read three ways: the Unigram tokenizer.json as published, sentencepiece on its
    tokenizer.model (what the job uses: it needs no tokenizer.json), and not transformers 5's rebuild."""
    import tokenizers
    from huggingface_hub import hf_hub_download
    from transformers import AutoTokenizer

    _, entry, base, example, text = _example_and_prompt("sarashina2.2-1b-instruct", jsquad_data)
    assert entry["tokenizer"] == "sentencepiece" and "<|assistant|>" in text
    published = tokenizers.Tokenizer.from_file(hf_hub_download(entry["hub_id"], "tokenizer.json", revision=entry["revision"]))
    answer = "一行目\n二行目 と three  spaces"
    assert prompts.encode_prompt(base.tokenizer, entry, text) == published.encode(text, add_special_tokens=False).ids
    assert prompts.encode_answer(base.tokenizer, entry, answer)[:-1] == published.encode(answer, add_special_tokens=False).ids
    assert type(published.model).__name__ == "Unigram"
    # What AutoTokenizer would have given: the class's own pipeline, a "▁" in front of the answer.
    rebuilt = AutoTokenizer.from_pretrained(entry["hub_id"], revision=entry["revision"])
    assert rebuilt(answer, add_special_tokens=False)["input_ids"] != published.encode(answer, add_special_tokens=False).ids


def test_sarashina_without_a_tokenizer_json_gets_the_same_ids_and_chat_template(hub, jsquad_data,
                                                                                 sarashina_without_tokenizer_json):
    spm_only = modeling.load_tokenizer(sarashina_without_tokenizer_json)  # the fixture's cache: no tokenizer.json
    _, entry, _, _, text = _example_and_prompt("sarashina2.2-1b-instruct", jsquad_data)
    assert spm_only.chat_template and "<|assistant|>" in text
    # the ids of the tokenizer.json the full replica ships (read from its snapshot, not through the cache)
    import tokenizers

    published = tokenizers.Tokenizer.from_file(str(hub / f"models--{entry['hub_id'].replace('/', '--')}" / "snapshots"
                                                   / entry["revision"] / "tokenizer.json"))
    assert prompts.encode_prompt(spm_only, entry, text) == published.encode(text, add_special_tokens=False).ids
    assert spm_only.convert_tokens_to_ids(["<|system|>", "<|assistant|>", "<|user|>"]) == [7, 8, 9]


def test_stop_strings_fire_on_rinnas_newline_marker(hub, jsquad_data):
    from switchpoint.infer_local.hf_engine import StopWatch

    entry = {**manifests.get_model("rinna-3.6b-ppo"), "name": "rinna-3.6b-ppo"}
    tok = base_of("rinna-3.6b-ppo", jsquad_data).tokenizer
    ids = tok("東京<NL>次の", add_special_tokens=False)["input_ids"]
    watch = StopWatch(tok, ["\n"], entry)
    assert [watch.update(0, ids[: k + 1]) for k in range(len(ids))][-1] is True
    assert not StopWatch(tok, ["\n"], {}).update(0, ids)  # without the newline marker it would never fire


def test_the_sentencepiece_tokenizer_pickles_for_worker_processes(hub, jsquad_data):
    import pickle

    tok = base_of("rinna-4b-ppo", jsquad_data).tokenizer
    again = pickle.loads(pickle.dumps(tok))
    assert type(again).__module__ == "switchpoint.core.modeling"
    assert again("一\n二☃", add_special_tokens=False)["input_ids"] == tok("一\n二☃", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", ["rinna-3.6b-ppo", "qwen2.5-1.5b-instruct"])
def test_lm_eval_docs_export_lays_out_the_engines_prompts_without_loading_the_model(hub, jsquad_data, tmp_path, name):
    import json

    from switchpoint.infer_local.lm_eval_engine import export_docs
    from switchpoint.infer_local.passes import fit_prompt

    task = load_task_from_data(jsquad_data)
    entry = {**manifests.get_model(name), "name": name}
    tokenizer = base_of(name, jsquad_data).tokenizer
    loads = modeling.BASE_MODEL_LOADS
    path = export_docs(jsquad_data, name, tmp_path, shots=2)
    assert modeling.BASE_MODEL_LOADS == loads  # the tokenizer alone lays out the prompts
    budget = entry["context_length"] - task["generation"]["max_new_tokens"]
    train = read_train_set(jsquad_data, 0, 2)
    expected = [fit_prompt(task, entry, ex, train, tokenizer, budget)[0] for ex in read_eval_set(jsquad_data)]
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [d["prompt"] for d in docs] == expected and len(docs) == len(expected)
