"""Prompts: the same task text for every arm, laid out and tokenised as each model card says.

A prompt is built in two steps. ``build_turns`` turns a task manifest, an example and its shots
into a system text plus chat turns (user/assistant pairs for the shots, then the question); this is
exactly what the API arm sends to Claude. ``format_prompt`` lays those turns out for an open model:
its tokenizer's chat template, or a named layout from its model card (alpaca, swallow, rinna,
rinna-bilingual, llama2/elyza, plain).

The model contract, one place for every job and engine: ``encode_prompt`` tokenises a prompt
without the tokenizer's special tokens and adds a BOS only where the card does (models.yaml
``add_bos``), never an EOS; ``encode_answer`` writes a training target in the model's newline
convention (``newline``, rinna-3.6b's ``<NL>``), tokenised as it continues the prompt (no dummy-prefix
space), and ends it with the EOS; ``decode_generation``
turns generated ids back into plain text (no special tokens, ``\n`` newlines) before stop strings
and ``postprocess``; ``fit_prompt`` shortens only the input field of an over-long prompt, for
training (``fit_training_example``) and inference alike, so both see the same prompt ids.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

from switchpoint.core.contract import JobError

# tokenizer -> whether it starts a text with BOS by itself (prompt_wants_bos's probe, once per tokenizer)
_BOS_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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


# --- open-model layouts (each as its model card writes it) --------------------------------------
ALPACA_HEADER = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。"
# tokyotech-llm/Swallow-*-instruct-hf model card, PROMPT_DICT["prompt_input"].
SWALLOW_HEADER = ("以下に、あるタスクを説明する指示があり、それに付随する入力が更なる文脈を提供しています。"
                  "リクエストを適切に完了するための回答を記述してください。")


def _alpaca(system: str, turns: list[Turn]) -> str:
    parts = [ALPACA_HEADER, f"### 指示:\n{system}"]
    for turn in turns:
        if turn["role"] == "user":
            parts.append(f"### 入力:\n{turn['content']}")
        else:
            parts.append(f"### 応答:\n{turn['content']}")
    return "\n\n".join(parts) + "\n\n### 応答:\n"


def _swallow(system: str, turns: list[Turn]) -> str:
    # The card's template ends "### 応答:" with no newline; shots repeat its 入力/応答 blocks.
    out = f"{SWALLOW_HEADER}\n\n### 指示:\n{system}"
    for turn in turns:
        if turn["role"] == "user":
            out += f"\n\n### 入力:\n{turn['content']}"
        else:
            out += f"\n\n### 応答:\n{turn['content']}"
    return out + "\n\n### 応答:"


def _rinna_lines(system: str, turns: list[Turn]) -> list[str]:
    lines = []
    for i, turn in enumerate(turns):
        text = f"{system}\n{turn['content']}" if i == 0 else turn["content"]
        speaker = "ユーザー" if turn["role"] == "user" else "システム"
        lines.append(f"{speaker}: {text}")
    return lines


def _rinna(system: str, turns: list[Turn]) -> str:
    # rinna/japanese-gpt-neox-3.6b-instruction-*: every newline is written "<NL>", utterances joined by "<NL>".
    return "<NL>".join(line.replace("\n", "<NL>") for line in _rinna_lines(system, turns)) + "<NL>システム: "


def _rinna_bilingual(system: str, turns: list[Turn]) -> str:
    # rinna/bilingual-gpt-neox-4b-instruction-*: the tokenizer keeps "\n"; utterances joined by "\n".
    return "\n".join(_rinna_lines(system, turns)) + "\nシステム: "


def _llama2(system: str, turns: list[Turn]) -> str:
    # Llama-2-chat / ELYZA layout; the first BOS is the tokenizer's (encode_prompt adds it).
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


NAMED_TEMPLATES = {"alpaca": _alpaca, "swallow": _swallow, "rinna": _rinna, "rinna-bilingual": _rinna_bilingual,
                   "llama2": _llama2, "elyza": _llama2, "plain": _plain}
PROMPT_FORMATS = ("chat-template", *NAMED_TEMPLATES)


def format_prompt(model_entry: dict, system: str, turns: list[Turn], tokenizer: Any = None) -> str:
    """The prompt text for an open model, ending where the answer starts."""
    fmt = model_entry["prompt_format"]
    if fmt == "chat-template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise JobError(f"model {model_entry.get('name')!r} asks for its tokenizer's chat template, but the tokenizer has none; "
                           f"set prompt_format to a named template ({', '.join(NAMED_TEMPLATES)}) in models.yaml")
        messages = [{"role": "system", "content": system}, *turns]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if system and system not in text:
            # A template that drops the system turn's text (llm-jp-3 writes a fixed header instead):
            # the task's instruction goes in front of the first user turn, so it is not lost.
            first = {**turns[0], "content": f"{system}\n\n{turns[0]['content']}"}
            text = tokenizer.apply_chat_template([messages[0], first, *turns[1:]], tokenize=False,
                                                 add_generation_prompt=True)
        return text  # a literal BOS the template writes stays: the card tokenises this text as it is
    layout = NAMED_TEMPLATES.get(fmt)
    if layout is None:
        raise JobError(f"model {model_entry.get('name')!r}: unknown prompt_format {fmt!r}")
    return layout(system, turns)


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


# --- tokenisation: the one way every job turns a prompt into ids -------------------------------
# Each model card tokenises its prompt without the tokenizer's special tokens and puts a BOS where
# the model was trained with one (Llama-2 family: yes; GPT-NeoX, Qwen: no; a chat template writes
# its own, as apply_chat_template(tokenize=True) tokenises the rendered text as it is). transformers 5 turns
# rinna's T5Tokenizer into a fast tokenizer that appends "</s>" whenever special tokens are added,
# so no job calls a tokenizer with special tokens: the BOS is added here, an EOS never.
@dataclass
class FittedPrompt:
    text: str
    ids: list[int]
    truncated: bool


def prompt_wants_bos(entry: dict, tokenizer: Any) -> bool:
    """models.yaml's ``add_bos``; without it, whether the tokenizer itself starts a text with BOS."""
    if "add_bos" in entry:
        if entry["add_bos"] and getattr(tokenizer, "bos_token_id", None) is None:
            raise JobError(f"model {entry.get('name')!r}: add_bos is true but the tokenizer has no BOS token; "
                           "set add_bos: false in models.yaml")
        return bool(entry["add_bos"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    try:  # one probe per tokenizer: encode_prompt asks for every prompt
        return _BOS_PROBES[tokenizer]
    except (KeyError, TypeError):
        ids = tokenizer("x")["input_ids"]
        wants = bool(ids) and ids[0] == bos
    with contextlib.suppress(TypeError):  # a tokenizer that cannot be weakly referenced is probed each time
        _BOS_PROBES[tokenizer] = wants
    return wants


def encode_prompt(tokenizer: Any, entry: dict, text: str) -> list[int]:
    """Prompt ids as the model card builds them: BOS only where the model wants it, never an EOS."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prompt_wants_bos(entry, tokenizer) and ids[:1] != [tokenizer.bos_token_id]:  # a chat template may write it
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def to_model_text(entry: dict, text: str) -> str:
    """Newlines as the model writes them (rinna-3.6b: ``<NL>``, models.yaml ``newline``)."""
    newline = entry.get("newline")
    return text.replace("\n", newline) if newline else text


def from_model_text(entry: dict, text: str) -> str:
    """The model's newline marker turned back into ``\\n`` (before stop strings and post-processing)."""
    newline = entry.get("newline")
    return text.replace(newline, "\n") if newline else text


def encode_answer(tokenizer: Any, entry: dict, answer: str, prompt_text: str | None = None) -> list[int]:
    """Training target ids: the answer in the model's newline convention, tokenised as it continues
    ``prompt_text``, then the end-of-turn token.

    Encoded on its own, the answer would get a tokenizer's dummy prefix (Llama's sentencepiece,
    llm-jp's normaliser): a leading "▁" the text does not have, so the model would learn to write a
    space. Its ids are instead those the prompt and the answer get together, past the prompt's own.
    Where the two merge at the seam (a prompt ending in a space that the answer's first piece takes),
    the answer is tokenised after a newline, which no piece crosses, and the newline's ids dropped.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise JobError(f"model {entry.get('name')!r}: the tokenizer has no EOS token to end a training answer with")
    text = to_model_text(entry, answer)
    for context in ([prompt_text] if prompt_text else []) + ["\n"]:
        before = tokenizer(context, add_special_tokens=False)["input_ids"]
        joint = tokenizer(context + text, add_special_tokens=False)["input_ids"]
        if joint[:len(before)] == before:
            return [*joint[len(before):], eos]
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], eos]


def decode_generation(tokenizer: Any, entry: dict, ids: Sequence[int], stop_ids: Sequence[int] = ()) -> str:
    """Generated ids -> plain text: cut at the first end token, no special-token text, ``\\n`` newlines."""
    ids = list(ids)
    for i, token in enumerate(ids):
        if token in stop_ids:
            ids = ids[:i]
            break
    # Embedding rows past the vocabulary (Qwen2.5 has 151,936 rows for 151,665 tokens) carry no text.
    size = len(tokenizer)
    return from_model_text(entry, tokenizer.decode([t for t in ids if t < size], skip_special_tokens=True))


def fit_prompt(task: dict, entry: dict, example: dict, shots: Sequence[dict], tokenizer: Any,
               budget: int) -> FittedPrompt | None:
    """The prompt in at most ``budget`` tokens, shortened only in the task's ``truncate_field``.

    The template (BOS, header, instruction, shots, other inputs) is kept; the field loses characters
    from its left end, as few as needed (binary search over the cut; a prompt never exceeds the
    budget). None when it does not fit even with that field empty. Training and inference both call
    this, so an example is trained on the same layout it is evaluated on.
    """
    text = model_prompt(task, entry, example, shots, tokenizer)
    ids = encode_prompt(tokenizer, entry, text)
    if len(ids) <= budget:
        return FittedPrompt(text, ids, False)
    name = task["prompt"].get("truncate_field")
    field = str(example.get(name, "")) if name else ""
    if not field:
        return None

    def attempt(start: int) -> FittedPrompt:
        cut = model_prompt(task, entry, {**example, name: field[start:]}, shots, tokenizer)
        return FittedPrompt(cut, encode_prompt(tokenizer, entry, cut), True)

    best = attempt(len(field))
    if len(best.ids) > budget:
        return None
    lo, hi = 0, len(field)  # attempt(hi) fits; find the smallest cut that does
    while lo < hi:
        mid = (lo + hi) // 2
        trial = attempt(mid)
        if len(trial.ids) <= budget:
            hi, best = mid, trial
        else:
            lo = mid + 1
    return best


def minimal_prompt_length(task: dict, entry: dict, example: dict, shots: Sequence[dict], tokenizer: Any) -> int:
    """Tokens of the prompt with its truncate field empty: what no cut can remove."""
    name = task["prompt"].get("truncate_field")
    emptied = {**example, name: ""} if name else example
    return len(encode_prompt(tokenizer, entry, model_prompt(task, entry, emptied, shots, tokenizer)))


def fit_training_example(task: dict, entry: dict, example: dict, tokenizer: Any,
                         cutoff_len: int) -> tuple[list[int], list[int], bool]:
    """(prompt ids, answer ids, truncated) of one training text in ``cutoff_len`` tokens.

    The answer (with its end token) is kept whole and the prompt fitted by ``fit_prompt`` in what is
    left; only when the prompt cannot shrink enough is the answer cut at its end.
    """
    # The whole prompt's seam is the fitted one's: a cut only shortens the input field before it.
    answer = encode_answer(tokenizer, entry, answer_text(example), model_prompt(task, entry, example, (), tokenizer))
    fitted = fit_prompt(task, entry, example, (), tokenizer, cutoff_len - len(answer))
    if fitted is None:
        floor = minimal_prompt_length(task, entry, example, (), tokenizer)
        if floor >= cutoff_len:
            raise JobError(f"example {example.get('id')!r}: the prompt needs {floor} tokens even without its input "
                           f"text, not less than cutoff-len {cutoff_len}; raise --cutoff-len")
        answer = answer[: cutoff_len - floor]
        fitted = fit_prompt(task, entry, example, (), tokenizer, cutoff_len - len(answer))
        assert fitted is not None  # the emptied field fits by construction
        return fitted.ids, answer, True
    return fitted.ids, answer, fitted.truncated
