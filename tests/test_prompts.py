"""Prompts: the same task text for every arm, shots as turns, each model's layout."""

from __future__ import annotations

import pytest
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import read_eval_set, read_train_set
from switchpoint.core.prompts import (
    build_turns,
    encode_answer,
    encode_prompt,
    fit_prompt,
    fit_training_example,
    format_prompt,
    from_model_text,
    model_prompt,
    postprocess,
    to_model_text,
)


def test_shots_are_earlier_turns_in_order_then_the_question(jsquad_data):
    task = manifests.load_task("jsquad")
    example = read_eval_set(jsquad_data)[0]
    shots = read_train_set(jsquad_data, 0, 2)
    system, turns = build_turns(task, example, shots)
    assert system == task["prompt"]["instruction"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert shots[0]["question"] in turns[0]["content"] and turns[1]["content"] == shots[0]["references"][0]
    assert shots[1]["question"] in turns[2]["content"] and turns[3]["content"] == shots[1]["references"][0]
    assert turns[4]["content"] == f"文章：{example['context']}\n質問：{example['question']}"


def test_xlsum_summary_only_variant_lists_the_shots_in_the_system_text(xlsum_data):
    task = manifests.load_task("xlsum")
    example = read_eval_set(xlsum_data)[0]
    shots = read_train_set(xlsum_data, 1, 2)
    system, turns = build_turns(task, example, shots, variant="summary-only")
    assert len(turns) == 1 and shots[0]["text"] not in system
    assert f"要約の例：{shots[0]['references'][0]}" in system and f"要約の例：{shots[1]['references'][0]}" in system
    _, full = build_turns(task, example, shots, variant="full")
    assert len(full) == 5 and shots[0]["text"] in full[0]["content"]
    with pytest.raises(JobError, match="no prompt variant 'short'; known: full, summary-only"):
        build_turns(task, example, shots, variant="short")


@pytest.mark.parametrize("model,ending", [("open-calm-1b", "### 応答:\n"), ("rinna-3.6b-ppo", "<NL>システム: "),
                                          ("elyza-7b", " [/INST] "), ("tiny-gpt-neox", "出力:\n")])
def test_named_templates_end_where_the_answer_starts(jsquad_data, model, ending):
    task, entry = manifests.load_task("jsquad"), manifests.get_model(model)
    example = read_eval_set(jsquad_data)[0]
    prompt = model_prompt(task, entry, example, read_train_set(jsquad_data, 0, 2))
    assert prompt.endswith(ending)
    assert example["question"] in prompt and task["prompt"]["instruction"] in prompt
    if model == "rinna-3.6b-ppo":
        assert "\n" not in prompt  # rinna marks newlines as <NL>


def _tokenizer_with_bos(chat_template: str):
    from switchpoint.core.tiny import train_tokenizer
    from tokenizers import processors

    tok = train_tokenizer(["文章 質問 答え system user"] * 3, vocab_size=300)
    tok.add_special_tokens({"bos_token": "<s>"})
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    tok.chat_template = chat_template
    return tok


def test_a_chat_templates_literal_bos_is_kept_and_never_doubled():
    template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    tok = _tokenizer_with_bos(template)
    entry = {"name": "chat", "prompt_format": "chat-template"}
    text = format_prompt(entry, "sys", [{"role": "user", "content": "質問"}], tok)
    assert text == "<s>[system]sys[user]質問[assistant]"  # tokenised as it is, like apply_chat_template(tokenize=True)
    for wants_bos in (True, False, None):
        chosen = entry if wants_bos is None else {**entry, "add_bos": wants_bos}
        ids = encode_prompt(tok, chosen, text)
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_prompt_ids_never_carry_the_tokenizers_added_eos():
    from tokenizers import processors

    tok = _tokenizer_with_bos("")
    tok.add_special_tokens({"eos_token": "</s>"})
    # A post-processor like transformers 5's converted T5Tokenizer: appends </s> with special tokens.
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)])
    assert tok("質問")["input_ids"][-1] == tok.eos_token_id
    for add_bos in (True, False):
        ids = encode_prompt(tok, {"name": "m", "add_bos": add_bos}, "質問")
        assert ids[-1] != tok.eos_token_id and (ids[0] == tok.bos_token_id) == add_bos


@pytest.mark.parametrize("fmt,start,end", [
    ("swallow", "以下に、あるタスクを説明する指示があり、それに付随する入力が更なる文脈を提供しています。", "\n\n### 応答:"),
    ("rinna-bilingual", "ユーザー: ", "\nシステム: "), ("rinna", "ユーザー: ", "<NL>システム: "),
    ("llama2", "[INST] <<SYS>>\n", " [/INST] ")])
def test_each_named_layout_follows_its_model_card(jsquad_data, fmt, start, end):
    task = manifests.load_task("jsquad")
    example = read_eval_set(jsquad_data)[0]
    shots = read_train_set(jsquad_data, 0, 2)
    text = model_prompt(task, {"name": "m", "prompt_format": fmt}, example, shots)
    assert text.startswith(start) and text.endswith(end)
    assert (fmt == "rinna") == ("\n" not in text)  # only rinna-3.6b writes newlines as <NL>
    if fmt == "swallow":
        assert text.count("### 入力:") == 3 and text.count("### 応答:") == 3 and f"### 指示:\n{task['prompt']['instruction']}" in text


def test_newline_marker_both_ways():
    entry = {"name": "rinna", "newline": "<NL>"}
    assert to_model_text(entry, "a\nb") == "a<NL>b" and from_model_text(entry, "a<NL>b") == "a\nb"
    assert to_model_text({"name": "m"}, "a\nb") == "a\nb"


def test_fitting_shortens_only_the_input_field_and_is_the_same_for_training(xlsum_data):
    from switchpoint.core.tiny import train_tokenizer

    task = manifests.load_task("xlsum")
    example = read_eval_set(xlsum_data)[0]
    entry = {"name": "m", "prompt_format": "alpaca", "add_bos": False}
    tok = train_tokenizer([example["text"], task["prompt"]["instruction"], "以下は 指示 入力 応答"], vocab_size=600)
    full = fit_prompt(task, entry, example, (), tok, budget=100_000)
    assert not full.truncated and full.ids == encode_prompt(tok, entry, full.text)
    budget = len(full.ids) // 2
    cut = fit_prompt(task, entry, example, (), tok, budget)
    assert cut.truncated and budget - 3 <= len(cut.ids) <= budget  # as few characters as needed are cut
    head, article = cut.text.split("### 入力:\n", 1)
    assert head == full.text.split("### 入力:\n", 1)[0] and cut.text.endswith("### 応答:\n")
    kept = article.split("\n\n### 応答:")[0]
    assert kept and example["text"].endswith(kept.split("記事：", 1)[-1]) and len(kept) < len(example["text"])
    # Training: the answer is kept whole, the same function fits the prompt in what is left.
    answer = encode_answer(tok, entry, example["references"][0])
    prompt_ids, answer_ids, truncated = fit_training_example(task, entry, example, tok, budget + len(answer))
    assert truncated and answer_ids == answer and prompt_ids == cut.ids
    assert fit_prompt(task, entry, example, (), tok, budget=5) is None  # not even the template fits


def test_chat_template_missing_is_a_clear_error():
    entry = {"name": "m", "prompt_format": "chat-template"}
    with pytest.raises(JobError, match="tokenizer has none; set prompt_format to a named template"):
        format_prompt(entry, "s", [{"role": "user", "content": "q"}], tokenizer=None)


def test_postprocess_cuts_at_the_first_stop_after_leading_whitespace():
    task = manifests.load_task("jsquad")
    assert postprocess(task, "\n 小笠原諸島\n質問：次") == "小笠原諸島"
    assert postprocess(task, "") == ""


def test_the_bos_probe_of_a_model_without_add_bos_runs_once_per_tokenizer():
    from switchpoint.core.prompts import encode_prompt

    class Tokenizer:  # starts every text with BOS (id 1) when special tokens are added
        bos_token_id = 1

        def __init__(self):
            self.calls = []

        def __call__(self, text, add_special_tokens=True):
            self.calls.append(add_special_tokens)
            return {"input_ids": ([1] if add_special_tokens else []) + [5, 6]}

    tokenizer = Tokenizer()
    ids = [encode_prompt(tokenizer, {"name": "own"}, text) for text in ("a", "b", "c")]
    assert ids == [[1, 5, 6]] * 3
    assert tokenizer.calls.count(True) == 1 and tokenizer.calls.count(False) == 3
