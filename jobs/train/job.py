"""The ``train`` job: LoRA-fine-tune one open model on every sweep size and seed, loading it once.

Reads like a recipe, top to bottom: settings -> load the base -> for each seed and each N > 0 train
a fresh adapter on exactly ``train/seed=S/n=N.jsonl`` -> save it. Layout (SageMaker training job)::

    <root>/input/data/data/                       channel ``data`` (output of ``switchpoint data``)
    <root>/input/config/hyperparameters.json      settings (strings); command-line options override
    <root>/checkpoints/adapters/seed=S/n=N/        adapter_model.safetensors, adapter_config.json,
                                                  base.json, train_metrics.json
    <root>/checkpoints/adapters/train_summary.json
    <root>/model/train_summary.json               the same summary (SageMaker packs model/ as model.tar.gz)

Why a hand-written loop and not HF ``Trainer``: one job trains dozens of adapters on one base model.
The loop is ~40 lines (AdamW, linear warm-up/decay, loss on answer tokens), every step is visible,
the step count is ours (``max(min_steps, epochs * ceil(N / batch))``, no validation split), and
re-creating a Trainer per adapter would re-wrap the model and its accelerate state each time.
``accelerate`` still does the device/precision/DDP plumbing: under ``accelerate launch`` with
several GPUs every process trains on its slice of each batch (DDP).

Truncation rule: a training text is ``prompt + answer + eos``, tokenised as two parts (the prompt
exactly as the infer job tokenises it, so the answer starts where generation starts). If it is
longer than ``cutoff_len``, the prompt loses tokens from its left end; the answer is kept whole
(cut at its end only if the answer alone exceeds ``cutoff_len - 1``). Labels are -100 on every
prompt token and on padding, so the loss covers only the answer and its eos.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from switchpoint.core import manifests, modeling, prompts
from switchpoint.core.contract import (
    JobError,
    JobPaths,
    job_paths,
    run_job,
    settings_from,
)
from switchpoint.core.datafolder import data_info, load_task_from_data, read_train_set

ADAPTER_FILES = ("adapter_config.json", "base.json", "train_metrics.json")  # train_metrics.json is written last

# Dense bf16/fp16 tensor-core peak per GPU (vendor data sheets), for model FLOPs utilisation.
# A GPU not listed gets mfu null; set SWITCHPOINT_PEAK_TFLOPS to supply its figure.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


@dataclass
class TrainSettings:
    """Every setting of the job; ``None`` means "from the sweep's ``train:`` section" (or data.json)."""

    model: str
    data: str | None = None
    sizes: list[int] | None = None
    seeds: list[int] | None = None
    sweep: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    min_steps: int | None = None
    warmup_ratio: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    cutoff_len: int | None = None
    load_in_4bit: bool | None = None
    load_in_8bit: bool | None = None
    gradient_checkpointing: bool | None = None


@dataclass
class Hyper:
    """The resolved optimiser/LoRA settings one adapter is trained with (recorded in its metrics)."""

    epochs: int
    batch_size: int
    learning_rate: float
    min_steps: int
    warmup_ratio: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    cutoff_len: int
    load_in_4bit: bool
    load_in_8bit: bool
    gradient_checkpointing: bool


def resolve_hyper(settings: TrainSettings, entry: dict) -> Hyper:
    """Command line/hyperparameters > the model's manifest (load_in_4bit) > the sweep > built-in defaults."""
    defaults = dict(manifests.SWEEP_DEFAULTS["train"])
    if settings.sweep:
        defaults.update(manifests.load_sweep(settings.sweep)["train"])
    if "load_in_4bit" in entry:
        defaults["load_in_4bit"] = entry["load_in_4bit"]
    defaults.setdefault("load_in_8bit", False)
    values = {name: getattr(settings, name) if getattr(settings, name) is not None else defaults.get(name)
              for name in Hyper.__dataclass_fields__}
    hyper = Hyper(**values)
    checks = [(hyper.epochs >= 1, "epochs", "at least 1"), (hyper.batch_size >= 1, "batch-size", "at least 1"),
              (hyper.learning_rate > 0, "learning-rate", "positive"), (hyper.min_steps >= 0, "min-steps", ">= 0"),
              (0 <= hyper.warmup_ratio < 1, "warmup-ratio", "in [0, 1)"), (hyper.lora_r >= 1, "lora-r", "at least 1"),
              (0 <= hyper.lora_dropout < 1, "lora-dropout", "in [0, 1)"), (hyper.cutoff_len >= 8, "cutoff-len", "at least 8"),
              (not (hyper.load_in_4bit and hyper.load_in_8bit), "load-in-4bit/load-in-8bit", "not both true")]
    for ok, name, what in checks:
        if not ok:
            raise JobError(f"setting {name}={getattr(hyper, name.replace('-', '_'), None)!r} must be {what}")
    hyper.cutoff_len = min(hyper.cutoff_len, int(entry.get("context_length", hyper.cutoff_len)))
    return hyper


def optimizer_steps(n: int, hyper: Hyper) -> int:
    """epochs x batches per epoch, but at least ``min_steps``: two examples still get a real fit."""
    return max(hyper.min_steps, hyper.epochs * math.ceil(n / hyper.batch_size))


# --- examples -> tensors -----------------------------------------------------------------------
def encode_example(task: dict, entry: dict, tokenizer: Any, example: dict, cutoff_len: int) -> dict[str, Any]:
    """input_ids and labels for one example; labels are -100 on the prompt (see module docstring)."""
    prompt = prompts.model_prompt(task, entry, example, tokenizer=tokenizer)
    # With the tokenizer's special tokens, exactly as the infer job tokenises it (prompts.format_prompt
    # drops a chat template's literal BOS when the tokenizer adds one, so there is never a double BOS).
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(prompts.answer_text(example), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: cutoff_len - 1]
    keep = cutoff_len - len(answer_ids)
    truncated = len(prompt_ids) > keep
    prompt_ids = prompt_ids[-keep:]
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids, "truncated": truncated}


def collate(encoded: list[dict], pad_id: int):
    """Right-pad a batch; padding is masked out of attention and loss."""
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


def batch_schedule(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of every optimiser step: a fresh seeded shuffle per epoch, cycled until ``steps``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(n, generator=generator).tolist()
        batches.extend(order[i: i + batch_size] for i in range(0, n, batch_size))
    return batches[:steps]


# --- one adapter --------------------------------------------------------------------------------
def train_adapter(accelerator: Any, base: modeling.BaseModel, task: dict, examples: list[dict], seed: int,
                  hyper: Hyper, out_dir: Path) -> dict[str, Any]:
    """Train a fresh LoRA adapter on ``examples``, save it to ``out_dir``; return its metrics.

    The LoRA layers are injected into ``base.model`` and removed again (``unload``) at the end, so
    the next adapter starts from the untouched base weights, never from the previous size.
    """
    import torch
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    n = len(examples)
    steps = optimizer_steps(n, hyper)
    warmup = int(hyper.warmup_ratio * steps)
    encoded = [encode_example(task, base.entry, base.tokenizer, ex, hyper.cutoff_len) for ex in examples]
    if accelerator.num_processes > hyper.batch_size:
        raise JobError(f"batch-size {hyper.batch_size} is smaller than the {accelerator.num_processes} processes; "
                       "every process needs at least one example per step: raise --batch-size or use fewer GPUs")

    set_seed(seed)  # the adapter's initialisation and its dropout: same seed -> same adapter weights
    config = LoraConfig(r=hyper.lora_r, lora_alpha=hyper.lora_alpha, lora_dropout=hyper.lora_dropout,
                        target_modules=list(base.entry["lora_target_modules"]), task_type="CAUSAL_LM")
    peft_model = get_peft_model(base.model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in peft_model.parameters() if not p.requires_grad)
    if not getattr(base.model.config, "tie_word_embeddings", False):
        frozen -= base.model.get_input_embeddings().weight.numel()  # a lookup, not a matmul: no model FLOPs
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=hyper.learning_rate,
                                  weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    # The scheduler stays unprepared: accelerate would step it once per process, but our steps are global.
    model, optimizer = accelerator.prepare(peft_model, optimizer)
    schedule = batch_schedule(n, steps, hyper.batch_size, seed)
    rank, world = accelerator.process_index, accelerator.num_processes

    if base.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loss_curve: list[float] = []
    trained_tokens = 0
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=steps, desc=f"seed={seed} n={n}", unit="step", file=sys.stderr,
               disable=not accelerator.is_local_main_process)
    try:
        for indices in schedule:
            batch = collate([encoded[i] for i in indices[rank::world]], base.tokenizer.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
            loss_curve.append(round(step_loss, 6))
            trained_tokens += int(batch["attention_mask"].sum())
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
    finally:
        bar.close()
    if base.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall_s = time.perf_counter() - started
    trained_tokens = int(accelerator.reduce(torch.tensor(trained_tokens, device=accelerator.device), reduction="sum"))

    model.eval()
    state = accelerator.get_state_dict(model)  # gathers shards under FSDP; a no-op view otherwise
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out_dir, state_dict=state)
        modeling.write_base_info(out_dir, base)
        (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    unwrapped.unload()  # removes the LoRA layers: base.model is the plain base again
    accelerator.free_memory(model, optimizer, scheduler)

    metrics = performance(base, world, wall_s, trained_tokens, trainable, frozen)
    return {
        "model": base.entry["name"], "n": n, "seed": seed, "optimizer_steps": steps, "warmup_steps": warmup,
        "epochs": round(steps / math.ceil(n / hyper.batch_size), 4), "batch_size": hyper.batch_size,
        "trained_tokens": trained_tokens, **metrics, "loss_curve": loss_curve,
        "truncated_examples": sum(e["truncated"] for e in encoded), "trainable_params": trainable,
        "hyperparameters": asdict(hyper),
    }


def performance(base: modeling.BaseModel, world: int, wall_s: float, tokens: int, trainable: int, frozen: int) -> dict:
    """Speed and cost figures; GPU-seconds and MFU only on a GPU.

    Model FLOPs per token for LoRA: forward 2P over all weights, backward 2P for the activation
    gradients through the frozen base, plus 2P only for the trainable LoRA weights' own gradients:
    4*frozen + 6*trainable (attention score FLOPs and checkpointing recomputation not counted, as
    in the usual MFU definition).
    """
    import torch

    on_gpu = base.device.startswith("cuda")
    if on_gpu:
        peak_memory = int(torch.cuda.max_memory_allocated())
    else:
        import resource

        peak_memory = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process peak RSS (Linux: KiB)
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


# --- the job ------------------------------------------------------------------------------------
def train_set_sha(data_dir: Path, seed: int, n: int) -> str:
    return hashlib.sha256((Path(data_dir) / "train" / f"seed={seed}" / f"n={n}.jsonl").read_bytes()).hexdigest()


def complete_adapter(adapter_dir: Path, fingerprint: str, sha: str) -> bool:
    """An adapter counts as done only if all its files are there and it matches this base and train set.

    Files restored from S3 after a spot stop may be partial, and a checkpoint folder reused with
    other data must not be skipped; both are retrained.
    """
    if not all((adapter_dir / name).exists() for name in ADAPTER_FILES):
        return False
    if not any(adapter_dir.glob("adapter_model.*")):
        return False
    try:
        base_info = json.loads((adapter_dir / "base.json").read_text(encoding="utf-8"))
        metrics = json.loads((adapter_dir / "train_metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return base_info.get("fingerprint") == fingerprint and metrics.get("train_set_sha256") == sha


def train(settings: TrainSettings, paths: JobPaths) -> dict[str, Any]:
    """Run the job from folders; returns the train summary."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    started = time.perf_counter()
    data_dir = Path(settings.data) if settings.data else paths.channel("data")
    task = load_task_from_data(data_dir)
    info = data_info(data_dir)
    entry = manifests.get_model(settings.model)
    hyper = resolve_hyper(settings, entry)
    sizes = [n for n in (settings.sizes if settings.sizes is not None else info["sizes"]) if n > 0]
    seeds = settings.seeds if settings.seeds is not None else info["seeds"]
    sets = {(seed, n): read_train_set(data_dir, seed, n) for seed in seeds for n in sorted(sizes)}  # fail before loading

    # The Accelerator first: under `accelerate launch` it pins this process to its own GPU, so the
    # base model loads there. bf16/fp16 autocast follows the dtype modeling chose.
    probe_device, probe_dtype = modeling.device_and_dtype()
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(probe_dtype, "no") if probe_device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision, cpu=probe_device == "cpu")
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    try:
        # Under FSDP the model may not fit one GPU: load it on the CPU and let prepare() shard it.
        # Otherwise "cuda" is this process's GPU: accelerate has called torch.cuda.set_device(local rank).
        device = "cpu" if fsdp else None
        base = modeling.load_base(entry, data_dir, load_in_4bit=hyper.load_in_4bit, load_in_8bit=hyper.load_in_8bit,
                                  device=device)
    except torch.cuda.OutOfMemoryError as err:
        raise _oom(entry, hyper, "loading the base model") from err
    if fsdp:
        from peft.utils.other import fsdp_auto_wrap_policy

        accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(base.model)
    if hyper.load_in_4bit or hyper.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        base.model = prepare_model_for_kbit_training(base.model, use_gradient_checkpointing=hyper.gradient_checkpointing)
    elif hyper.gradient_checkpointing:
        base.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.model.config.use_cache = False

    adapters_dir = paths.checkpoints / "adapters"
    adapters: list[dict[str, Any]] = []
    for (seed, n), examples in sets.items():
        final = adapters_dir / f"seed={seed}" / f"n={n}"
        sha = train_set_sha(data_dir, seed, n)
        if complete_adapter(final, base.fingerprint, sha):
            adapters.append({"seed": seed, "n": n, "skipped": True})
            continue
        # Written in a temporary folder and renamed at the end: `n=N/` exists only when complete.
        tmp = adapters_dir / f"seed={seed}" / f".n={n}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        try:
            metrics = train_adapter(accelerator, base, task, examples, seed, hyper, tmp)
        except torch.cuda.OutOfMemoryError as err:
            raise _oom(entry, hyper, f"training seed={seed} n={n}") from err
        metrics["train_set_sha256"] = sha
        if accelerator.is_main_process:
            (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)  # an incomplete or stale folder from an earlier run
            os.replace(tmp, final)
        accelerator.wait_for_everyone()
        adapters.append({"seed": seed, "n": n, "skipped": False})

    summary = {"model": entry["name"], "base_model_loads": 1, "wall_s": round(time.perf_counter() - started, 3),
               "device": base.device, "adapters": adapters}
    if accelerator.is_main_process:
        for folder in (adapters_dir, paths.model):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def distributed_relaunch(argv: list[str]) -> list[str] | None:
    """The command that re-runs this job under torchrun with one process per GPU, or None.

    A SageMaker training job (or `docker run`) starts the entrypoint once. With several GPUs the
    job re-launches itself so that Accelerator sees a DDP world; inside torchrun (LOCAL_RANK set),
    on one GPU, or with SWITCHPOINT_SINGLE_PROCESS=1 it runs as it is.
    """
    if "LOCAL_RANK" in os.environ or os.environ.get("SWITCHPOINT_SINGLE_PROCESS") == "1":
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(count),
            "-m", "switchpoint", *argv[1:]]


def _oom(entry: dict, hyper: Hyper, doing: str) -> JobError:
    return JobError(f"model {entry['name']}: out of GPU memory while {doing} (batch-size {hyper.batch_size}, "
                    f"cutoff-len {hyper.cutoff_len}); use --load-in-4bit, a smaller --batch-size or --cutoff-len, "
                    "or a larger instance")


# --- CLI ----------------------------------------------------------------------------------------
@click.command("train", context_settings={"show_default": True})
@click.argument("sagemaker_mode", required=False, type=click.Choice(["train"]), metavar="[train]")
@click.option("--model", default=None, help="Model key in manifests/models.yaml (e.g. qwen2.5-1.5b-instruct, tiny-gpt-neox).")
@click.option("--sizes", default=None, help="Comma-separated N values to train (N=0 is skipped); default: data.json's sizes.")
@click.option("--seeds", default=None, help="Comma-separated seeds; default: data.json's seeds.")
@click.option("--sweep", default=None, help="Sweep name or YAML whose `train:` section supplies the defaults below.")
@click.option("--epochs", default=None, help="Passes over the N examples (default from the sweep: 3).")
@click.option("--batch-size", default=None, help="Examples per optimiser step, across all GPUs (sweep default: 4).")
@click.option("--learning-rate", default=None, help="AdamW peak learning rate (sweep default: 2e-4).")
@click.option("--min-steps", default=None, help="Lower bound on optimiser steps, for tiny N (sweep default: 20).")
@click.option("--warmup-ratio", default=None, help="Linear warm-up as a fraction of the steps (sweep default: 0.1).")
@click.option("--lora-r", default=None, help="LoRA rank (sweep default: 16).")
@click.option("--lora-alpha", default=None, help="LoRA alpha (sweep default: 32).")
@click.option("--lora-dropout", default=None, help="LoRA dropout (sweep default: 0.05).")
@click.option("--cutoff-len", default=None, help="Max tokens per training text; longer prompts lose tokens on the left.")
@click.option("--load-in-4bit", default=None, help="true/false: QLoRA 4-bit base (bitsandbytes, CUDA only).")
@click.option("--load-in-8bit", default=None, help="true/false: 8-bit base (bitsandbytes, CUDA only).")
@click.option("--gradient-checkpointing", default=None, help="true/false: trade compute for activation memory.")
@click.option("--data", default=None, help="Data folder from `switchpoint data` (default: <ml-root>/input/data/data).")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(sagemaker_mode, ml_root, **options):
    """LoRA-fine-tune one open model on every size and seed of a data folder, loading the base once.

    \b
    Inputs : channel `data` (<ml-root>/input/data/data, the output of `switchpoint data`);
             settings from <ml-root>/input/config/hyperparameters.json (every option below is also
             a hyperparameter key, e.g. "batch-size": "4"); options given here override it.
    Outputs: <ml-root>/checkpoints/adapters/seed=S/n=N/ (peft adapter, base.json, train_metrics.json)
             and train_summary.json there and in <ml-root>/model/.
    For each seed and N > 0 a fresh adapter is trained on exactly train/seed=S/n=N.jsonl:
    steps = max(min-steps, epochs * ceil(N / batch-size)), linear warm-up and decay, loss only on
    the answer tokens. Complete adapters are skipped, so a restarted job resumes where it stopped.
    Several GPUs: the job re-launches itself under torchrun, one process per GPU (DDP); set
    SWITCHPOINT_SINGLE_PROCESS=1 to use one GPU. A SageMaker training job's extra `train`
    argument is accepted and ignored.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        relaunch = distributed_relaunch(sys.argv)
        if relaunch is not None:
            import subprocess

            click.echo(f"train: {relaunch[relaunch.index('--nproc_per_node') + 1]} GPUs: one process per GPU (DDP)", err=True)
            code = subprocess.call(relaunch)
            if code != 0:
                raise JobError(f"the distributed training processes exited with code {code} (see their output above)")
            return
        settings = settings_from(TrainSettings, paths, options)
        summary = train(settings, paths)
        if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch/torchrun: one line, from rank 0
            return
        done = sum(not a["skipped"] for a in summary["adapters"])
        click.echo(f"train: {summary['model']}: {done} adapter(s) trained, {len(summary['adapters']) - done} already "
                   f"complete, {summary['wall_s']:.1f} s on {summary['device']} -> {paths.checkpoints / 'adapters'}")

    run_job(paths, body, name="train")
