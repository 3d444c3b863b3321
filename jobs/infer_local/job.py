"""The ``infer-local`` job: the base model and every adapter of one (task, model), one base load.

The reference study ran a harness once per adapter and reloaded the base model every time. This
job loads the base once, then evaluates, over the same evaluation set:

- ``finetune``: the base model for N=0 (zero-shot) and each LoRA adapter ``seed=S/n=N/`` for N>0,
  with the zero-shot prompt in the model's format;
- ``fewshot-local`` (optional): the base model with the seed's first k training examples as earlier
  turns of the prompt, so in-context learning and fine-tuning see the same examples.

A recipe: settings -> plan (every check that needs no model: data, adapters, engine support) ->
load the base -> prompts -> the engine runs the passes -> predictions and infer_metrics.json. Work
is planned as *passes* (``passes.py``): one model state over the evaluation set with one set of
shots; arms that need the same pass share it. Engines: ``hf_engine.py``, ``vllm_engine.py``,
``lm_eval_engine.py``; which one serves which model is decided in ``engines.py``. Every engine gets
the same prompt texts and the same post-processing (``prompts.postprocess``), so their predictions
can be compared one to one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
from switchpoint.core import modeling
from switchpoint.core.contract import JobError, job_paths, read_hyperparameters, run_job
from switchpoint.core.datafolder import (
    data_info,
    load_task_from_data,
    model_entry,
    read_eval_set,
)
from switchpoint.core.predictions import prediction_record, write_predictions
from switchpoint.core.prompts import postprocess
from switchpoint.core.settings import COMMAND_LINE, load_settings, options
from switchpoint.infer_local.engines import choose_engine
from switchpoint.infer_local.passes import (
    EngineStats,
    Generation,
    Pass,
    build_prompts,
    check_adapters,
    plan_passes,
)
from switchpoint.infer_local.settings import Settings


@dataclass
class Plan:
    """Everything decided before the base model loads."""

    task: dict
    entry: dict
    eval_set: list[dict]
    passes: list[Pass]
    engine: str
    engine_reason: str
    max_new_tokens: int
    stops: list[str]
    load_in_4bit: bool


def echo(message: str) -> None:
    click.echo(f"infer-local: {message}", err=True)


def resolve_values(settings: Settings, info: dict, data_dir: Path) -> tuple[list[int], list[int], list[int]]:
    """(sizes, seeds, shots): the settings', else the data folder's; each must have been prepared."""
    sizes = sorted(set(settings.sizes if settings.sizes is not None else info["sizes"]))
    seeds = sorted(set(settings.seeds if settings.seeds is not None else info["seeds"]))
    shots = sorted(set(settings.shots if settings.shots is not None else sizes))
    for name, values, prepared in (("--sizes", sizes, info["sizes"]), ("--shots", shots, info["sizes"]),
                                   ("--seeds", seeds, info["seeds"])):
        missing = [v for v in values if v not in prepared and not (name != "--seeds" and v == 0)]
        if missing:
            raise JobError(f"{name} {missing}: the data folder {data_dir} was prepared for {prepared}; "
                           "use those values or rerun `switchpoint data`")
    return sizes, seeds, shots


def plan(settings: Settings, data_dir: Path, adapters_dir: Path, entry: dict,
         notice: Callable[[str], None] = echo) -> Plan:
    """Every check that can run before the base model loads, in one place."""
    task = load_task_from_data(data_dir)
    info = data_info(data_dir)
    sizes, seeds, shots = resolve_values(settings, info, data_dir)
    engine, reason = choose_engine(settings.engine, entry)
    load_in_4bit = settings.load_in_4bit if settings.load_in_4bit is not None else bool(entry.get("load_in_4bit", False))
    if load_in_4bit and not modeling.cuda_available():
        raise JobError("--load-in-4bit true needs a CUDA GPU (bitsandbytes) and none is visible; "
                       "use --load-in-4bit false on this machine")
    passes = plan_passes(settings, settings.model, sizes, seeds, shots, info.get("seeds_up_to_n"), info["seeds"])
    probe = modeling.BaseModel(None, None, entry, modeling.fingerprint(entry, data_dir), "", "")
    check_adapters(passes, adapters_dir, probe, load_in_4bit, notice)
    return Plan(task, entry, read_eval_set(data_dir), passes, engine, reason,
                settings.max_new_tokens or task["generation"]["max_new_tokens"],
                list(task["generation"].get("stop", [])), load_in_4bit)


def load_for_engine(job: Plan, data_dir: Path) -> modeling.BaseModel:
    """The base model the engine generates with, or only its tokenizer where the engine loads its own copy.

    hf generates with this job's model. vLLM, and lm-eval given model_args, load the base again
    themselves, so only the card's tokenizer is needed here (it lays out the prompt ids); a tiny
    model is still built, on the CPU, to be saved for them. lm-eval on a 4-bit base is handed this
    job's quantised model (transformers 5 takes no 4-bit keyword through model_args).
    """
    entry = job.entry
    own_copy = job.engine == "vllm" or (job.engine == "lm-eval" and not job.load_in_4bit)
    if not own_copy:
        return modeling.load_base(entry, data_dir, load_in_4bit=job.load_in_4bit,
                                  load_in_8bit=entry.get("load_in_8bit", False))
    if entry["source"] == "tiny":
        base = modeling.load_base(entry, data_dir, device="cpu")
        modeling.BASE_MODEL_LOADS -= 1  # a CPU build to save for the engine, not the model that generates
        return base
    device = "cuda" if modeling.cuda_available() else "cpu"
    return modeling.BaseModel(None, modeling.load_tokenizer(entry), entry, modeling.fingerprint(entry, data_dir),
                              device, "auto")


def base_weights_path(base: modeling.BaseModel, workdir: Path) -> str:
    """A folder that lm-eval / vLLM load the same base from (tiny models are saved; a Hub model's
    snapshot at its pinned revision, every file of it: this job may have read only the tokenizer)."""
    entry = base.entry
    if entry["source"] == "tiny":
        from switchpoint.core.tiny import save_tiny

        return str(save_tiny(base.model, base.tokenizer, workdir / "base"))
    if entry["source"] == "local":
        return str(entry["path"])
    from huggingface_hub import snapshot_download

    try:  # offline (HF_HUB_OFFLINE=1) this is the cached snapshot; online, whatever it lacks is fetched
        return snapshot_download(entry["hub_id"], revision=entry.get("revision"))
    except Exception as err:  # noqa: BLE001 - any Hub or cache failure: one line naming the model
        raise JobError(f"model {entry['name']}: cannot get {entry['hub_id']} at revision "
                       f"{entry.get('revision') or 'main'} for the engine ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}); check the Hub id, revision and network") from err


def run_engine(job: Plan, base: modeling.BaseModel, adapters_dir: Path, settings: Settings,
               stats: EngineStats) -> dict[int, list[Generation]]:
    import tempfile

    from tqdm import tqdm

    def progress(p: Pass):
        return tqdm(total=len(p.prompts), desc=f"{job.entry['name']}: {p.label}", unit="ex", leave=False)

    with tempfile.TemporaryDirectory(prefix="switchpoint-infer-") as tmp:
        if job.engine == "hf":
            from switchpoint.infer_local.hf_engine import run_hf

            return run_hf(base, job.passes, adapters_dir, settings.batch_size, job.max_new_tokens, job.stops, stats,
                          progress)
        if job.engine == "vllm":
            from switchpoint.infer_local.vllm_engine import run_vllm

            return run_vllm(base_weights_path(base, Path(tmp)), job.entry, base.tokenizer, job.passes, adapters_dir,
                            job.max_new_tokens, job.load_in_4bit, stats, progress)
        from switchpoint.infer_local.lm_eval_engine import run_lm_eval

        return run_lm_eval(base, base_weights_path(base, Path(tmp)), job.task, job.passes, job.eval_set, adapters_dir,
                           settings.batch_size, job.max_new_tokens, job.load_in_4bit, stats, progress, Path(tmp))


def write_outputs(job: Plan, results: dict[int, list[Generation]], stats: EngineStats, out_dir: Path) -> list[dict]:
    """One predictions file per arm (a shared pass is written once per arm); returns the arm rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arm_rows = []
    for index, p in enumerate(job.passes):
        gens = results.get(index, [])
        for arm in p.arms:
            arm_rows.append({"arm": arm.to_dict(), "file": None if p.skipped else arm.filename, "examples": len(gens),
                             "wall_s": round(stats.pass_wall_s.get(index, 0.0), 3),
                             "input_tokens": sum(g.input_tokens or 0 for g in gens),
                             "output_tokens": sum(g.output_tokens or 0 for g in gens),
                             "truncated": p.truncated, "skipped": p.skipped, "shared_pass": len(p.arms) > 1})
            if p.skipped:
                continue
            records = (prediction_record(arm, ex["id"], postprocess(job.task, g.text), ex["references"],
                                         input_tokens=g.input_tokens, output_tokens=g.output_tokens, latency_s=g.latency_s)
                       for ex, g in zip(job.eval_set, gens))
            write_predictions(out_dir / arm.filename, records)
    return arm_rows


def job_metrics(job: Plan, settings: Settings, base: modeling.BaseModel, results: dict, stats: EngineStats,
                arm_rows: list[dict], wall: float, threads: int) -> dict[str, Any]:
    generated = [g for gens in results.values() for g in gens]
    out_tokens = sum(g.output_tokens or 0 for g in generated)
    return {
        "model": settings.model, "task": job.task["name"], "engine": job.engine, "engine_reason": job.engine_reason,
        "device": base.device, "dtype": base.dtype, "load_in_4bit": job.load_in_4bit, "threads": threads,
        "batch_size": settings.batch_size, "max_new_tokens": job.max_new_tokens,
        "wall_s": round(wall, 3), "examples": len(generated),
        "examples_per_s": round(len(generated) / wall, 3) if wall > 0 else None,
        "generated_tokens": out_tokens, "generated_tokens_per_s": round(out_tokens / wall, 3) if wall > 0 else None,
        "base_model_loads": stats.base_model_loads, "adapter_switches": stats.adapter_switches,
        "adapter_switch_s": round(stats.adapter_switch_s, 3) if job.engine == "hf" else None,
        "peak_memory_bytes": modeling.peak_memory_bytes(base.device),
        "truncated_prompts": sum(p.truncated for p in job.passes if not p.skipped),
        "passes": len([p for p in job.passes if not p.skipped]), "arms": arm_rows,
    }


def infer(settings: Settings, data_dir: Path, adapters_dir: Path, out_dir: Path, model_entry_override: dict | None = None,
          notice: Callable[[str], None] = echo) -> dict:
    """Generate every requested arm and write one predictions file per arm plus infer_metrics.json."""
    import torch

    job_start = time.perf_counter()
    data_dir, adapters_dir, out_dir = Path(data_dir), Path(adapters_dir), Path(out_dir)
    entry = model_entry_override or model_entry(data_dir, settings.model)
    entry = {**entry, "name": entry.get("name", settings.model)}
    job = plan(settings, data_dir, adapters_dir, entry, notice)
    notice(f"engine {job.engine} ({job.engine_reason})")
    threads = settings.threads or modeling.usable_cores()
    torch.set_num_threads(threads)

    loads_before = modeling.BASE_MODEL_LOADS
    base = load_for_engine(job, data_dir)
    budget = int(entry.get("context_length", 4096)) - job.max_new_tokens
    for p in job.passes:
        build_prompts(p, job.task, entry, job.eval_set, data_dir, base.tokenizer, budget)
    stats = EngineStats()
    results = run_engine(job, base, adapters_dir, settings, stats)
    stats.base_model_loads += modeling.BASE_MODEL_LOADS - loads_before

    arm_rows = write_outputs(job, results, stats, out_dir)
    metrics = job_metrics(job, settings, base, results, stats, arm_rows, time.perf_counter() - job_start, threads)
    (out_dir / "infer_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


# --- CLI ---------------------------------------------------------------------------------------
@click.command("infer-local", context_settings={"show_default": True})
@options(Settings)
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
              help="Data folder from `switchpoint data` [default: <ml-root>/processing/input/data].")
@click.option("--adapters", "adapters_dir", default=None, type=click.Path(file_okay=False),
              help="Adapters from `switchpoint train`, as seed=S/n=N/ [default: <ml-root>/processing/input/adapters].")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where predictions and infer_metrics.json go [default: <ml-root>/processing/output].")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout [default: $SWITCHPOINT_ML_ROOT or /opt/ml].")
def command(data_dir, adapters_dir, out_dir, ml_root, **values):
    """Generate predictions with the base model and every LoRA adapter of one model, loading the base once.

    \b
    Inputs : --data (task.json, eval.jsonl, train/seed=S/n=N.jsonl) and --adapters
             (seed=S/n=N/ with peft adapter files and base.json, from `switchpoint train`).
    Outputs: one predictions JSONL per arm (finetune__<model>__n=N__seed=S.jsonl,
             fewshot-local__<model>__n=K__seed=S.jsonl) and infer_metrics.json
             (examples/s, generated tokens/s, base-model loads, adapter switches, peak memory,
             truncated prompts, per-arm figures).
    Arms   : finetune = the base model for N=0 (zero-shot; its generation is shared by every seed)
             and adapter seed=S/n=N for N>0; fewshot-local = the base model with the seed's first k
             training examples as earlier turns of the prompt.
    Prompts longer than the model's context minus --max-new-tokens are cut from the left of the
    task's truncate_field (the input text) and counted. Adapters are checked (files whole, same
    base, LoRA targets present) before the base loads. Greedy decoding; batches sorted by prompt length.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        settings = load_settings(Settings, (str(paths.hyperparameters), read_hyperparameters(paths)),
                                 (COMMAND_LINE, values))
        out = Path(out_dir) if out_dir else paths.processing_output
        metrics = infer(settings, Path(data_dir) if data_dir else paths.processing_input("data"),
                        Path(adapters_dir) if adapters_dir else paths.processing_input("adapters"), out)
        skipped = [r for r in metrics["arms"] if r["skipped"]]
        click.echo(f"infer-local: {metrics['model']} ({metrics['engine']}, {metrics['device']}): "
                   f"{len(metrics['arms']) - len(skipped)} arms, {metrics['examples']} generations, "
                   f"{metrics['examples_per_s']} ex/s, {metrics['truncated_prompts']} truncated, "
                   f"{len(skipped)} skipped -> {out}")

    run_job(paths, body, name="infer-local")
