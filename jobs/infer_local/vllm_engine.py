"""The ``vllm`` engine (GPU only): one vLLM engine with LoRA enabled, a LoRARequest per adapter.

No stop strings are given to vLLM: like lm-eval's, they would cut before the answer starts; the
answer is cut by ``prompts.postprocess`` afterwards, as for the other engines. Generation ends at
the same end ids the hf engine uses (the generation config's list and the tokenizer's EOS), with its
repetition penalty, and the
generated ids are decoded by the job's tokenizer (the card's), not vLLM's: a model whose card
tokenizer differs from what transformers would build (rinna's and sarashina's models through sentencepiece
itself) gets the same text from every engine. Not runnable on the CPU machines this was
written on; ``engines.py`` says for which architectures vLLM serves LoRA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from switchpoint.core import modeling
from switchpoint.core.contract import JobError
from switchpoint.core.prompts import decode_generation
from switchpoint.infer_local.passes import EngineStats, Generation, Pass, adapter_dir


def engine_kwargs(base_path: str, entry: dict, ranks: list[int], load_in_4bit: bool) -> dict:
    """Arguments of ``vllm.LLM``: LoRA sized for the largest adapter, bitsandbytes for a 4-bit base."""
    kwargs = {"model": base_path, "enable_lora": bool(ranks), "max_lora_rank": max(ranks, default=8), "max_loras": 1,
              "max_model_len": entry.get("context_length"), "seed": 0,
              "trust_remote_code": entry.get("trust_remote_code", False)}
    if entry.get("revision") and entry.get("source") == "hub" and base_path == entry.get("hub_id"):
        kwargs["revision"] = entry["revision"]
    if load_in_4bit:
        kwargs["quantization"] = "bitsandbytes"
    return kwargs


def generation_config(base_path: str, entry: dict) -> Any:
    """The base's generation config (None when the repository has none: rinna's ship none)."""
    from transformers import GenerationConfig

    revision = entry.get("revision") if base_path == entry.get("hub_id") else None
    try:
        return GenerationConfig.from_pretrained(base_path, revision=revision)
    except OSError:
        return None


def sampling_settings(config: Any, entry: dict, tokenizer: Any) -> dict:
    """Greedy SamplingParams that decode as the hf engine does: the same end ids and the generation
    config's repetition penalty (Qwen2.5: 1.1; vLLM applies it to prompt and answer tokens as
    transformers does); a greedy setting vLLM cannot reproduce is refused."""
    for key, off in (("no_repeat_ngram_size", 0), ("encoder_repetition_penalty", 1.0)):
        value = getattr(config, key, None)
        if value not in (None, off):
            raise JobError(f"model {entry['name']}: its generation config sets {key}={value}, which the vllm "
                           "engine cannot apply; use --engine hf")
    penalty = getattr(config, "repetition_penalty", None)
    return {"temperature": 0.0, "stop_token_ids": modeling.stop_token_ids(SimpleNamespace(generation_config=config),
                                                                           tokenizer),
            "repetition_penalty": float(penalty) if penalty else 1.0, "detokenize": False}


def run_vllm(base_path: str, entry: dict, tokenizer: Any, passes: list[Pass], adapters_dir: Path, max_new_tokens: int,
             load_in_4bit: bool, stats: EngineStats, progress: Callable) -> dict[int, list[Generation]]:
    try:
        import torch
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as err:
        raise JobError(f"--engine vllm needs vLLM ({err}); install switchpoint[vllm] on a CUDA machine, or use --engine hf") from err
    if not torch.cuda.is_available():
        raise JobError("--engine vllm needs a CUDA GPU and none is visible; use --engine hf on this machine")
    ranks = [json.loads((adapter_dir(adapters_dir, *p.adapter) / "adapter_config.json").read_text())["r"]
             for p in passes if p.adapter is not None]
    llm = LLM(**engine_kwargs(base_path, entry, ranks, load_in_4bit))
    stats.base_model_loads += 1
    settings = sampling_settings(generation_config(base_path, entry), entry, tokenizer)
    ends = settings["stop_token_ids"]
    params = SamplingParams(max_tokens=max_new_tokens, **settings)
    results: dict[int, list[Generation]] = {}
    for index, p in enumerate(passes):
        if p.skipped:
            continue
        lora = None
        if p.adapter is not None:
            lora = LoRARequest(f"seed{p.adapter[0]}_n{p.adapter[1]}", index + 1, str(adapter_dir(adapters_dir, *p.adapter)))
            stats.adapter_switches += 1
        start = time.perf_counter()
        with progress(p) as bar:
            # Token ids, not texts: vLLM would tokenise with special tokens (rinna: a trailing </s>).
            outputs = llm.generate([{"prompt_token_ids": ids} for ids in p.prompt_ids], params, lora_request=lora,
                                   use_tqdm=False)
            bar.update(len(p.prompts))
        wall = time.perf_counter() - start
        stats.pass_wall_s[index] = wall
        results[index] = [Generation(decode_generation(tokenizer, entry, o.outputs[0].token_ids, ends),
                                     len(o.prompt_token_ids), len(o.outputs[0].token_ids), wall / max(len(p.prompts), 1))
                          for o in outputs]
    return results
