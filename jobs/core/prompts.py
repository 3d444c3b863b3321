"""Prompts: the same task text for every arm, laid out in each model's format.

A prompt is built in two steps. ``build_turns`` turns a task manifest, an example and its shots
into a system text plus chat turns (user/assistant pairs for the shots, then the question); this is
exactly what the API arm sends to Claude. ``format_prompt`` lays those turns out for an open model:
its tokenizer's chat template, or a named template (alpaca, rinna, llama2/elyza, plain). Training
text is ``format_prompt(...) + answer_text(example) + eos``; the loss covers only the answer part.
"""

from __future__ import annotations

from typing import Any, Sequence

from switchpoint.core.contract import JobError

Turn = dict[str, str]


def render_input(task: dict, example: dict, template: str | None = None) -> str:
    """The task's input template filled from the example's input fields."""
    fields = {name: example.get(name, "") for name in task["fields"]["inputs"]}
    try:
        return (template if template is not None else task["prompt"]["input_template"]).format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise JobError(f"task {task['name']}: prompt template cannot be filled from example {example.get('id')!r} ({err})") from err


def answer_text(example: dict) -> str:
    """The training target: the first reference (JSQuAD's first gold answer, XLSum's summary)."""
    refs = example.get("references") or []
    if not refs:
        raise JobError(f"example {example.get('id')!r} has no references to train or show as a shot")
    return refs[0]


def variant_spec(task: dict, variant: str | None) -> dict[str, Any]:
    if variant is None:
        return {"shots": "turns"}
    variants = task["prompt"].get("variants", {})
    if variant not in variants:
        raise JobError(f"task {task['name']} has no prompt variant {variant!r}; known: {', '.join(sorted(variants)) or 'none'}")
    return {"shots": "turns", **variants[variant]}


def build_turns(task: dict, example: dict, shots: Sequence[dict] = (), variant: str | None = None) -> tuple[str, list[Turn]]:
    """System text and chat turns: shots as earlier user/assistant turns, then the question.

    With a variant whose ``shots`` is ``instruction`` (XLSum's ``summary-only``), the shots are
    listed in the system text through ``shot_template`` instead of as turns.
    """
    spec = variant_spec(task, variant)
    system = task["prompt"]["instruction"]
    turns: list[Turn] = []
    if spec["shots"] == "instruction" and shots:
        template = spec.get("shot_template", "{reference}")
        lines = [template.format(reference=answer_text(s), **{k: s.get(k, "") for k in task["fields"]["inputs"]})
                 for s in shots]
        system = system + "\n\n" + "\n".join(lines)
    else:
        for shot in shots:
            turns.append({"role": "user", "content": render_input(task, shot)})
            turns.append({"role": "assistant", "content": answer_text(shot)})
    turns.append({"role": "user", "content": render_input(task, example)})
    return system, turns


# --- open-model layouts ----------------------------------------------------------------------
ALPACA_HEADER = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。"


def _alpaca(system: str, turns: list[Turn]) -> str:
    parts = [ALPACA_HEADER, f"### 指示:\n{system}"]
    for turn in turns:
        if turn["role"] == "user":
            parts.append(f"### 入力:\n{turn['content']}")
        else:
            parts.append(f"### 応答:\n{turn['content']}")
    return "\n\n".join(parts) + "\n\n### 応答:\n"


def _rinna(system: str, turns: list[Turn]) -> str:
    # rinna's instruction models mark newlines as "<NL>" and speakers as ユーザー/システム.
    lines = []
    for i, turn in enumerate(turns):
        text = turn["content"]
        if i == 0:
            text = f"{system}\n{text}"
        speaker = "ユーザー" if turn["role"] == "user" else "システム"
        lines.append(f"{speaker}: {text}".replace("\n", "<NL>"))
    return "<NL>".join(lines) + "<NL>システム: "


def _llama2(system: str, turns: list[Turn]) -> str:
    # Llama-2-chat / ELYZA layout; the tokenizer adds the first BOS.
    out = ""
    first = True
    for turn in turns:
        if turn["role"] == "user":
            text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{turn['content']}" if first else turn["content"]
            out += ("" if first else "<s>") + f"[INST] {text} [/INST] "
            first = False
        else:
            out += f"{turn['content']} </s>"
    return out


def _plain(system: str, turns: list[Turn]) -> str:
    parts = [system]
    for turn in turns:
        tag = "入力" if turn["role"] == "user" else "出力"
        parts.append(f"{tag}:\n{turn['content']}")
    return "\n\n".join(parts) + "\n\n出力:\n"


NAMED_TEMPLATES = {"alpaca": _alpaca, "rinna": _rinna, "llama2": _llama2, "elyza": _llama2, "plain": _plain}


def format_prompt(model_entry: dict, system: str, turns: list[Turn], tokenizer: Any = None) -> str:
    """The prompt text for an open model, ending where the answer starts."""
    fmt = model_entry["prompt_format"]
    if fmt == "chat-template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise JobError(f"model {model_entry.get('name')!r} asks for its tokenizer's chat template, but the tokenizer has none; "
                           "set prompt_format to a named template (alpaca, rinna, llama2, plain) in models.yaml")
        messages = [{"role": "system", "content": system}, *turns]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _without_template_bos(text, tokenizer)
    try:
        return NAMED_TEMPLATES[fmt](system, turns)
    except KeyError:
        raise JobError(f"model {model_entry.get('name')!r}: unknown prompt_format {fmt!r}") from None


def _without_template_bos(text: str, tokenizer: Any) -> str:
    """Drop a chat template's literal BOS when the tokenizer adds its own.

    Every job tokenises prompts with the tokenizer's special tokens (train, infer, lm-eval alike);
    a template that also writes ``<s>``/``<|begin_of_text|>`` would otherwise give two BOS tokens.
    """
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            return text[len(bos):]
    return text


def model_prompt(task: dict, model_entry: dict, example: dict, shots: Sequence[dict] = (), tokenizer: Any = None,
                 variant: str | None = None) -> str:
    """Convenience: ``build_turns`` then ``format_prompt``."""
    system, turns = build_turns(task, example, shots, variant)
    return format_prompt(model_entry, system, turns, tokenizer)


def postprocess(task: dict, generated: str) -> str:
    """Cut the generation at the first stop string and strip surrounding whitespace."""
    text = generated.lstrip()  # a leading newline is not an empty answer
    for stop in task["generation"].get("stop", []):
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text.strip()
