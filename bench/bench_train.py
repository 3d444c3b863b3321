"""Benchmark the train job: tokens/s and base-model loads per job, padding vs length grouping vs
packing; on a GPU also MFU and peak memory for a ~1B model.

    .venv/bin/python bench/bench_train.py                          # tiny model: the whole job + batching (CPU)
    .venv/bin/python bench/bench_train.py --gpu-config llama-1b    # ~1.2B Llama-3.2-1B-shaped model, GPU
    .venv/bin/python bench/bench_train.py --gpu-config gpt-neox-1b # ~1.0B Pythia-1b-shaped model, GPU

The tiny run is the real job (`switchpoint.train.train`) on the bundled JSQuAD sample, then the
batching comparison: the same adapter (same N examples, steps, seed) trained with padding-only
batches (the baseline), with length grouping and with packing, in this process, paired and
alternated; RATIO lines give the wall-time speed-up (= real-token throughput, the tokens being the
same), PADDING lines the padded share of token slots. XL-Sum's padding is measured too (its
articles fill the cutoff, so there is little to gain there).

The 1B run builds the model from an architecture config with random weights (speed needs no
trained weights, and a GPU machine may have no Hub access) and times the job's own per-adapter
loop (`train_adapter`) on synthetic examples of a fixed token length, in bf16 with LoRA on the
attention projections: tokens/s, peak memory, the GPU's name and MFU, reported two ways (model
FLOPs over wall time over the GPU's dense bf16 peak, `PEAK_TFLOPS` in jobs/train/loop.py):
    mfu      LoRA model FLOPs: (4 x frozen + 6 x trainable params) x tokens (no weight gradients for
             the frozen base; what train_metrics.json records)
    mfu_6n   the usual convention: 6 x params x tokens (as if every weight were trained)
Neither counts attention-score FLOPs nor checkpointing's recomputation. The batching comparison
then runs on the same 1B model with JSQuAD's real example lengths.
Results are merged into bench/results/train.json under "tiny:<model>", "batching:<model>" or
"gpu:<config>", with the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import GPU_CONFIGS, print_ratio, save_results

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


VARIANTS = {"padding": {"group_by_length": False, "packing": False},
            "grouped": {"group_by_length": True, "packing": False},
            "packed": {"group_by_length": True, "packing": True}}


def data_folder(tmp: Path, task: str, n: int) -> Path:
    """A data folder of the bundled ``task`` with one training set of ``n`` examples (seed 0)."""
    from switchpoint.data.job import DataSettings, prepare

    data = tmp / f"data-{task}"
    prepare(DataSettings(task=task, sizes=[n], seeds=[0], source="bundled", eval_size=4), data)
    return data


def padding_figures(base, task: dict, examples: list[dict], batch: int, micro: int, cutoff: int, seeds: int = 3) -> dict:
    """Padded share of token slots over three epochs, per batching variant, averaged over seeds."""
    from switchpoint.train import loop

    lengths = [len(loop.encode_example(task, base.entry, base.tokenizer, ex, cutoff)["input_ids"]) for ex in examples]
    n, steps = len(lengths), 3 * -(-len(lengths) // batch)
    figures = {}
    for name, variant in VARIANTS.items():
        fractions = [loop.padded_fraction(lengths, loop.batch_schedule(
            n, steps, batch, seed, lengths if variant["group_by_length"] else None), micro, **variant)
            for seed in range(seeds)]
        figures[name] = round(sum(fractions) / seeds, 4)
    figures["mean_tokens"], figures["max_tokens"] = round(sum(lengths) / n, 1), max(lengths)
    return figures


def compare_batching(accelerator, base, task: dict, examples: list[dict], settings, repeats: int) -> dict:
    """The same adapter trained under each batching variant, alternated ``repeats`` times; medians."""
    import statistics

    from switchpoint.train.loop import train_adapter

    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name, variant in VARIANTS.items():
                metrics = train_adapter(accelerator, base, task, examples, 0,
                                        settings.model_copy(update=variant), Path(tmp) / f"{name}-{repeat}")
                runs[name].append(metrics)
    figures = {}
    for name, metrics in runs.items():
        figures[name] = {"wall_s": statistics.median(m["wall_s"] for m in metrics),
                         "real_tokens_per_s": statistics.median(m["tokens_per_s"] for m in metrics),
                         "trained_tokens": metrics[0]["trained_tokens"], "padding_fraction": metrics[0]["padding_fraction"],
                         "peak_memory_bytes": max(m["peak_memory_bytes"] for m in metrics)}
    for name in ("grouped", "packed"):
        print_ratio(f"train batching {base.entry['name']} N={len(examples)} ({name} vs padding-only batches)",
                    "padding", figures["padding"]["wall_s"], name, figures[name]["wall_s"])
    return figures


def single_process(device: str):
    """A one-process Accelerator for ``device`` (what the job builds outside torchrun), bf16 on a GPU."""
    import torch
    from accelerate import Accelerator

    on_gpu = device.startswith("cuda")
    precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp16" if on_gpu else "no"
    return Accelerator(mixed_precision=precision, cpu=not on_gpu)


def bench_batching(model: str, n: int, steps: int, repeats: int) -> dict:
    """Padding-only batches vs length grouping vs packing on the bundled data, tiny model (CPU)."""
    import torch
    from switchpoint.core import modeling
    from switchpoint.core.datafolder import (
        load_task_from_data,
        model_entry,
        read_train_set,
    )
    from switchpoint.train.settings import Settings

    torch.set_num_threads(modeling.usable_cores())  # as the job does (its --threads default)
    figures: dict = {"model": model, "n": n, "batch_size": 4, "micro_batch_size": 4, "cutoff_len": 512}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in ("jsquad", "xlsum"):
            data = data_folder(Path(tmp), task_name, n)
            task = load_task_from_data(data)
            base = modeling.load_base(model_entry(data, model), data)
            examples = read_train_set(data, 0, n)
            figures[f"padded_fraction:{task_name}"] = padding_figures(base, task, examples, 4, 4, 512)
            print_padding(task_name, figures[f"padded_fraction:{task_name}"], 4, 4)
            if task_name == "jsquad":
                settings = Settings(model=model, epochs=1, min_steps=steps, batch_size=4, learning_rate=0.01,
                                    lora_r=8, lora_alpha=16, lora_dropout=0.0, cutoff_len=512, load_in_4bit=False,
                                    gradient_checkpointing=False)
                figures["device"] = base.device
                figures["optimizer_steps"] = steps
                figures["trained_examples"] = min(n, 4 * steps)  # one epoch of `steps` batches
                figures["runs:jsquad"] = compare_batching(single_process(base.device), base, task, examples[: 4 * steps],
                                                          settings, repeats)
    return figures


def print_padding(task: str, figures: dict, batch: int, micro: int) -> None:
    print(f"PADDING train {task} (batch {batch}, micro-batch {micro}, cutoff 512): padding-only {figures['padding']:.1%} -> "
          f"grouped {figures['grouped']:.1%} -> packed {figures['packed']:.1%} of token slots")


def bench_gpu(name: str, seq_len: int, batch_size: int, steps: int, layers: int | None, grad_ckpt: bool,
              repeats: int) -> dict:
    """The job's per-adapter loop on a ~1B model built from a config: tokens/s, MFU, peak memory,
    then padding-only vs grouped vs packed batches with JSQuAD's lengths."""
    import torch
    from switchpoint.core import modeling, tiny
    from switchpoint.core.datafolder import load_task_from_data, read_train_set
    from switchpoint.train import packing
    from switchpoint.train.loop import peak_tflops, train_adapter
    from switchpoint.train.settings import Settings
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    family, shape, targets = GPU_CONFIGS[name]
    shape = dict(shape, **({"num_hidden_layers": layers} if layers else {}))
    config = (LlamaConfig if family == "llama" else GPTNeoXConfig)(bos_token_id=0, eos_token_id=0, pad_token_id=1, **shape)
    device, dtype = modeling.device_and_dtype()
    accelerator = single_process(device)
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
            "prompt": {"instruction": "Summarise.", "input_template": "{text}", "truncate_field": "text"}}
    # Examples whose prompt alone exceeds seq_len: every sequence is cut to exactly seq_len tokens.
    body = " ".join(words[(7 * i) % 3000] for i in range(seq_len * 2))
    examples = [{"id": str(i), "text": body, "references": [" ".join(words[i: i + 20])]} for i in range(batch_size * 4)]
    hyper = Settings(model=name, epochs=1, batch_size=batch_size, learning_rate=1e-4, min_steps=steps, warmup_ratio=0.1,
                     lora_r=16, lora_alpha=32, lora_dropout=0.05, cutoff_len=seq_len, load_in_4bit=False,
                     load_in_8bit=False, gradient_checkpointing=grad_ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        train_adapter(accelerator, base, task, examples, 0, hyper.model_copy(update={"min_steps": 3}), Path(tmp) / "w")
        metrics = train_adapter(accelerator, base, task, examples, 0, hyper, Path(tmp) / "a")  # after the warm-up run
        gpu = torch.cuda.get_device_name() if device == "cuda" else None
        peak = peak_tflops(gpu) if gpu else None
        figures = {
            "config": name, "params": params, "layers": shape["num_hidden_layers"], "gpu_name": gpu,
            "device": metrics["device"], "dtype": base.dtype, "seq_len": seq_len, "batch_size": batch_size,
            "optimizer_steps": metrics["optimizer_steps"], "gradient_checkpointing": grad_ckpt,
            "trained_tokens": metrics["trained_tokens"], "wall_s": metrics["wall_s"],
            "tokens_per_s": metrics["tokens_per_s"], "peak_tflops": peak, "mfu": metrics["mfu"],
            "mfu_formula": "(4 x frozen + 6 x trainable params) x tokens / wall_s / peak FLOP/s",
            "mfu_6n": round(6 * params * metrics["tokens_per_s"] / (peak * 1e12), 5) if peak else None,
            "mfu_6n_formula": "6 x params x tokens / wall_s / peak FLOP/s",
            "peak_memory_bytes": metrics["peak_memory_bytes"],
            "memory_estimate_bytes": memory_estimate(model, targets, batch_size * seq_len, seq_len,
                                                     2 if device == "cuda" else 4, grad_ckpt),
            "torch": torch.__version__}
        # The packing boundary check's score on this model and dtype (job refuses packing above LEAK_LIMIT).
        figures["packing_leak"] = packing.leak(model, str(accelerator.device), config.vocab_size)
        figures["packing_leak_limit"] = packing.LEAK_LIMIT
        # The batching comparison on this model, with the bundled JSQuAD's real examples and lengths.
        data = data_folder(Path(tmp), "jsquad", 256)
        jsquad = load_task_from_data(data)
        ja_base = modeling.BaseModel(model, tiny.train_tokenizer(modeling.tiny_texts(jsquad, data), vocab_size=4096),
                                     entry, base.fingerprint, base.device, base.dtype)
        real = read_train_set(data, 0, 256)
        figures["padded_fraction:jsquad"] = padding_figures(ja_base, jsquad, real, batch_size, batch_size, 512)
        print_padding("jsquad", figures["padded_fraction:jsquad"], batch_size, batch_size)
        figures["runs:jsquad"] = compare_batching(accelerator, ja_base, jsquad, real[:batch_size * steps],
                                                  hyper.model_copy(update={"cutoff_len": 512}), repeats)
    return figures


def memory_estimate(model, targets: list[str], tokens: int, seq_len: int, activation_bytes: int, grad_ckpt: bool) -> int:
    """The job's gradient-checkpointing estimate for this run (set beside the measured peak)."""
    from switchpoint.train import memory

    found = memory.estimate(memory.model_shape(model), memory.lora_params(model, targets, 16), tokens, seq_len,
                            activation_bytes)
    return int(found.total_checkpointed if grad_ckpt else found.total)


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
    parser.add_argument("--batching-n", type=int, default=256, help="N of the batching comparison (bundled data)")
    parser.add_argument("--batching-steps", type=int, default=24, help="optimiser steps per batching run on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per batching variant (median)")
    args = parser.parse_args()
    if args.gpu_config:
        results = {f"gpu:{args.gpu_config}" + (f":layers={args.layers}" if args.layers else ""): bench_gpu(
            args.gpu_config, args.seq_len, args.batch_size, args.steps, args.layers, args.gradient_checkpointing,
            args.repeats)}
    else:
        results = {f"tiny:{args.model}": bench_tiny(args.model, args.n, args.steps),
                   f"batching:{args.model}": bench_batching(args.model, args.batching_n, args.batching_steps,
                                                            args.repeats)}
    for section, figures in results.items():
        save(section, figures)
    print(json.dumps(results, indent=2))
    print(f"-> {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
