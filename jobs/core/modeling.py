"""Loading a base model from its manifest entry, once per job.

One place decides where the weights come from (Hub id, local folder, or a tiny model built from
the data folder), the device and precision (bf16 on a GPU that supports it, fp32 on CPU), optional
4/8-bit loading, and the base model's fingerprint, which each adapter records so that an adapter is
never evaluated on another base. ``BASE_MODEL_LOADS`` counts loads so tests can assert one per job.
The tokenizer is the model card's (``load_tokenizer``: rinna's sentencepiece model through
sentencepiece itself) and ``stop_token_ids`` lists every end token ``generate`` must know.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchpoint.core.contract import JobError

BASE_MODEL_LOADS = 0


@dataclass
class BaseModel:
    model: Any
    tokenizer: Any
    entry: dict
    fingerprint: str
    device: str
    dtype: str


def device_and_dtype() -> tuple[str, Any]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def usable_cores() -> int:
    """The cores this process may really run on (a container's or taskset's share, not the host's
    count, which oversubscribes a shared machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_memory_bytes(device: str) -> int:
    """GPU: torch's peak allocation; CPU: the process's peak resident set (Linux reports KiB, macOS bytes)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated())
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if platform.system() == "Darwin" else rss * 1024)


def tiny_texts(task: dict, data_dir: Path) -> list[str]:
    """Text the tiny tokenizer is trained on: the pool's inputs and references plus the prompt words.

    Only the training pool, never the eval set, so the tokenizer carries nothing from evaluation.
    """
    from switchpoint.core.datafolder import read_jsonl

    texts = [task["prompt"]["instruction"], task["prompt"]["input_template"], "入力 出力 文章 質問 要約"]
    for rec in read_jsonl(Path(data_dir) / "pool.jsonl"):
        texts.extend(str(rec[k]) for k in task["fields"]["inputs"])
        texts.extend(rec["references"])
    return texts


def fingerprint(entry: dict, data_dir: Path | None) -> str:
    if entry["source"] == "hub":
        return f"hub:{entry['hub_id']}@{entry.get('revision', 'main')}"
    if entry["source"] == "local":
        return f"local:{entry['path']}"
    if data_dir is None:
        raise JobError(f"model {entry['name']}: a tiny model is built from a data folder; none given")
    pool = (Path(data_dir) / "pool.jsonl").read_bytes()
    return f"tiny:{entry['family']}:{hashlib.sha256(pool).hexdigest()[:16]}"


def load_base(entry: dict, data_dir: Path | None, *, load_in_4bit: bool = False, load_in_8bit: bool = False,
              device: str | None = None) -> BaseModel:
    """Load (or, for ``source: tiny``, build) the base model and tokenizer of a models.yaml entry."""
    global BASE_MODEL_LOADS
    import torch

    auto_device, dtype = device_and_dtype()
    device = device or auto_device
    if device == "cpu":
        dtype = torch.float32
    if (load_in_4bit or load_in_8bit) and device != "cuda":
        raise JobError(f"model {entry['name']}: 4-bit/8-bit loading needs a CUDA GPU (bitsandbytes); this job runs on {device}")
    if entry["source"] == "tiny":
        from switchpoint.core.datafolder import load_task_from_data

        if data_dir is None:
            raise JobError(f"model {entry['name']}: a tiny model is built from a data folder; none given")
        from switchpoint.core.tiny import build_tiny

        task = load_task_from_data(data_dir)
        model, tokenizer = build_tiny(entry["family"], tiny_texts(task, data_dir),
                                      context_length=entry.get("context_length", 4096))
    else:
        from transformers import AutoModelForCausalLM

        where = entry["hub_id"] if entry["source"] == "hub" else entry["path"]
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": entry.get("trust_remote_code", False)}
        if entry.get("revision"):
            kwargs["revision"] = entry["revision"]
        if load_in_4bit or load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, bnb_4bit_compute_dtype=dtype,
                bnb_4bit_quant_type="nf4")
            kwargs["device_map"] = {"": torch.cuda.current_device()}  # each DDP rank on its own GPU
        try:
            tokenizer = load_tokenizer(entry)
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        except OSError as err:
            raise JobError(f"model {entry['name']}: cannot load {where!r} ({str(err).splitlines()[0]}); "
                           "check the Hub id and network, or use SWEEP=smoke offline") from err
    if not (load_in_4bit or load_in_8bit):
        model.to(device)
    BASE_MODEL_LOADS += 1
    return BaseModel(model, tokenizer, entry, fingerprint(entry, data_dir), device, str(dtype).replace("torch.", ""))


def load_tokenizer(entry: dict) -> Any:
    """The tokenizer of a hub/local entry, behaving as the model card's tokenizer.

    ``tokenizer: sentencepiece`` (rinna, sarashina2.2): the repository's ``spiece.model`` or
    ``tokenizer.model`` through sentencepiece itself, as the cards' ``use_fast=False`` tokenizers did.
    transformers 5 ignores ``use_fast=False`` and converts rinna's into a fast tokenizer that drops
    ``\n``, adds a dummy-prefix space and maps characters it lacks to id 2 instead of their UTF-8 byte
    pieces; a ``LlamaTokenizer`` class (sarashina) it rebuilds as a BPE with a leading "▁", where the
    model is a Unigram without one. ``tokenizer: tokenizer-json``: the repository's ``tokenizer.json``
    exactly as published, whatever tokenizer class its config names.
    """
    from transformers import AutoTokenizer

    where = entry["hub_id"] if entry["source"] == "hub" else entry["path"]
    if entry.get("tokenizer") == "sentencepiece":
        tokenizer = _sentencepiece_tokenizer(where, entry.get("revision"))
    elif entry.get("tokenizer") == "tokenizer-json":
        # The repository's tokenizer.json as published, as transformers 4's fast tokenizer used it;
        # transformers 5 rebuilds a LlamaTokenizer's pipeline from the class instead.
        from transformers import PreTrainedTokenizerFast
        from transformers.utils import cached_file

        if cached_file(where, "tokenizer.json", revision=entry.get("revision"),
                       _raise_exceptions_for_missing_entries=False) is None:
            raise JobError(f"model {entry.get('name', where)!r}: models.yaml says tokenizer: tokenizer-json, but {where} "
                           f"(revision {entry.get('revision') or 'main'}) has no tokenizer.json ({NOT_HERE}); "
                           "remove that key to load the tokenizer the repository's config names")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(where, revision=entry.get("revision"))
    else:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=entry.get("revision"),
                                                  trust_remote_code=entry.get("trust_remote_code", False))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _card_tokenizer_class() -> type:
    """``CardSentencePieceTokenizer``, built on first use (transformers is imported lazily here)."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class CardSentencePieceTokenizer(SentencePieceBackend):
        """sentencepiece encoding and decoding (byte pieces joined back into characters); no special
        tokens are added to a text (``prompts.encode_prompt`` decides BOS)."""

        def _convert_id_to_token(self, index: int) -> str:
            # Embedding rows past the vocabulary have no piece: no text (as a fast tokenizer decodes them).
            return self.sp_model.IdToPiece(index) if 0 <= index < self.sp_model.get_piece_size() else ""

        def convert_tokens_to_string(self, tokens: list[str]) -> str:
            # sentencepiece decodes control pieces (<s>, </s>) to nothing: a kept special token is its text.
            special, out, run = set(self.all_special_tokens), [], []
            for token in tokens:
                if token in special:
                    out += [self.sp_model.decode_pieces(run), token]
                    run = []
                elif token:
                    run.append(token)
            return "".join(out) + self.sp_model.decode_pieces(run)

    CardSentencePieceTokenizer.__module__, CardSentencePieceTokenizer.__qualname__ = __name__, "CardSentencePieceTokenizer"
    globals()["CardSentencePieceTokenizer"] = CardSentencePieceTokenizer
    return CardSentencePieceTokenizer


def __getattr__(name: str) -> Any:
    # A module-level name, so the tokenizer pickles (lm-eval, data loaders) and unpickles in a new process.
    if name == "CardSentencePieceTokenizer":
        return _card_tokenizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model")
NOT_HERE = "not in the repository at that revision, or (offline) not in this machine's Hugging Face cache"


def _token_text(value: Any) -> str | None:
    """A tokenizer_config token, written as a string or as an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def _config_specials(config: dict, pieces: Any, where: str) -> tuple[dict[str, str], list[str]]:
    """(bos/eos/unk/pad, other special tokens) the config names, each checked to be a piece of the
    sentencepiece model at the id the config gives: a token that is not would be appended past the
    vocabulary, past the embedding matrix."""
    special = {k: t for k in ("bos_token", "eos_token", "unk_token", "pad_token") if (t := _token_text(config.get(k)))}
    listed = config.get("additional_special_tokens") or []
    named = {_token_text(t): None for t in ([listed] if isinstance(listed, str) else listed)}
    for index, token in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(token, dict) and token.get("special"):
            if not str(index).isdigit():
                raise JobError(f"{where}: added_tokens_decoder key {index!r} is not a token id")
            named[token.get("content")] = int(index)
    unk = pieces.id_to_piece(pieces.unk_id())
    for token, index in {**{t: None for t in special.values()}, **named}.items():
        found = pieces.piece_to_id(token) if token else pieces.unk_id()
        known = bool(token) and (found != pieces.unk_id() or token == unk)
        if not known or (index is not None and found != index):
            has = f"has it at id {found}" if known else "has no such piece"
            raise JobError(f"{where} names the special token {token!r}{f' at id {index}' if index is not None else ''}; "
                           f"the sentencepiece model {has}. Set tokenizer: auto for this model")
    return special, [t for t in named if t not in special.values()]


def _sentencepiece_tokenizer(where: str, revision: str | None) -> Any:
    """The repository's sentencepiece model through sentencepiece itself, with the special tokens its
    tokenizer_config names (a chat template's turn marks among them) and its chat template. A config
    that turns the dummy prefix off (``add_prefix_space``/``add_dummy_prefix_space``/``legacy``
    false) has it cleared in the model, as transformers' non-legacy Llama tokenizer does."""
    import sentencepiece
    from transformers.utils import cached_file

    def fetch(name: str) -> str | None:
        return cached_file(where, name, revision=revision, _raise_exceptions_for_missing_entries=False)

    at = f"{where} (revision {revision or 'main'})"
    spiece = next((path for path in map(fetch, SENTENCEPIECE_FILES) if path), None)
    if spiece is None:
        raise JobError(f"{at}: tokenizer: sentencepiece needs {' or '.join(SENTENCEPIECE_FILES)}; neither is there "
                       f"({NOT_HERE})")
    config_path = fetch("tokenizer_config.json")
    if config_path is None:
        raise JobError(f"{at}: tokenizer: sentencepiece needs tokenizer_config.json for its special tokens ({NOT_HERE})")
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    special, extra = _config_specials(config, sentencepiece.SentencePieceProcessor(model_file=spiece),
                                      f"{at}/tokenizer_config.json")
    no_prefix = any(config.get(k) is False for k in ("add_prefix_space", "add_dummy_prefix_space", "legacy"))
    card_class = globals().get("CardSentencePieceTokenizer") or _card_tokenizer_class()
    tokenizer = card_class(vocab_file=spiece, legacy=not no_prefix, **special, extra_special_tokens=extra)
    template = config.get("chat_template")
    if template is None and (jinja := fetch("chat_template.jinja")):
        template = Path(jinja).read_text(encoding="utf-8")
    if template:
        tokenizer.chat_template = template
    return tokenizer


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a generation: the generation config's EOS ids (Qwen2.5 lists two) and the
    tokenizer's. ``generate`` gets this list, never one id that would override the model's own list."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in [*(configured if isinstance(configured, (list, tuple)) else [configured]), tokenizer.eos_token_id]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


def write_base_info(adapter_dir: Path, base: BaseModel) -> None:
    """Record which base an adapter belongs to (checked before any generation)."""
    (Path(adapter_dir) / "base.json").write_text(
        json.dumps({"model": base.entry["name"], "fingerprint": base.fingerprint}, indent=2) + "\n", encoding="utf-8")


def check_base_info(adapter_dir: Path, base: BaseModel) -> None:
    path = Path(adapter_dir) / "base.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: missing or unreadable; this adapter was not written by `switchpoint train`") from err
    if info.get("fingerprint") != base.fingerprint:
        raise JobError(f"{adapter_dir}: adapter was trained on base {info.get('model')!r} ({info.get('fingerprint')}), "
                       f"but this job loaded {base.entry['name']!r} ({base.fingerprint}); use the matching model")
