"""Benchmark the train job against the study's method: one job for N = 2...64 vs a fresh HF Trainer +
peft process per N.

    .venv/bin/python bench/bench_train_vs_trainer.py      # tiny model, CPU, about a minute on 2 cores

Both sides train the same six adapters (seed 0, N = 2, 4, 8, 16, 32, 64) on the bundled JSQuAD sample
prepared once (not timed) by the data job:
- before (the study's way): for each N a fresh Python process that imports torch/transformers/peft,
  builds the base (``modeling.load_base``), wraps it in peft LoRA, trains it with ``transformers.Trainer``
  and saves the adapter;
- after: one process running the train job (``switchpoint.train.job.train``) over every N, base built once.
Both wall times include process start-up and imports, as a user pays them.

Why the comparison is fair: the same tiny model (tiny-gpt-neox, built from the same data folder), the
same examples tokenised by the job's own ``loop.encode_example`` (prompt + answer + end token, labels
-100 on the prompt), the same LoRA config (r, alpha, dropout, target modules, seeded with the adapter's
seed), the same optimiser steps (``loop.optimizer_steps``: max(min_steps, epochs x ceil(N / batch))),
batch size, peak learning rate, linear warm-up and decay, AdamW (torch, no weight decay), gradient
clipping, cutoff length, batches grouped by length on both sides, and one torch thread on both (a shared
2-core machine gives multi-threaded runs large outliers). The settings are the smoke sweep's train:
section (manifests/sweeps/smoke.yaml).

Two ratios: the whole wall time (six Trainer processes together vs the one job), and the per-step
throughput: real (non-padding) tokens per second of the step loop, the Trainer's from its own
``num_input_tokens_seen`` (non_padding) over ``train_runtime`` (which starts after its set-up, just
before the first step), the job's from train_metrics.json (``trained_tokens`` over ``wall_s`` of its
step loop), each summed over the six adapters. What still differs: the batches (Trainer's
LengthGroupedSampler vs the job's ``batch_schedule``, so padding and batch order differ, not the
examples per epoch), and the loss weighting (Trainer's per-batch token mean; the job's weights by answer
tokens, the same when a step is one micro-batch, as here). Results: bench/results/train_vs_trainer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_ratio, save_results

SIZES = [2, 4, 8, 16, 32, 64]
SEED = 0
MODEL = "tiny-gpt-neox"
# The smoke sweep's train: section (manifests/sweeps/smoke.yaml), without its orchestration keys.
TRAIN = {"epochs": 3, "batch_size": 2, "learning_rate": 0.03, "min_steps": 24, "warmup_ratio": 0.1, "lora_r": 8,
         "lora_alpha": 16, "lora_dropout": 0.0, "cutoff_len": 1536}
THREADS = 1
ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1"}


# --- the two child processes ------------------------------------------------------------------
def trainer_child(data: Path, n: int, out: Path) -> None:
    """One N the study's way: build the base, peft LoRA, ``transformers.Trainer``; print its figures."""
    import functools

    import torch
    from peft import LoraConfig, get_peft_model
    from switchpoint.core import modeling
    from switchpoint.core.datafolder import (
        load_task_from_data,
        model_entry,
        read_train_set,
    )
    from switchpoint.train import loop
    from switchpoint.train.settings import Settings
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    torch.set_num_threads(THREADS)
    settings = Settings(model=MODEL, **TRAIN)
    task, entry = load_task_from_data(data), model_entry(data, MODEL)
    base = modeling.load_base(entry, data)
    examples = [loop.encode_example(task, entry, base.tokenizer, ex, settings.cutoff_len)
                for ex in read_train_set(data, SEED, n)]
    dataset = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    steps = loop.optimizer_steps(n, settings)
    set_seed(SEED)
    model = get_peft_model(base.model, LoraConfig(
        r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
        target_modules=list(entry["lora_target_modules"]), task_type="CAUSAL_LM"))
    on_gpu = base.device.startswith("cuda")
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="linear",
        warmup_steps=int(settings.warmup_ratio * steps), weight_decay=0.0, optim="adamw_torch",
        max_grad_norm=settings.max_grad_norm, train_sampling_strategy="group_by_length", seed=SEED,
        use_cpu=not on_gpu, bf16=on_gpu and torch.cuda.is_bf16_supported(), save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0)

    class StepClock(TrainerCallback):
        """The first step's start and the last step's end: the step loop alone."""
        first = last = None

        def on_step_begin(self, *_args, **_kwargs):
            self.first = self.first or time.perf_counter()

        def on_step_end(self, *_args, **_kwargs):
            self.last = time.perf_counter()

    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock],
                      data_collator=functools.partial(loop.collate, pad_id=base.tokenizer.pad_token_id))
    result = trainer.train()
    trainer.model.save_pretrained(out / "adapter")
    print(json.dumps({"n": n, "optimizer_steps": trainer.state.global_step, "expected_steps": steps,
                      "trained_tokens": int(trainer.state.num_input_tokens_seen),
                      "train_runtime_s": result.metrics["train_runtime"], "step_loop_s": clock.last - clock.first,
                      "train_loss": result.metrics["train_loss"], "device": base.device}))


def job_child(data: Path, out: Path) -> None:
    """Every N in one train job, as the sweep runs it."""
    from switchpoint.core.contract import job_paths
    from switchpoint.train.job import train
    from switchpoint.train.settings import Settings

    summary = train(Settings(model=MODEL, sizes=SIZES, seeds=[SEED], threads=THREADS, **TRAIN), job_paths(out), data)
    print(json.dumps({"job_wall_s": summary["wall_s"], "device": summary["device"]}))


# --- the parent ---------------------------------------------------------------------------------
def child(*args: str) -> tuple[float, dict]:
    """(wall seconds of a fresh process running this file with ``args``, its last stdout line as JSON)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], check=False, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def run_trainer(data: Path, tmp: Path) -> dict:
    runs = []
    for n in SIZES:
        wall, figures = child("--trainer-child", str(data), str(n), str(tmp / f"trainer-{n}"))
        if figures["optimizer_steps"] != figures["expected_steps"]:
            sys.exit(f"error: Trainer ran {figures['optimizer_steps']} steps at N={n}, the job runs "
                     f"{figures['expected_steps']}")
        runs.append({**figures, "process_wall_s": round(wall, 3)})
    return {"process_wall_s": round(sum(r["process_wall_s"] for r in runs), 3),
            "trained_tokens": sum(r["trained_tokens"] for r in runs),
            "train_runtime_s": round(sum(r["train_runtime_s"] for r in runs), 3),
            "step_loop_s": round(sum(r["step_loop_s"] for r in runs), 3), "per_n": runs}


def run_job(data: Path, tmp: Path) -> dict:
    wall, figures = child("--job-child", str(data), str(tmp / "job"))
    metrics = [json.loads((tmp / "job" / "checkpoints" / "adapters" / f"seed={SEED}" / f"n={n}" /
                           "train_metrics.json").read_text()) for n in SIZES]
    per_n = [{k: m[k] for k in ("n", "optimizer_steps", "trained_tokens", "wall_s", "tokens_per_s", "padding_fraction")}
             for m in metrics]
    return {"process_wall_s": round(wall, 3), "job_wall_s": figures["job_wall_s"], "device": figures["device"],
            "trained_tokens": sum(m["trained_tokens"] for m in metrics),
            "step_loop_s": round(sum(m["wall_s"] for m in metrics), 3), "per_n": per_n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer-child", nargs=3, metavar=("DATA", "N", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--job-child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trainer_child:
        return trainer_child(Path(args.trainer_child[0]), int(args.trainer_child[1]), Path(args.trainer_child[2]))
    if args.job_child:
        return job_child(Path(args.job_child[0]), Path(args.job_child[1]))

    from switchpoint.data.job import DataSettings, prepare

    with tempfile.TemporaryDirectory(prefix="bench-train-vs-trainer-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        prepare(DataSettings(task="jsquad", sizes=[0, *SIZES], seeds=[SEED], source="bundled", eval_size=4), data)
        trainer = run_trainer(data, tmp)
        job = run_job(data, tmp)
    trainer["tokens_per_s"] = round(trainer["trained_tokens"] / trainer["train_runtime_s"], 1)
    trainer["step_loop_tokens_per_s"] = round(trainer["trained_tokens"] / trainer["step_loop_s"], 1)
    job["tokens_per_s"] = round(job["trained_tokens"] / job["step_loop_s"], 1)
    figures = {"model": MODEL, "device": job["device"], "sizes": SIZES, "seed": SEED, "torch_threads": THREADS,
               "train_settings": TRAIN, "trainer_processes": trainer, "one_job": job}
    print(f"train vs Trainer: {MODEL}, N={','.join(map(str, SIZES))}, seed {SEED}, {THREADS} torch thread on both sides, "
          f"{job['device']}")
    figures["wall_ratio"] = round(print_ratio(
        f"train N={SIZES[0]}..{SIZES[-1]} (one job vs a fresh HF Trainer + peft process per N, wall incl. start-up)",
        "Trainer processes", trainer["process_wall_s"], "one job", job["process_wall_s"]), 3)
    # Per step: seconds per real token, so the printed ratio is job tokens/s over Trainer tokens/s.
    figures["tokens_per_s_ratio"] = round(print_ratio(
        "train per-step throughput (s per 1M real tokens; ratio = job tokens/s / Trainer tokens/s)",
        "Trainer", 1e6 / trainer["tokens_per_s"], "job loop", 1e6 / job["tokens_per_s"]), 3)
    figures["step_loop_only_ratio"] = round(job["tokens_per_s"] / trainer["step_loop_tokens_per_s"], 3)
    print(f"  tokens/s: Trainer {trainer['tokens_per_s']:.0f} (train_runtime), {trainer['step_loop_tokens_per_s']:.0f} "
          f"(first step's start to last step's end); job {job['tokens_per_s']:.0f}; real tokens trained: "
          f"Trainer {trainer['trained_tokens']}, job {job['trained_tokens']}")
    save_results("train_vs_trainer", f"tiny:{MODEL}", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
