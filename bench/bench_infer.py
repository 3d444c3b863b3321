"""Benchmark infer-local: one job for 12 adapters vs lm-eval once per adapter (as the study did).

    .venv/bin/python bench/bench_infer.py                       # tiny model, CPU is fine (~4 min)
    .venv/bin/python bench/bench_infer.py --gpu-config llama-1b # vllm vs hf on a ~1.2B model, GPU only

Tiny: the bundled JSQuAD sample, the tiny GPT-NeoX, 12 LoRA adapters (seeds 0-3 x N=2,4,8, random
LoRA weights so each changes the outputs) and the same eval set for both sides:
- this job: `switchpoint infer-local --engine hf` in one process (base loaded once);
- the study's way: `lm-eval run` (CLI, one process per adapter, each loading the base again) with
  switchpoint's task YAML and the same prompt texts.
Both wall times include process start-up. Predictions are compared one to one.

GPU: a model with the shape of a real architecture (weights random: speed needs no trained weights,
and the GPU machine may have no Hub access), 4 random adapters, `--engine vllm` vs `--engine hf`;
examples/s of each and the agreement rate of their predictions, with the GPU's name.
Results are merged into bench/results/infer.json under "tiny" or "gpu:<config>".
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

from common import GPU_CONFIGS, save_results

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
    return figures


def bench_gpu(config_name: str, eval_size: int, batch_size: int) -> dict:
    """vllm vs hf on a ~1B model of a real architecture's shape; needs CUDA and switchpoint[vllm]."""
    import torch
    from switchpoint.core import modeling
    from switchpoint.core.datafolder import read_jsonl
    from switchpoint.core.predictions import Arm, read_predictions
    from switchpoint.core.tiny import train_tokenizer
    from switchpoint.data.job import DataSettings, prepare
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
        del base, model
        torch.cuda.empty_cache()
        figures: dict = {"gpu": torch.cuda.get_device_name(0), "config": config_name,
                         "params_b": params_b, "eval_examples": eval_size,
                         "adapters": len(sizes), "batch_size": batch_size}
        outputs = {}
        for engine in ("hf", "vllm"):
            torch.cuda.reset_peak_memory_stats()
            metrics = infer(InferSettings(model=entry["name"], sizes=[0, *sizes], seeds=seeds, engine=engine,
                                          batch_size=batch_size), data, adapters, tmp / engine, model_entry_override=entry)
            figures[engine] = {k: metrics[k] for k in ("wall_s", "examples", "examples_per_s", "generated_tokens_per_s",
                                                       "base_model_loads", "peak_memory_bytes")}
            outputs[engine] = {(n, r["id"]): r["prediction"] for n in [0, *sizes]
                               for r in read_predictions(tmp / engine / Arm("finetune", entry["name"], n, 0).filename)}
        same = sum(outputs["hf"][k] == outputs["vllm"].get(k) for k in outputs["hf"])
        figures["agreement_rate"] = round(same / len(outputs["hf"]), 4)
        figures["vllm_speedup"] = round(figures["vllm"]["examples_per_s"] / figures["hf"]["examples_per_s"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-config", choices=sorted(GPU_CONFIGS), default=None)
    parser.add_argument("--eval-size", type=int, default=None, help="eval examples (tiny: 24, GPU: 200)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiny: 8, GPU: 32")
    args = parser.parse_args()
    if args.gpu_config:
        figures = bench_gpu(args.gpu_config, args.eval_size or 200, args.batch_size or 32)
        section = f"gpu:{args.gpu_config}"
    else:
        figures = bench_tiny(args.eval_size or 24, args.batch_size or 8)
        section = "tiny"
    save(section, figures)
    print(json.dumps({section: figures}, indent=2))
    if section == "tiny" and (figures["speedup"] < 5 or not figures["identical_predictions"]):
        print("target missed: want >= 5x faster with identical predictions", file=sys.stderr)


if __name__ == "__main__":
    main()
