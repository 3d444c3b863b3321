"""A ``tokenizer.json`` made from a replica's trained sentencepiece model, shaped as the real repository's.

Several repositories ship a fast-tokenizer ``tokenizer.json`` beside (or instead of) their sentencepiece
model, and transformers loads that file, not the ``.model``. Its pipeline (normalizer, pre-tokenizer,
decoder, post-processor) decides the ids a prompt gets, so each replica's ``tokenizer.json`` takes the
pipeline its real repository publishes (SOURCES.md says where each was read):

- ``llama-legacy`` (ELYZA, converted by transformers 4.3x's LlamaConverter): BPE with byte fallback,
  normalizer ``Prepend("▁")`` + ``Replace(" ", "▁")``, no pre-tokenizer, decoder that strips the
  leading space, post-processor ``<s> $A``.
- ``llmjp3`` (llm-jp-3, llm-jp-tokenizer v3.0b2's tokenizer.json): Unigram with byte fallback; normalizer
  ``Replace(Regex("(?<!\\n)^"), "▁")`` (a dummy prefix at the text's start) then ``Replace(" ", "▁")``;
  no pre-tokenizer; post-processor ``<s> $A`` (pair ``<s> $A <s> $B``); decoder ByteFallback,
  ``Replace("▁", " ")``, Fuse, ``Replace(Regex("(?<!\\n)^ "), "")``.
- ``metaspace-never`` (sarashina2.2): Unigram with byte fallback, no normalizer, pre-tokenizer
  ``Metaspace(prepend_scheme="never", split=False)``, decoder Replace/ByteFallback/Fuse.

Special tokens are the model's control pieces, added at their ids (``normalized: false``).
"""

from __future__ import annotations

import json

REPLACEMENT = "\u2581"


def _proto(spm: bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(spm)
    return proto


def _model(proto, kind: str):
    from tokenizers import models

    pieces = [(p.piece, p.score) for p in proto.pieces]
    if kind == "llama-legacy":
        from transformers.convert_slow_tokenizer import generate_merges

        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        return models.BPE(vocab, generate_merges(vocab), unk_token=proto.pieces[proto.trainer_spec.unk_id].piece,
                          fuse_unk=True, byte_fallback=True)
    return models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id, byte_fallback=True)


def _pipeline(tok, kind: str, bos: str) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    if kind == "llama-legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(REPLACEMENT), normalizers.Replace(" ", REPLACEMENT)])
        tok.decoder = decoders.Sequence([decoders.Replace(REPLACEMENT, " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
    elif kind == "llmjp3":
        from tokenizers import Regex

        # A dummy prefix as a regex: `^` is a line start in Oniguruma, `(?<!\n)` keeps it to the text's start.
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex("(?<!\n)^"), REPLACEMENT),
                                               normalizers.Replace(Regex(" "), REPLACEMENT)])
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Replace(Regex(REPLACEMENT), " "),
                                         decoders.Fuse(), decoders.Replace(Regex("(?<!\n)^ "), "")])
        tok.post_processor = processors.TemplateProcessing(  # v3.0b2: "add bos instead of eos"
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
    elif kind == "metaspace-never":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=REPLACEMENT, prepend_scheme="never", split=False)
        tok.decoder = decoders.Sequence([decoders.Replace(REPLACEMENT, " "), decoders.ByteFallback(), decoders.Fuse()])
    else:
        raise ValueError(f"unknown tokenizer.json kind {kind!r}")


def spm_to_tokenizer_json(spm: bytes, kind: str, specials: dict[str, int]) -> str:
    """``tokenizer.json`` text for the sentencepiece model ``spm``; ``specials`` are renamed to these
    texts at these ids (llm-jp's converter renames its control pieces, e.g. ``<PAD>`` -> ``<PAD|LLM-jp>``)."""
    from tokenizers import AddedToken, Tokenizer

    proto = _proto(spm)
    for text, index in specials.items():
        proto.pieces[index].piece = text
    tok = Tokenizer(_model(proto, kind))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, _ in sorted(specials.items(), key=lambda kv: kv[1])])
    bos = next((t for t, i in specials.items() if i == proto.trainer_spec.bos_id), "<s>")
    _pipeline(tok, kind, bos)
    data = json.loads(tok.to_str())
    assert [a["id"] for a in data["added_tokens"]] == sorted(specials.values()), "special tokens moved"
    return json.dumps(data, ensure_ascii=False)
