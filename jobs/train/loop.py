"""The training loop of one LoRA adapter: examples -> tensors -> optimiser steps -> metrics.

Why a hand-written loop and not HF ``Trainer``: one job trains dozens of adapters on one base model.
The loop is short (AdamW, linear warm-up/decay, gradient clipping, gradient accumulation, loss on
answer tokens), every step is visible, the step count is ours (``max(min_steps, epochs * ceil(N /
batch))``, no validation split), and re-creating a Trainer per adapter would re-wrap the model and
its accelerate state each time. ``accelerate`` does the device/precision/DDP plumbing.

Batches: by default each epoch's examples are grouped by length before they are cut into batches
(``batch_schedule``: less padding, same examples per epoch, seeded); with ``packing`` a micro-batch
is one padding-free row whose examples cannot attend to each other (``packing.py``).

One optimiser step sees ``batch_size`` examples (across all GPUs). Each process takes its slice of
them and runs it in micro-batches of ``micro_batch_size``; every micro-batch's loss is weighted by
its share of the step's answer tokens, so the accumulated gradient equals the gradient of one big
batch's token-mean loss (tested), whatever the micro-batch size or the number of GPUs.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from switchpoint.core import modeling, prompts
from switchpoint.core.contract import JobError
from switchpoint.train import packing
from switchpoint.train.settings import Settings

# Dense bf16/fp16 tensor-core peak per GPU (vendor data sheets), for model FLOPs utilisation.
# A GPU not listed gets mfu null; set SWITCHPOINT_PEAK_TFLOPS to supply its figure.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


def optimizer_steps(n: int, settings: Settings) -> int:
    """epochs x batches per epoch, but at least ``min_steps``: two examples still get a real fit."""
    return max(settings.min_steps, settings.epochs * math.ceil(n / settings.batch_size))


# --- examples -> tensors -----------------------------------------------------------------------
def encode_example(task: dict, entry: dict, tokenizer: Any, example: dict, cutoff_len: int) -> dict[str, Any]:
    """input_ids and labels for one example; labels are -100 on the prompt, so the loss covers only
    the answer and its end token.

    A training text is ``prompt + answer + eos``. If it is longer than ``cutoff_len``, the task's
    input field (the article, the context) is shortened from its left by ``prompts.fit_prompt``, the
    function the infer job uses; the template, instruction and answer are kept whole (the answer is
    cut at its end only if the prompt cannot shrink enough).
    """
    # prompts.fit_training_example: the same prompt ids the infer job builds (prompts.fit_prompt).
    prompt_ids, answer_ids, truncated = prompts.fit_training_example(task, entry, example, tokenizer, cutoff_len)
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids, "truncated": truncated}


def loss_tokens(encoded: dict) -> int:
    """Tokens the causal-LM loss is taken over: labels after the one-token shift that are not -100."""
    return sum(label != -100 for label in encoded["labels"][1:])


def collate(encoded: list[dict], pad_id: int):
    """Right-pad a batch; padding is masked out of attention and loss (``packing.collate_packed``
    is the padding-free alternative)."""
    import torch

    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        labels[i, : len(e["labels"])] = torch.tensor(e["labels"])
        mask[i, : len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Grouping's random spread of lengths: 0.25 keeps most of the padding saved (JSQuAD N=256 at batch 4:
# 26-28 % padded plain, 3.8 % sorted, 7.5-7.7 % with it) while N=16 meets new neighbours every epoch.
LENGTH_JITTER = 0.25


def batch_schedule(n: int, steps: int, batch_size: int, seed: int,
                   lengths: list[int] | None = None) -> list[list[int]]:
    """Example indices of every optimiser step: a fresh seeded shuffle per epoch, cycled until ``steps``.

    With ``lengths`` (group by length), each epoch's shuffled order is cut into groups of 16
    batches, each group sorted by length before it is cut into batches, and the batches shuffled:
    examples of similar length share a batch (less padding), every example is still seen once per
    epoch, and the batch order stays random. The sort key is each length times a fresh random
    factor in [1, 1 + LENGTH_JITTER) per epoch: without it a small N (one group per epoch) would get
    the very same batches every epoch, always the same neighbours and the same short leftover batch.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(n, generator=generator).tolist()
        if lengths is None:
            batches.extend(order[i: i + batch_size] for i in range(0, n, batch_size))
            continue
        jitter = torch.rand(n, generator=generator).tolist()
        group = 16 * batch_size
        epoch = []
        for g in range(0, n, group):
            ranked = sorted(order[g: g + group], key=lambda i: -lengths[i] * (1 + LENGTH_JITTER * jitter[i]))
            epoch.extend(ranked[i: i + batch_size] for i in range(0, len(ranked), batch_size))
        batches.extend(epoch[i] for i in torch.randperm(len(epoch), generator=generator).tolist())
    return batches[:steps]


def micro_batches(indices: list[int], rank: int, world: int, micro: int, lengths: list[int] | None = None) -> list[list[int]]:
    """This process's slice of one step's examples, in micro-batches of at most ``micro``; with
    ``lengths``, sorted by length first (the step's gradient does not depend on how it is split)."""
    mine = indices[rank::world]
    if lengths is not None:
        mine = sorted(mine, key=lambda i: -lengths[i])
    return [mine[i: i + micro] for i in range(0, len(mine), micro)]


def padded_fraction(lengths: list[int], schedule: list[list[int]], micro: int, group_by_length: bool,
                    packing: bool = False) -> float:
    """The share of token slots that are padding over ``schedule``, batched as ``train_step`` batches
    it on one process (the figure train_metrics.json records as padding_fraction)."""
    real = slots = 0
    for indices in schedule:
        for chunk in micro_batches(indices, 0, 1, micro, lengths if group_by_length else None):
            real += sum(lengths[i] for i in chunk)
            slots += sum(lengths[i] for i in chunk) if packing else max(lengths[i] for i in chunk) * len(chunk)
    return 1 - real / slots if slots else 0.0


# --- one adapter --------------------------------------------------------------------------------
def train_step(model: Any, accelerator: Any, encoded: list[dict], indices: list[int], settings: Settings,
               pad_id: int) -> tuple[float, int, int]:
    """Forward/backward over this process's micro-batches of one step (no optimiser step); returns
    (this process's share of the step's token-mean loss, tokens seen, token slots incl. padding)."""
    from contextlib import nullcontext

    rank, world = accelerator.process_index, accelerator.num_processes
    # The whole step's answer tokens, over every process: every process knows every example.
    step_tokens = max(sum(loss_tokens(encoded[i]) for i in indices), 1)
    lengths = [len(e["input_ids"]) for e in encoded] if settings.group_by_length else None
    chunks = micro_batches(indices, rank, world, settings.micro_batch, lengths)
    idle = not chunks  # an epoch's last batch may hold fewer examples than there are processes
    if idle:  # DDP still needs this process's backward: one example with weight 0
        chunks = [indices[:1]]
    loss_sum, seen, slots = 0.0, 0, 0
    for number, chunk in enumerate(chunks):
        examples = [encoded[i] for i in chunk]
        tensors = packing.collate_packed(examples) if settings.packing else collate(examples, pad_id)
        batch = {k: v.to(accelerator.device) for k, v in tensors.items()}
        weight = 0.0 if idle else world * sum(loss_tokens(e) for e in examples) / step_tokens
        sync = number == len(chunks) - 1  # DDP all-reduces the gradients once, after the last micro-batch
        with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            # use_cache=False: packed rows are told apart by their position_ids only without a KV cache
            loss = model(**batch, use_cache=False).loss * weight  # DDP averages over processes, hence the factor world
        accelerator.backward(loss)
        loss_sum += float(loss.detach().float()) / world
        seen += 0 if idle else sum(len(e["input_ids"]) for e in examples)
        slots += 0 if idle else batch["input_ids"].numel()
    return loss_sum, seen, slots


def lora_model(base: modeling.BaseModel, settings: Settings, seed: int) -> tuple[Any, int, int]:
    """(peft model, trainable params, frozen matmul params): a fresh LoRA adapter, seeded."""
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    set_seed(seed)  # the adapter's initialisation and its dropout: same seed -> same adapter weights
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=list(base.entry["lora_target_modules"]), task_type="CAUSAL_LM")
    peft_model = get_peft_model(base.model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in peft_model.parameters() if not p.requires_grad)
    if not getattr(base.model.config, "tie_word_embeddings", False):
        frozen -= base.model.get_input_embeddings().weight.numel()  # a lookup, not a matmul: no model FLOPs
    return peft_model, trainable, frozen


def train_adapter(accelerator: Any, base: modeling.BaseModel, task: dict, examples: list[dict], seed: int,
                  settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Train a fresh LoRA adapter on ``examples``, save it to ``out_dir``; return its metrics.

    The LoRA layers are injected into ``base.model`` and removed again (``unload``) at the end, so
    the next adapter starts from the untouched base weights, never from the previous size.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    n = len(examples)
    steps = optimizer_steps(n, settings)
    warmup = int(settings.warmup_ratio * steps)
    encoded = [encode_example(task, base.entry, base.tokenizer, ex, settings.cutoff_len) for ex in examples]
    if accelerator.num_processes > settings.batch_size:
        raise JobError(f"batch-size {settings.batch_size} is smaller than the {accelerator.num_processes} processes; "
                       "every process needs at least one example per step: raise --batch-size or use fewer GPUs")
    peft_model, trainable, frozen = lora_model(base, settings, seed)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    # The scheduler stays unprepared: accelerate would step it once per process, but our steps are global.
    model, optimizer = accelerator.prepare(peft_model, optimizer)
    lengths = [len(e["input_ids"]) for e in encoded] if settings.group_by_length else None
    schedule = batch_schedule(n, steps, settings.batch_size, seed, lengths)

    if base.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loss_curve, trained_tokens, slots = run_steps(model, optimizer, scheduler, accelerator, encoded, schedule, settings,
                                           base.tokenizer.pad_token_id, f"seed={seed} n={n}")
    if base.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall_s = time.perf_counter() - started
    trained_tokens, slots = (int(accelerator.reduce(torch.tensor(v, device=accelerator.device), reduction="sum"))
                             for v in (trained_tokens, slots))
    save_adapter(accelerator, model, base, out_dir)
    accelerator.free_memory(model, optimizer, scheduler)

    world = accelerator.num_processes
    return {
        "model": base.entry["name"], "n": n, "seed": seed, "optimizer_steps": steps, "warmup_steps": warmup,
        "epochs": round(steps / math.ceil(n / settings.batch_size), 4), "batch_size": settings.batch_size,
        "micro_batch_size": settings.micro_batch, "trained_tokens": trained_tokens,
        "padding_fraction": round(1 - trained_tokens / slots, 4) if slots else None,
        **performance(base, world, wall_s, trained_tokens, trainable, frozen), "loss_curve": loss_curve,
        "truncated_examples": sum(e["truncated"] for e in encoded), "trainable_params": trainable,
        "hyperparameters": settings.model_dump(exclude={"model", "sizes", "seeds", "threads", "every_seed_at"}),
    }


def run_steps(model: Any, optimizer: Any, scheduler: Any, accelerator: Any, encoded: list[dict],
              schedule: list[list[int]], settings: Settings, pad_id: int, label: str) -> tuple[list[float], int, int]:
    """Every optimiser step of one adapter; returns (loss per step, tokens and token slots of this process)."""
    from tqdm import tqdm

    loss_curve: list[float] = []
    trained_tokens = slots = 0
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(total=len(schedule), desc=label, unit="step", file=sys.stderr,
               disable=not accelerator.is_local_main_process)
    try:
        for indices in schedule:
            step_loss, seen, step_slots = train_step(model, accelerator, encoded, indices, settings, pad_id)
            if settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = _reduced_sum(accelerator, step_loss)
            loss_curve.append(round(step_loss, 6))
            trained_tokens += seen
            slots += step_slots
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
    finally:
        bar.close()
    return loss_curve, trained_tokens, slots


def _reduced_sum(accelerator: Any, value: float) -> float:
    """The sum of every process's ``value`` (each holds its share of the step's mean loss)."""
    if accelerator.num_processes == 1:
        return value
    import torch

    return float(accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction="sum"))


def save_adapter(accelerator: Any, model: Any, base: modeling.BaseModel, out_dir: Path) -> None:
    """Write the adapter (rank 0) and remove the LoRA layers, so ``base.model`` is the plain base again."""
    model.eval()
    state = accelerator.get_state_dict(model)  # gathers shards under FSDP; a no-op view otherwise
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out_dir, state_dict=state)
        modeling.write_base_info(out_dir, base)
        (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    unwrapped.unload()


def performance(base: modeling.BaseModel, world: int, wall_s: float, tokens: int, trainable: int, frozen: int) -> dict:
    """Speed and cost figures; GPU-seconds and MFU only on a GPU.

    Model FLOPs per token for LoRA: forward 2P over all weights, backward 2P for the activation
    gradients through the frozen base, plus 2P only for the trainable LoRA weights' own gradients:
    4*frozen + 6*trainable (attention score FLOPs and checkpointing recomputation not counted, as
    in the usual MFU definition).
    """
    import torch

    on_gpu = base.device.startswith("cuda")
    peak_memory = modeling.peak_memory_bytes(base.device)
    mfu = None
    device = base.device
    if on_gpu:
        name = torch.cuda.get_device_name()
        device = f"{world}x {name}" if world > 1 else name
        peak = peak_tflops(name)
        if peak and wall_s > 0:
            mfu = round((4 * frozen + 6 * trainable) * tokens / wall_s / (peak * 1e12 * world), 5)
    return {"wall_s": round(wall_s, 3), "peak_memory_bytes": peak_memory,
            "tokens_per_s": round(tokens / wall_s, 2) if wall_s > 0 else None, "device": device,
            "gpu_seconds": round(wall_s * world, 3) if on_gpu else None, "mfu": mfu}


def peak_tflops(gpu_name: str) -> float | None:
    if os.environ.get("SWITCHPOINT_PEAK_TFLOPS"):
        return float(os.environ["SWITCHPOINT_PEAK_TFLOPS"])
    for key, value in PEAK_TFLOPS.items():  # most specific names first
        if key in gpu_name:
            return value
    return None
