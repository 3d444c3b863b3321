"""Prompts: the same task text for every arm, shots as turns, each model's layout."""

from __future__ import annotations

import pytest
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import read_eval_set, read_train_set
from switchpoint.core.prompts import (
    build_turns,
    format_prompt,
    model_prompt,
    postprocess,
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


def test_a_chat_templates_literal_bos_is_not_doubled():
    template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    tok = _tokenizer_with_bos(template)
    entry = {"name": "chat", "prompt_format": "chat-template"}
    text = format_prompt(entry, "sys", [{"role": "user", "content": "質問"}], tok)
    assert text == "[system]sys[user]質問[assistant]"
    ids = tok(text)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_chat_template_missing_is_a_clear_error():
    entry = {"name": "m", "prompt_format": "chat-template"}
    with pytest.raises(JobError, match="tokenizer has none; set prompt_format to a named template"):
        format_prompt(entry, "s", [{"role": "user", "content": "q"}], tokenizer=None)


def test_postprocess_cuts_at_the_first_stop_after_leading_whitespace():
    task = manifests.load_task("jsquad")
    assert postprocess(task, "\n 小笠原諸島\n質問：次") == "小笠原諸島"
    assert postprocess(task, "") == ""
