"""The ``train`` job: LoRA-fine-tune one open model on every sweep size and seed, loading it once.

Reads like a recipe: settings -> every check that needs no model -> load the base -> for each seed
and each N > 0 train a fresh adapter on exactly ``train/seed=S/n=N.jsonl`` -> publish it. The loop
itself is in ``loop.py``, the adapter folders in ``adapters.py``. Layout (SageMaker training job)::

    <root>/input/data/data/                       channel ``data`` (output of ``switchpoint data``)
    <root>/input/config/hyperparameters.json      settings (strings); command-line options override
    <root>/checkpoints/adapters/seed=S/n=N/        adapter_model.safetensors, adapter_config.json,
                                                  base.json, train_metrics.json
    <root>/checkpoints/adapters/train_summary.json
    <root>/model/train_summary.json               the same summary (SageMaker packs model/ as model.tar.gz)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
from switchpoint.core import manifests, modeling
from switchpoint.core.adapter_checks import check_targets
from switchpoint.core.contract import (
    JobError,
    JobPaths,
    job_paths,
    read_hyperparameters,
    run_job,
)
from switchpoint.core.datafolder import (
    data_info,
    load_task_from_data,
    model_entry,
    read_train_set,
)
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.train import adapters as folders
from switchpoint.train import loop, memory, packing
from switchpoint.train.settings import Settings


def resolve(settings: Settings, entry: dict) -> Settings:
    """The settings one adapter is trained with: the model's manifest fills ``load_in_4bit``, and
    ``cutoff_len`` is capped at the model's context length."""
    load_in_4bit = settings.load_in_4bit if settings.load_in_4bit is not None else bool(entry.get("load_in_4bit", False))
    if load_in_4bit and settings.load_in_8bit:
        raise JobError("--load-in-4bit and --load-in-8bit are both true; choose one")
    if (load_in_4bit or settings.load_in_8bit) and not modeling.device_and_dtype()[0] == "cuda":
        raise JobError(f"--load-in-{'4' if load_in_4bit else '8'}bit true needs a CUDA GPU (bitsandbytes) and none is "
                       f"visible; use --load-in-{'4' if load_in_4bit else '8'}bit false on this machine")
    cutoff = min(settings.cutoff_len, int(entry.get("context_length", settings.cutoff_len)))
    return settings.model_copy(update={"load_in_4bit": load_in_4bit, "cutoff_len": cutoff})


def plan(settings: Settings, data_dir: Path) -> tuple[dict, Settings, dict[tuple[int, int], list[dict]]]:
    """(model entry, resolved settings, training sets by (seed, n)): everything checked that can be
    checked before the base model loads (data, LoRA targets against the model's module names)."""
    info = data_info(data_dir)
    entry = model_entry(data_dir, settings.model)
    resolved = resolve(settings, entry)
    sizes = [n for n in (settings.sizes if settings.sizes is not None else info["sizes"]) if n > 0]
    seeds = settings.seeds if settings.seeds is not None else info["seeds"]
    missing = [seed for seed in seeds if seed not in info["seeds"]]
    if missing:
        raise JobError(f"--seeds {','.join(map(str, missing))}: not prepared in the data folder {data_dir} (it has "
                       f"{', '.join(map(str, info['seeds']))}); re-run the data step with them")
    # A sweep may draw extra seeds only at small N (data.json's seeds_up_to_n): larger N use the smallest seed.
    # An adaptive round may ask for every seed only at some N (every_seed_at): the others train the smallest.
    sets = {(seed, n): read_train_set(data_dir, seed, n) for seed in seeds for n in sorted(set(sizes))
            if seed in manifests.seeds_at(n, info["seeds"], info.get("seeds_up_to_n"))
            and (settings.every_seed_at is None or n in settings.every_seed_at or seed == min(seeds))}
    check_targets(entry, entry["lora_target_modules"], f"models.yaml: {settings.model}.lora_target_modules")
    return entry, resolved, sets


def load(entry: dict, settings: Settings, data_dir: Path) -> tuple[Any, modeling.BaseModel, Settings]:
    """(accelerator, base model prepared for training, settings with gradient checkpointing decided).

    The Accelerator first: under torchrun it pins this process to its own GPU, so the base loads
    there. bf16/fp16 autocast follows the dtype modeling chose. Under FSDP the model may not fit one
    GPU: it loads on the CPU and prepare() shards it.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    probe_device, probe_dtype = modeling.device_and_dtype()
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(probe_dtype, "no") if probe_device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision, cpu=probe_device == "cpu")
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    try:
        base = modeling.load_base(entry, data_dir, load_in_4bit=bool(settings.load_in_4bit),
                                  load_in_8bit=settings.load_in_8bit, device="cpu" if fsdp else None)
    except torch.cuda.OutOfMemoryError as err:
        raise _oom(entry, settings, "loading the base model") from err
    if fsdp:
        from peft.utils.other import fsdp_auto_wrap_policy

        accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(base.model)
    if settings.load_in_4bit or settings.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        # Before the estimate: it casts the non-quantised weights (embeddings, head, norms) to fp32.
        base.model = prepare_model_for_kbit_training(base.model, use_gradient_checkpointing=False)
    settings = settings.model_copy(update={"gradient_checkpointing": checkpointing(settings, base, accelerator, fsdp)})
    if settings.packing:
        packing.check_boundaries(base.model, base.device, base.model.get_input_embeddings().weight.shape[0],
                                 entry["name"])
    if settings.gradient_checkpointing:
        if not getattr(base.model, "supports_gradient_checkpointing", False):
            raise JobError(f"model {entry['name']}: {type(base.model).__name__} does not support gradient "
                           "checkpointing; set gradient_checkpointing: false, or a smaller micro_batch_size/cutoff_len")
        base.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.model.config.use_cache = False
    return accelerator, base, settings


def checkpointing(settings: Settings, base: modeling.BaseModel, accelerator: Any, fsdp: bool) -> bool:
    """Whether to recompute activations: the setting, or for ``auto`` the memory estimate against
    this GPU's memory (``memory.py``; never on CPU). An ``auto`` decision on a GPU is printed."""
    device = str(accelerator.device)
    found = None
    if device.startswith("cuda") and settings.gradient_checkpointing == "auto":
        targets = list(base.entry["lora_target_modules"])
        found = memory.estimate(memory.model_shape(base.model, accelerator.num_processes if fsdp else 1),
                                memory.lora_params(base.model, targets, settings.lora_r),
                                settings.micro_batch * settings.cutoff_len,
                                settings.micro_batch * settings.cutoff_len if settings.packing else settings.cutoff_len,
                                2 if accelerator.mixed_precision in ("bf16", "fp16") else 4,
                                getattr(base.model.config, "_attn_implementation", None) == "eager")
    on, reason = memory.decide(settings.gradient_checkpointing, found, memory.device_memory(device),
                               f"{settings.micro_batch} x {settings.cutoff_len} tokens per micro-batch")
    if found is not None and accelerator.is_local_main_process:
        click.echo(f"train: {base.entry['name']}: {reason}", err=True)
    return on


def train_one(accelerator: Any, base: modeling.BaseModel, task: dict, examples: list[dict], seed: int,
              settings: Settings, adapters_dir: Path, data_dir: Path) -> dict[str, Any]:
    """One (seed, N): skipped when already complete, else trained in a partial folder and published."""
    import torch

    n = len(examples)
    final = folders.final_dir(adapters_dir, seed, n)
    sha = folders.train_set_sha(data_dir, seed, n)
    if folders.complete_adapter(final, base.fingerprint, sha):
        return {"seed": seed, "n": n, "skipped": True}
    tmp = folders.partial_dir(adapters_dir, seed, n)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        metrics = loop.train_adapter(accelerator, base, task, examples, seed, settings, tmp)
    except torch.cuda.OutOfMemoryError as err:
        raise _oom(base.entry, settings, f"training seed={seed} n={n}") from err
    metrics["train_set_sha256"] = sha
    if accelerator.is_main_process:
        folders.record_quantisation(tmp, bool(settings.load_in_4bit), settings.load_in_8bit)
        folders.publish(tmp, final, metrics)
    accelerator.wait_for_everyone()
    return {"seed": seed, "n": n, "skipped": False}


def train(settings: Settings, paths: JobPaths, data_dir: Path | str | None = None) -> dict[str, Any]:
    """Run the job from folders; returns the train summary."""
    started = time.perf_counter()
    data_dir = Path(data_dir) if data_dir else paths.channel("data")
    task = load_task_from_data(data_dir)
    entry, settings, sets = plan(settings, data_dir)
    set_threads(settings.threads)
    accelerator, base, settings = load(entry, settings, data_dir)
    adapters_dir = paths.checkpoints / "adapters"
    adapters = [train_one(accelerator, base, task, examples, seed, settings, adapters_dir, data_dir)
                for (seed, n), examples in sets.items()]
    summary = {"model": entry["name"], "base_model_loads": 1, "wall_s": round(time.perf_counter() - started, 3),
               "device": base.device, "adapters": adapters}
    if accelerator.is_main_process:
        for folder in (adapters_dir, paths.model):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def set_threads(threads: int | None) -> None:
    """torch's CPU threads: the option, else the cores this process may really run on (a container's
    or taskset's share, not the host's count, which oversubscribes a shared machine)."""
    import torch

    torch.set_num_threads(threads or modeling.usable_cores())


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


def _oom(entry: dict, settings: Settings, doing: str) -> JobError:
    return JobError(f"model {entry['name']}: out of GPU memory while {doing} (batch-size {settings.batch_size}, "
                    f"micro-batch-size {settings.micro_batch}, cutoff-len {settings.cutoff_len}, gradient-checkpointing "
                    f"{str(settings.gradient_checkpointing).lower()}); use --gradient-checkpointing true, --load-in-4bit, "
                    "a smaller --micro-batch-size or --cutoff-len, or a larger instance")


def _relaunched() -> bool:
    """True when this process handed the work to a torchrun world (which has finished)."""
    relaunch = distributed_relaunch(sys.argv)
    if relaunch is None:
        return False
    import subprocess

    click.echo(f"train: {relaunch[relaunch.index('--nproc_per_node') + 1]} GPUs: one process per GPU (DDP)", err=True)
    code = subprocess.call(relaunch)
    if code != 0:
        raise JobError(f"the distributed training processes exited with code {code} (see their output above)")
    return True


# --- CLI ----------------------------------------------------------------------------------------
@click.command("train", context_settings={"show_default": True})
@click.argument("sagemaker_mode", required=False, type=click.Choice(["train"]), metavar="[train]")
@options(Settings)
@click.option("--data", default=None, type=click.Path(file_okay=False),
              help="Data folder from `switchpoint data` [default: <ml-root>/input/data/data].")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout [default: $SWITCHPOINT_ML_ROOT or /opt/ml].")
def command(sagemaker_mode, data, ml_root, **values):
    """LoRA-fine-tune one open model on every size and seed of a data folder, loading the base once.

    \b
    Inputs : channel `data` (<ml-root>/input/data/data, the output of `switchpoint data`);
             settings from <ml-root>/input/config/hyperparameters.json (every option below but
             --data and --ml-root is also a hyperparameter key, e.g. "batch-size": "4"); options
             given here override it.
    Outputs: <ml-root>/checkpoints/adapters/seed=S/n=N/ (peft adapter, base.json, train_metrics.json)
             and train_summary.json there and in <ml-root>/model/.
    For each seed and N > 0 a fresh adapter is trained on exactly train/seed=S/n=N.jsonl:
    steps = max(min-steps, epochs * ceil(N / batch-size)), linear warm-up and decay, gradient
    clipping, loss only on the answer tokens. Complete adapters are skipped, so a restarted job
    resumes where it stopped. Several GPUs: the job re-launches itself under torchrun, one process
    per GPU (DDP); set SWITCHPOINT_SINGLE_PROCESS=1 to use one GPU. A SageMaker training job's
    extra `train` argument is accepted and ignored.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        settings = load_settings(Settings, (str(paths.hyperparameters), read_hyperparameters(paths)),
                                 (COMMAND_LINE, values))
        if _relaunched():
            return
        summary = train(settings, paths, data)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: one line, from rank 0
            return
        done = sum(not a["skipped"] for a in summary["adapters"])
        click.echo(f"train: {summary['model']}: {done} adapter(s) trained, {len(summary['adapters']) - done} already "
                   f"complete, {summary['wall_s']:.1f} s on {summary['device']} -> {paths.checkpoints / 'adapters'}")

    run_job(paths, body, name="train")
