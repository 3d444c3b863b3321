"""Build tiny replicas of the study's Hub models as a Hugging Face hub cache (offline, seconds).

Each replica is laid out as ``<cache>/models--org--name/{blobs,refs/main,snapshots/<commit>/...}``
under the real Hub id, so ``from_pretrained(hub_id, revision=...)`` with ``HF_HUB_OFFLINE=1`` takes
the same path as on a real machine. Tokenizers are trained on Japanese sentences from the bundled
data (``manifests/data``): a sentencepiece model of the real kind where the repository ships one, a
byte-level BPE ``tokenizer.json`` where it ships that, with the real special tokens at their real ids.
Deterministic: same sentences, one sentencepiece thread, seeded weights.

    python tests/replicas/build.py OUT_CACHE_DIR   # build every replica (also used by the tests)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from spm_json import spm_to_tokenizer_json  # noqa: E402
from specs import SPECS, ReplicaSpec  # noqa: E402


def corpus(limit: int = 600) -> list[str]:
    """A few hundred Japanese sentences from the bundled XL-Sum and JSQuAD samples."""
    sentences: list[str] = []
    with (REPO / "manifests/data/xlsum/train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            sentences.extend(s + "。" for s in (rec["summary"] + rec["text"]).split("。") if s.strip())
            if len(sentences) >= limit // 2:
                break
    jsquad = json.loads((REPO / "manifests/data/jsquad/train.json").read_text(encoding="utf-8"))
    for article in jsquad["data"]:
        for para in article["paragraphs"]:
            sentences.extend(s + "。" for s in para["context"].split("。") if s.strip())
            for qa in para["qas"]:
                sentences.append(qa["question"])
        if len(sentences) >= limit:
            break
    ascii_lines = ["Question: What is the answer? Answer: 42", "ユーザー: システム: 指示 入力 応答 要約 文章 質問",
                   "### 指示:", "### 入力:", "### 応答:", "[INST] <<SYS>> <</SYS>> [/INST]", "<NL>"]
    return [s.strip() for s in sentences[:limit]] + ascii_lines * 5


def train_spm(spec: ReplicaSpec, sentences: list[str]) -> bytes:
    import sentencepiece as spm

    out = io.BytesIO()
    options = dict(spec.spm_options)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=2400, character_coverage=0.9995,
        hard_vocab_limit=False, num_threads=1, minloglevel=2, **options)
    return out.getvalue()


def train_bytelevel(spec: ReplicaSpec, sentences: list[str]) -> str:
    """tokenizer.json: byte-level BPE, real special tokens at their real ids."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    low = {t: i for t, i in spec.specials.items() if i < 1000}
    if spec.hub_id.startswith("Qwen/"):
        tok.normalizer = normalizers.NFC()
        split = Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(split, behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=sorted(low, key=low.get), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    highs = [i for i in spec.specials.values() if i >= 1000]
    first_high = min(highs) if highs else len(vocab)
    for filler in range(len(vocab), first_high):  # unused rows, so the special tokens keep their real ids
        vocab[f"<|replica_unused_{filler}|>"] = filler
    high = {**{t: (i, True) for t, i in spec.specials.items() if i >= 1000},
            **{t: (i, False) for t, i in spec.extra_tokens.items()}}
    for content, (index, special) in sorted(high.items(), key=lambda kv: kv[1][0]):
        data["added_tokens"].append({"id": index, "content": content, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": special})
    return json.dumps(data, ensure_ascii=False)


def commit_for(hub_id: str, revision: str | None) -> str:
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    return hashlib.sha1(f"replica:{hub_id}".encode()).hexdigest()


def weights(spec: ReplicaSpec, folder: Path, used_ids: list[int]) -> None:
    """Seeded random weights; output rows of ids the tiny vocabulary lacks are zeroed, so the random
    model (like a trained one) generates tokens that exist, not padding rows of the embedding matrix."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in spec.config.items() if k != "architectures"})
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    keep = torch.zeros(spec.vocab_size, dtype=torch.bool)
    keep[used_ids] = True
    with torch.no_grad():
        model.get_output_embeddings().weight[~keep] = 0.0
    model.save_pretrained(folder)


def used_ids(spec: ReplicaSpec, files: dict[str, bytes]) -> list[int]:
    """Ids that are real tokens of the replica's tokenizer (not filler rows)."""
    if spec.tokenizer_kind == "bytelevel-bpe":
        data = json.loads(files["tokenizer.json"])
        ids = [i for t, i in data["model"]["vocab"].items() if not t.startswith("<|replica_unused_")]
        return ids + [t["id"] for t in data["added_tokens"]]
    import sentencepiece as spm

    model = next(blob for name, blob in files.items() if name.endswith(".model"))
    return list(range(spm.SentencePieceProcessor(model_proto=model).get_piece_size()))


def build_one(spec: ReplicaSpec, cache: Path, revision: str | None, sentences: list[str]) -> Path:
    repo = cache / f"models--{spec.hub_id.replace('/', '--')}"
    commit = commit_for(spec.hub_id, revision)
    files: dict[str, bytes] = {}
    files["config.json"] = json.dumps(spec.config, indent=2).encode()
    if spec.generation_config is not None:  # None: the repository ships none (rinna)
        files["generation_config.json"] = json.dumps({"transformers_version": "4.40.0", **spec.generation_config},
                                                     indent=2).encode()
    files["tokenizer_config.json"] = json.dumps(spec.tokenizer_config, indent=2, ensure_ascii=False).encode()
    if spec.special_tokens_map is not None:
        files["special_tokens_map.json"] = json.dumps(spec.special_tokens_map, indent=2, ensure_ascii=False).encode()
    if spec.tokenizer_kind == "bytelevel-bpe":
        files["tokenizer.json"] = train_bytelevel(spec, sentences).encode()
    else:
        model_name = spec.tokenizer_file if spec.tokenizer_file.endswith(".model") else "tokenizer.model"
        files[model_name] = train_spm(spec, sentences)
        if spec.tokenizer_json:
            files["tokenizer.json"] = spm_to_tokenizer_json(files[model_name], spec.tokenizer_json, spec.specials).encode()
    with tempfile.TemporaryDirectory() as tmp:
        weights(spec, Path(tmp), used_ids(spec, files))
        files["model.safetensors"] = (Path(tmp) / "model.safetensors").read_bytes()
    if not spec.ship_spm:  # the repository publishes its tokenizer.json only
        files = {name: blob for name, blob in files.items() if not name.endswith(".model")}
    return lay_out(repo, commit, files, revision)


def lay_out(repo: Path, commit: str, files: dict[str, bytes], revision: str | None) -> Path:
    """huggingface_hub's cache layout: content-addressed blobs, a snapshot folder of relative links
    (files may sit in sub-folders), and ``refs/<branch>`` files naming the commit (``refs/main``, and
    the pinned branch itself, e.g. ``refs/refs/convert/parquet``)."""
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        digest = hashlib.sha256(blob).hexdigest()
        (repo / "blobs" / digest).write_bytes(blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        os.symlink(os.path.relpath(repo / "blobs" / digest, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    if revision and revision != "main" and commit != revision:
        ref = repo / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return snapshot


def build_dataset(cache: Path, repo_id: str, revision: str, files: dict[str, bytes]) -> Path:
    """A dataset repository in the hub cache (``datasets--org--name``) at ``revision``."""
    repo = Path(cache) / f"datasets--{repo_id.replace('/', '--')}"
    return lay_out(repo, commit_for(repo_id, revision), files, revision)


XLSUM_COLUMNS = ["id", "url", "title", "summary", "text"]  # the columns of csebuetnlp/xlsum's Parquet files


def xlsum_parquet(rows: list[dict]) -> bytes:
    """A Parquet file with XL-Sum's real columns (all strings), from bundled sample rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({col: [r.get(col) or f"https://www.bbc.com/japanese/{r['id']}" for r in rows]
                      for col in XLSUM_COLUMNS})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def bundled_xlsum(name: str) -> list[dict]:
    text = (REPO / "manifests" / "data" / "xlsum" / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_xlsum(cache: Path, revision: str = "refs/convert/parquet") -> Path:
    """csebuetnlp/xlsum's Parquet conversion as the hub cache holds it after a download: the Japanese
    files at their Hub paths (``japanese/{train,validation,test}/0000.parquet``; 60/5/20 bundled rows),
    the branch naming the commit."""
    counts = {"train": ("train.jsonl", 60), "validation": ("eval.jsonl", 5), "test": ("eval.jsonl", 20)}
    files = {f"japanese/{split}/0000.parquet": xlsum_parquet(bundled_xlsum(name)[:count])
             for split, (name, count) in counts.items()}
    return build_dataset(cache, "csebuetnlp/xlsum", revision, files)


def build_all(cache: Path, revisions: dict[str, str | None]) -> dict[str, Path]:
    """Build every replica into ``cache``; ``revisions`` maps Hub id -> models.yaml's revision."""
    cache = Path(cache)
    sentences = corpus()
    return {hub_id: build_one(spec, cache, revisions.get(hub_id), sentences) for hub_id, spec in SPECS.items()}


def manifest_revisions() -> dict[str, str | None]:
    import yaml

    models = yaml.safe_load((REPO / "manifests/models.yaml").read_text(encoding="utf-8"))["models"]
    return {m["hub_id"]: m.get("revision") for m in models.values() if m.get("source") == "hub"}


if __name__ == "__main__":
    target = Path(sys.argv[1])
    shutil.rmtree(target, ignore_errors=True)
    for hub, path in build_all(target, manifest_revisions()).items():
        print(hub, path)
