"""Benchmark the train job: tokens/s and base-model loads per job; on a GPU also MFU for a ~1B model.

    .venv/bin/python bench/bench_train.py                          # tiny model, the whole job (CPU is fine)
    .venv/bin/python bench/bench_train.py --gpu-config llama-1b    # ~1.2B Llama-3.2-1B-shaped model, GPU
    .venv/bin/python bench/bench_train.py --gpu-config gpt-neox-1b # ~1.0B Pythia-1b-shaped model, GPU

The tiny run is the real job (`switchpoint.train.train`) on the bundled JSQuAD sample. The 1B run
builds the model from an architecture config with random weights (speed needs no trained weights,
and a GPU machine may have no Hub access) and times the job's own per-adapter loop
(`train_adapter`) on synthetic examples of a fixed token length, in bf16 with LoRA on q/k/v/o.
Results are merged into bench/results/train.json under "tiny" or "gpu:<config>", with the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import GPU_CONFIGS, save_results

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"

def save(section: str, figures: dict) -> None:
    save_results("train", section, figures)


def bench_tiny(model: str, n: int, steps: int) -> dict:
    """The whole job on a tiny model: wall time, base loads, per-adapter tokens/s."""
    from switchpoint.core import modeling
    from switchpoint.core.contract import job_paths
    from switchpoint.data.job import DataSettings, prepare
    from switchpoint.train.job import train
    from switchpoint.train.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(DataSettings(task="jsquad", sizes=[n // 4, n // 2, n], seeds=[0], source="bundled", eval_size=4), data)
        loads = modeling.BASE_MODEL_LOADS
        started = time.perf_counter()
        # The smoke sweep's train: section, with this benchmark's steps, batch and cutoff.
        summary = train(Settings(model=model, learning_rate=0.01, warmup_ratio=0.1, lora_r=8, lora_alpha=16,
                                 lora_dropout=0.0, min_steps=steps, epochs=1, batch_size=4, cutoff_len=512),
                        job_paths(Path(tmp) / "ml"), data)
        wall = time.perf_counter() - started
        metrics = [json.loads(p.read_text()) for p in sorted((Path(tmp) / "ml" / "checkpoints" / "adapters").glob(
            "seed=*/n=*/train_metrics.json"))]
    tokens = sum(m["trained_tokens"] for m in metrics)
    train_s = sum(m["wall_s"] for m in metrics)
    return {"model": model, "device": summary["device"], "adapters": len(metrics),
            "base_model_loads_per_job": modeling.BASE_MODEL_LOADS - loads, "job_wall_s": round(wall, 2),
            "optimizer_steps_per_adapter": [m["optimizer_steps"] for m in metrics], "trained_tokens": tokens,
            "tokens_per_s": round(tokens / train_s, 1), "tokens_per_s_per_adapter": [m["tokens_per_s"] for m in metrics],
            "peak_memory_bytes": max(m["peak_memory_bytes"] for m in metrics)}


def bench_gpu(name: str, seq_len: int, batch_size: int, steps: int, layers: int | None, grad_ckpt: bool) -> dict:
    """The job's per-adapter loop on a ~1B model built from a config; tokens/s, MFU, peak memory."""
    import torch
    from accelerate import Accelerator
    from switchpoint.core import modeling, tiny
    from switchpoint.train.loop import train_adapter
    from switchpoint.train.settings import Settings
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    family, shape, targets = GPU_CONFIGS[name]
    shape = dict(shape, **({"num_hidden_layers": layers} if layers else {}))
    config = (LlamaConfig if family == "llama" else GPTNeoXConfig)(bos_token_id=0, eos_token_id=0, pad_token_id=1, **shape)
    device, dtype = modeling.device_and_dtype()
    accelerator = Accelerator(mixed_precision="bf16" if dtype == torch.bfloat16 else "no", cpu=device == "cpu")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype if device == "cuda" else torch.float32)
    model.to(accelerator.device)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    params = sum(p.numel() for p in model.parameters())
    # A byte-level tokenizer is enough: the loop only needs ids below the model's vocabulary size.
    words = [f"w{i}" for i in range(4000)]
    tokenizer = tiny.train_tokenizer([" ".join(words[i: i + 50]) for i in range(0, 4000, 50)], vocab_size=4096)
    entry = {"name": name, "lora_target_modules": targets, "prompt_format": "plain"}
    base = modeling.BaseModel(model, tokenizer, entry, f"bench:{name}", str(accelerator.device),
                              str(model.dtype).replace("torch.", ""))
    task = {"name": "bench", "fields": {"inputs": {"text": "text"}},
            "prompt": {"instruction": "Summarise.", "input_template": "{text}"}}
    # Examples whose prompt alone exceeds seq_len: every sequence is cut to exactly seq_len tokens.
    body = " ".join(words[(7 * i) % 3000] for i in range(seq_len * 2))
    examples = [{"id": str(i), "text": body, "references": [" ".join(words[i: i + 20])]} for i in range(batch_size * 4)]
    hyper = Settings(model=name, epochs=1, batch_size=batch_size, learning_rate=1e-4, min_steps=steps, warmup_ratio=0.1,
                     lora_r=16, lora_alpha=32, lora_dropout=0.05, cutoff_len=seq_len, load_in_4bit=False,
                     load_in_8bit=False, gradient_checkpointing=grad_ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        train_adapter(accelerator, base, task, examples, 0, hyper.model_copy(update={"min_steps": 3}), Path(tmp) / "w")
        metrics = train_adapter(accelerator, base, task, examples, 0, hyper, Path(tmp) / "a")  # after the warm-up run
    return {"config": name, "params": params, "layers": shape["num_hidden_layers"], "device": metrics["device"],
            "dtype": base.dtype, "seq_len": seq_len, "batch_size": batch_size, "optimizer_steps": metrics["optimizer_steps"],
            "gradient_checkpointing": grad_ckpt, "trained_tokens": metrics["trained_tokens"], "wall_s": metrics["wall_s"],
            "tokens_per_s": metrics["tokens_per_s"], "mfu": metrics["mfu"], "peak_memory_bytes": metrics["peak_memory_bytes"],
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt-neox", help="tiny model for the CPU run")
    parser.add_argument("--n", type=int, default=32, help="largest N of the tiny run (adapters for N/4, N/2, N)")
    parser.add_argument("--steps", type=int, default=60, help="minimum optimiser steps per adapter")
    parser.add_argument("--gpu-config", choices=sorted(GPU_CONFIGS), default=None, help="time a ~1B model instead")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=None, help="override the layer count (a quick CPU check of the path)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    if args.gpu_config:
        figures = bench_gpu(args.gpu_config, args.seq_len, args.batch_size, args.steps, args.layers,
                            args.gradient_checkpointing)
        section = f"gpu:{args.gpu_config}" + (f":layers={args.layers}" if args.layers else "")
    else:
        figures = bench_tiny(args.model, args.n, args.steps)
        section = f"tiny:{args.model}"
    save(section, figures)
    print(json.dumps({section: figures}, indent=2))
    print(f"-> {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
