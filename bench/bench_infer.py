"""Benchmark infer-local: one job for 12 adapters vs lm-eval once per adapter (as the study did).

    .venv/bin/python bench/bench_infer.py                       # tiny model, CPU is fine (~4 min)
    .venv/bin/python bench/bench_infer.py --gpu-config llama-1b # vllm vs hf on a ~1.2B model, GPU only
    .venv/bin/python bench/bench_infer.py --freeing-only         # only the hf engine's batching (seconds)

Tiny: the bundled JSQuAD sample, the tiny GPT-NeoX, 12 LoRA adapters (seeds 0-3 x N=2,4,8, random
LoRA weights so each changes the outputs) and the same eval set for both sides:
- this job: `switchpoint infer-local --engine hf` in one process (base loaded once);
- the study's way: `lm-eval run` (CLI, one process per adapter, each loading the base again) with
  switchpoint's task YAML and the same prompt texts.
Both wall times include process start-up. Predictions are compared one to one.

Freeing finished sequences (hf engine): the same prompts in the same batches through
`model.generate` (static: a finished sequence keeps its slot until its batch's longest answer ends)
vs the engine's own loop, dropping finished rows (each batch alone) and also refilling freed slots
from the queue (the engine's pass); same process, alternating, medians; predictions and token
counts compared. A random model's answers all run to the token limit, so one extra end token is picked
from its own free-running output: the token that ends answers closest to halfway on average, which
spreads the answer lengths from one token to the limit, as real answers are spread.

lm-eval's task index: every built-in task indexed once per pass (v0.1) vs switchpoint's own task
YAMLs indexed once per job (the engine now).

GPU: a model with the shape of a real architecture (weights random: speed needs no trained weights,
and the GPU machine may have no Hub access), 4 random adapters, `--engine vllm` vs `--engine hf`;
examples/s of each and the agreement rate of their predictions, with the GPU's name, and the
freeing comparison on that model. Results are merged into bench/results/infer.json under "tiny",
"freeing" or "gpu:<config>".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import GPU_CONFIGS, print_ratio, save_results

BIN = Path(sys.executable).parent
SEEDS, SIZES = [0, 1, 2, 3], [2, 4, 8]  # 12 adapters

def save(section: str, figures: dict) -> None:
    save_results("infer", section, figures)


def make_adapters(base, root: Path, targets: list[str], seeds=SEEDS, sizes=SIZES) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from switchpoint.core import modeling

    for seed in seeds:
        for n in sizes:
            torch.manual_seed(1000 * seed + n)
            lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
            model = base.model if base.model.device.type == "cuda" else copy.deepcopy(base.model)
            peft_model = get_peft_model(model, lora)
            peft_model.save_pretrained(root / f"seed={seed}" / f"n={n}")
            modeling.write_base_info(root / f"seed={seed}" / f"n={n}", base)
            if model is base.model:
                base.model = peft_model.unload()  # the GPU path reuses the one copy of the weights


def run(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def bench_tiny(eval_size: int, batch_size: int) -> dict:
    from switchpoint.core import manifests, modeling
    from switchpoint.core.datafolder import load_task_from_data, read_eval_set
    from switchpoint.core.predictions import Arm, read_predictions
    from switchpoint.core.prompts import postprocess
    from switchpoint.core.tiny import save_tiny
    from switchpoint.data.job import DataSettings, prepare
    from switchpoint.infer_local.lm_eval_engine import include_dir, write_docs
    from switchpoint.infer_local.passes import fit_prompt

    model = "tiny-gpt-neox"
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        tmp = Path(tmp)
        data, adapters = tmp / "data", tmp / "adapters"
        prepare(DataSettings(task="jsquad", sizes=[0, *SIZES], seeds=SEEDS, source="bundled", eval_size=eval_size), data)
        entry = manifests.get_model(model)
        base = modeling.load_base(entry, data)
        make_adapters(base, adapters, entry["lora_target_modules"])
        task, eval_set = load_task_from_data(data), read_eval_set(data)
        max_new = task["generation"]["max_new_tokens"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp / "hf_home")}

        # This job: one process, one base load, 12 adapters.
        job_s = run([str(BIN / "switchpoint"), "infer-local", "--model", model, "--data", str(data), "--adapters",
                     str(adapters), "--out", str(tmp / "job"), "--sizes", ",".join(map(str, SIZES)),
                     "--seeds", ",".join(map(str, SEEDS)), "--batch-size", str(batch_size)], env)
        job_metrics = json.loads((tmp / "job" / "infer_metrics.json").read_text())

        # The study's way: the lm-eval CLI once per adapter, same prompts (all zero-shot), same YAML.
        budget = entry["context_length"] - max_new
        prompts = [fit_prompt(task, entry, ex, [], base.tokenizer, budget)[0] for ex in eval_set]
        docs = write_docs(tmp / "lm_eval" / "jsquad.jsonl", task, eval_set, prompts)
        tasks = include_dir(task, docs, tmp / "lm_eval" / "cache", tmp / "lm_eval" / "tasks")
        base_dir = save_tiny(base.model, base.tokenizer, tmp / "base")
        lm_eval_s, agree, total, per_adapter = 0.0, 0, 0, []
        for seed in SEEDS:
            for n in SIZES:
                out = tmp / "lm_eval" / f"out-{seed}-{n}"
                wall = run([str(BIN / "lm-eval"), "run", "--model", "hf", "--model_args",
                            f"pretrained={base_dir},peft={adapters / f'seed={seed}' / f'n={n}'},max_length={entry['context_length']},dtype=float32",
                            "--tasks", "switchpoint_jsquad", "--include_path", str(tasks), "--batch_size", str(batch_size),
                            "--device", "cpu", "--gen_kwargs", f"max_gen_toks={max_new}", "--log_samples", "--predict_only",
                            "--output_path", str(out)], env)
                lm_eval_s += wall
                per_adapter.append(round(wall, 2))
                samples = [json.loads(line) for f in out.rglob("samples_*.jsonl") for line in f.read_text().splitlines() if line]
                theirs = {eval_set[s["doc_id"]]["id"]: postprocess(task, s["resps"][0][0]) for s in samples}
                ours = {r["id"]: r["prediction"] for r in read_predictions(tmp / "job" / Arm("finetune", model, n, seed).filename)}
                agree += sum(theirs.get(i) == p for i, p in ours.items())
                total += len(ours)

    examples = len(SEEDS) * len(SIZES) * eval_size
    figures = {
        "model": model, "task": "jsquad", "adapters": len(SEEDS) * len(SIZES), "eval_examples": eval_size,
        "examples": examples, "batch_size": batch_size, "max_new_tokens": max_new, "cpu_count": os.cpu_count(),
        "job_wall_s": round(job_s, 2), "job_examples_per_s": round(examples / job_s, 3),
        "job_base_model_loads": job_metrics["base_model_loads"],
        "lm_eval_wall_s": round(lm_eval_s, 2), "lm_eval_examples_per_s": round(examples / lm_eval_s, 3),
        "lm_eval_base_model_loads": len(SEEDS) * len(SIZES), "lm_eval_wall_s_per_adapter": per_adapter,
        "speedup": round(lm_eval_s / job_s, 2), "identical_predictions": agree == total,
        "agreement": f"{agree}/{total}",
    }
    print_ratio(f"infer-local, {figures['adapters']} adapters x {eval_size} JSQuAD examples",
                "lm-eval once per adapter (the study's method)", lm_eval_s, "this job (hf, one base load)", job_s,
                target=">= 5x, identical predictions")
    return figures


def uneven_end_token(model, tokenizer, batches: list[list[list[int]]], max_new: int) -> int:
    """The token whose first appearance ends the model's free-running answers closest to halfway on average."""
    import torch
    from switchpoint.core import modeling
    from switchpoint.infer_local.decode import greedy_decode

    ends, firsts, answers = modeling.stop_token_ids(model, tokenizer), {}, 0
    for batch in batches:
        with torch.inference_mode():
            rows = greedy_decode(model, batch, len(batch), max_new, ends, tokenizer.pad_token_id, lambda *_: False)
        for row in rows:
            for k, token in enumerate(row):
                firsts.setdefault(token, {}).setdefault(answers, k + 1)
            answers += 1
    mean_length = {t: (sum(at.values()) + max_new * (answers - len(at))) / answers for t, at in firsts.items()
                   if t not in ends}
    return min(mean_length, key=lambda t: (abs(mean_length[t] - max_new / 2), t))


def freeing_vs_static(model, tokenizer, entry: dict, prompt_ids: list[list[int]], batch_size: int, max_new: int,
                      stops: list[str], repeats: int) -> dict:
    """hf engine, same prompts in the same batches: ``model.generate`` (static) vs the engine's loop,
    with finished rows only dropped (each batch alone) and with freed slots refilled (the engine's pass)."""
    import statistics

    from switchpoint.infer_local import hf_engine

    batches = [prompt_ids[b:b + batch_size] for b in range(0, len(prompt_ids), batch_size)]
    sides = {
        "static": lambda: [g for batch in batches
                           for g in hf_engine.generate_batch_static(model, tokenizer, batch, max_new, stops, entry)],
        "dropping": lambda: [g for batch in batches
                             for g in hf_engine.generate_batch(model, tokenizer, batch, max_new, stops, entry)],
        "refilling": lambda: hf_engine.generate_batch(model, tokenizer, prompt_ids, max_new, stops, entry, batch_size),
    }
    config = getattr(model, "get_base_model", lambda: model)().generation_config
    before = config.eos_token_id
    extra = uneven_end_token(model, tokenizer, batches, max_new)
    config.eos_token_id = [*(before if isinstance(before, list) else [before]), extra]
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, list] = {}
    try:
        for r in range(repeats):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                start = time.perf_counter()
                outputs[name] = sides[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        config.eos_token_id = before
    median = {name: statistics.median(t) for name, t in times.items()}
    what = f"hf engine, {len(prompt_ids)} answers in batches of {batch_size}"
    print_ratio(what, "model.generate (static)", median["static"], "finished rows dropped", median["dropping"])
    ratio = print_ratio(what, "model.generate (static)", median["static"], "dropped + slots refilled", median["refilling"])
    lengths = [g.output_tokens for g in outputs["refilling"]]
    slots = sum(len(batch) * max(g.output_tokens for g in outputs["static"][b:b + len(batch)])
                for b, batch in zip(range(0, len(prompt_ids), batch_size), batches))
    key = [(g.text, g.output_tokens) for g in outputs["static"]]
    same = {name: sum(a == (g.text, g.output_tokens) for a, g in zip(key, outputs[name])) for name in ("dropping", "refilling")}
    return {"answers": len(prompt_ids), "batch_size": batch_size, "max_new_tokens": max_new, "repeats": repeats,
            "extra_end_token": extra, "answer_tokens_mean": round(statistics.mean(lengths), 2),
            "answer_tokens_min": min(lengths), "answer_tokens_max": max(lengths),
            "generated_tokens": sum(lengths), "static_token_slots": slots,
            **{f"{name}_s": round(t, 3) for name, t in median.items()},
            "speedup": round(ratio, 2), "speedup_dropping_only": round(median["static"] / median["dropping"], 2),
            **{f"{name}_s_all": [round(t, 3) for t in ts] for name, ts in times.items()},
            "identical_predictions": all(n == len(key) for n in same.values()),
            "agreement": {name: f"{n}/{len(key)}" for name, n in same.items()}}


def bench_freeing(eval_size: int, batch_size: int, repeats: int) -> dict:
    """The tiny GPT-NeoX on the bundled JSQuAD sample, one torch thread (a shared 2-core machine)."""
    import torch
    from switchpoint.core import manifests, modeling
    from switchpoint.core.datafolder import load_task_from_data, read_eval_set
    from switchpoint.core.prompts import fit_prompt
    from switchpoint.data.job import DataSettings, prepare
    from switchpoint.infer_local.hf_engine import length_order

    torch.set_num_threads(1)
    model = "tiny-gpt-neox"
    with tempfile.TemporaryDirectory(prefix="bench-freeing-") as tmp:
        data = Path(tmp) / "data"
        prepare(DataSettings(task="jsquad", sizes=[0, 2], seeds=[0], source="bundled", eval_size=eval_size), data)
        entry, task = manifests.get_model(model), load_task_from_data(data)
        base = modeling.load_base(entry, data)
        max_new = task["generation"]["max_new_tokens"]
        fitted = [fit_prompt(task, entry, ex, [], base.tokenizer, entry["context_length"] - max_new)
                  for ex in read_eval_set(data)]
    base.tokenizer.padding_side = "left"
    base.model.eval()
    ids = [f.ids for f in fitted]
    order = length_order(ids, [f.text for f in fitted])  # the engine's batching order
    figures = freeing_vs_static(base.model, base.tokenizer, entry, [ids[i] for i in order], batch_size, max_new,
                                list(task["generation"].get("stop", [])), repeats)
    return {"model": model, "task": "jsquad", "threads": 1, "cpu_count": os.cpu_count(), **figures}


def bench_gpu(config_name: str, eval_size: int, batch_size: int, repeats: int) -> dict:
    """vllm vs hf on a ~1B model of a real architecture's shape; needs CUDA and switchpoint[vllm]."""
    import torch
    from switchpoint.core import modeling
    from switchpoint.core.datafolder import (
        load_task_from_data,
        read_eval_set,
        read_jsonl,
    )
    from switchpoint.core.predictions import Arm, read_predictions
    from switchpoint.core.prompts import fit_prompt
    from switchpoint.core.tiny import train_tokenizer
    from switchpoint.data.job import DataSettings, prepare
    from switchpoint.infer_local.hf_engine import length_order
    from switchpoint.infer_local.job import infer
    from switchpoint.infer_local.settings import Settings as InferSettings
    from transformers import AutoConfig, AutoModelForCausalLM

    if not torch.cuda.is_available():
        sys.exit("--gpu-config needs a CUDA GPU")
    family, shape, targets = GPU_CONFIGS[config_name]
    seeds, sizes = [0], [2, 4, 8, 16]
    with tempfile.TemporaryDirectory(prefix="bench-infer-gpu-") as tmp:
        tmp = Path(tmp)
        data, adapters, base_dir = tmp / "data", tmp / "adapters", tmp / "base"
        prepare(DataSettings(task="jsquad", sizes=[0, *sizes], seeds=seeds, source="bundled", eval_size=eval_size), data)
        texts = [r["context"] + r["question"] + r["references"][0] for r in read_jsonl(data / "pool.jsonl")]
        tokenizer = train_tokenizer(texts, vocab_size=8192)  # ids fit any real vocabulary; only speed matters
        config = AutoConfig.for_model(family, **shape, bos_token_id=0, eos_token_id=0, pad_token_id=1)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        params_b = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        entry = {"name": f"bench-{config_name}", "source": "local", "path": str(base_dir), "family": family,
                 "context_length": 2048, "lora_target_modules": targets, "prompt_format": "plain"}
        base = modeling.BaseModel(model.to("cuda"), tokenizer, entry, modeling.fingerprint(entry, data), "cuda", "bfloat16")
        make_adapters(base, adapters, targets, seeds, sizes)
        figures: dict = {"gpu": torch.cuda.get_device_name(0), "config": config_name,
                         "params_b": params_b, "eval_examples": eval_size,
                         "adapters": len(sizes), "batch_size": batch_size}
        task = load_task_from_data(data)
        max_new = task["generation"]["max_new_tokens"]
        fitted = [fit_prompt(task, entry, ex, [], tokenizer, entry["context_length"] - max_new) for ex in read_eval_set(data)]
        ids = [fitted[i].ids for i in length_order([f.ids for f in fitted], [f.text for f in fitted])]
        tokenizer.padding_side = "left"
        base.model.eval()
        figures["freeing"] = freeing_vs_static(base.model, tokenizer, entry, ids, batch_size, max_new,
                                               list(task["generation"].get("stop", [])), repeats)
        del base, model
        torch.cuda.empty_cache()
        outputs = {}
        for engine in ("hf", "vllm"):
            torch.cuda.reset_peak_memory_stats()
            metrics = infer(InferSettings(model=entry["name"], sizes=[0, *sizes], seeds=seeds, engine=engine,
                                          batch_size=batch_size), data, adapters, tmp / engine, model_entry_override=entry)
            figures[engine] = {k: metrics[k] for k in ("wall_s", "examples", "examples_per_s", "generated_tokens_per_s",
                                                       "base_model_loads", "adapter_switches", "adapter_switch_s",
                                                       "peak_memory_bytes")}
            outputs[engine] = {(n, r["id"]): r["prediction"] for n in [0, *sizes]
                               for r in read_predictions(tmp / engine / Arm("finetune", entry["name"], n, 0).filename)}
        same = sum(outputs["hf"][k] == outputs["vllm"].get(k) for k in outputs["hf"])
        figures["agreement_rate"] = round(same / len(outputs["hf"]), 4)
        figures["vllm_speedup"] = round(figures["vllm"]["examples_per_s"] / figures["hf"]["examples_per_s"], 2)
        print_ratio(f"infer-local on {figures['gpu']}, {config_name}, {len(sizes)} adapters x {eval_size} examples",
                    "hf engine", figures["hf"]["wall_s"], "vLLM", figures["vllm"]["wall_s"])
    return figures


def bench_task_index(passes: int = 2) -> dict:
    """lm-eval's task index: built with every built-in task once per pass (v0.1) vs once per job over
    switchpoint's own task YAMLs only (the engine now); same process, one after the other."""
    from lm_eval.tasks import TaskManager
    from switchpoint.infer_local.lm_eval_engine import TASKS_DIR

    start = time.perf_counter()
    for _ in range(passes):
        TaskManager(include_path=str(TASKS_DIR))  # v0.1: the built-in tasks indexed again for each pass
    before = time.perf_counter() - start
    start = time.perf_counter()
    TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    after = time.perf_counter() - start
    print_ratio(f"lm-eval task index for {passes} passes", "built-in tasks indexed per pass (v0.1)", before,
                "own tasks indexed once per job", after)
    return {"passes": passes, "per_pass_with_defaults_s": round(before, 3), "once_own_tasks_s": round(after, 3),
            "speedup": round(before / after, 1) if after > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-config", choices=sorted(GPU_CONFIGS), default=None)
    parser.add_argument("--eval-size", type=int, default=None, help="eval examples (tiny: 24, GPU: 200)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiny: 8, GPU: 32")
    parser.add_argument("--freeing-only", action="store_true", help="only static vs freeing batches of the hf engine")
    parser.add_argument("--freeing-examples", type=int, default=64, help="answers in the freeing comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side in the freeing comparison")
    args = parser.parse_args()
    results = {}
    if args.gpu_config:
        results[f"gpu:{args.gpu_config}"] = bench_gpu(args.gpu_config, args.eval_size or 200, args.batch_size or 32,
                                                     args.repeats)
    else:
        results["freeing"] = bench_freeing(args.freeing_examples, args.batch_size or 8, args.repeats)
        if not args.freeing_only:
            results["task_index"] = bench_task_index()
            results["tiny"] = bench_tiny(args.eval_size or 24, args.batch_size or 8)
    for section, figures in results.items():
        save(section, figures)
    print(json.dumps(results, indent=2))
    if "tiny" in results and (results["tiny"]["speedup"] < 5 or not results["tiny"]["identical_predictions"]):
        print("target missed: want >= 5x faster with identical predictions", file=sys.stderr)
    freeing = results.get("freeing") or results.get(f"gpu:{args.gpu_config}", {}).get("freeing")
    if freeing and not freeing["identical_predictions"]:
        print("freeing loop: predictions differ from model.generate's", file=sys.stderr)


if __name__ == "__main__":
    main()
