"""The ``infer-local`` job: the base model and every adapter of one (task, model), one base load.

The reference study ran a harness once per adapter and reloaded the base model every time. This
job loads the base once, then evaluates, over the same evaluation set:

- ``finetune``: the base model for N=0 (zero-shot) and each LoRA adapter ``seed=S/n=N/`` for N>0,
  with the zero-shot prompt in the model's format;
- ``fewshot-local`` (optional): the base model with the seed's first k training examples as earlier
  turns of the prompt, so in-context learning and fine-tuning see the same examples.

Work is planned as *passes*: one model state (the base, or one adapter) over the evaluation set with
one set of shots. Arms that need the same pass share it: the base model's zero-shot generation is
run once and written as ``finetune n=0`` for every seed (and as ``fewshot-local k=0`` if asked).

Engines: ``hf`` (transformers + peft, the default, below), ``vllm`` (one engine with LoRA enabled,
GPU only, below) and ``lm-eval`` (EleutherAI lm-evaluation-harness once per pass, in
``lm_eval_engine.py``). Every engine gets the same prompt texts and the same post-processing
(``prompts.postprocess``), so their predictions can be compared one to one.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import click
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import JobError, job_paths, run_job, typed_settings
from switchpoint.core.datafolder import (
    data_info,
    load_task_from_data,
    read_eval_set,
)
from switchpoint.core.predictions import prediction_record, write_predictions
from switchpoint.core.prompts import decode_generation, postprocess
from switchpoint.infer_local.passes import (
    EngineStats,
    Generation,
    Pass,
    adapter_dir,
    build_prompts,
    check_adapters,
    plan_passes,
)
from switchpoint.infer_local.settings import InferSettings

ARM_CHOICES = ("finetune", "fewshot-local")
ENGINES = ("hf", "vllm", "lm-eval")


# --- hf engine ---------------------------------------------------------------------------------
def length_order(prompt_ids: list[list[int]], prompts: list[str]) -> list[int]:
    """Longest prompt first, ties by text: lm-eval's order, so both engines batch alike (and an
    out-of-memory error shows on the first batch rather than the last)."""
    return sorted(range(len(prompts)), key=lambda i: (-len(prompt_ids[i]), prompts[i]))


def stop_criterion(tokenizer: Any, entry: dict, stops: list[str], prompt_len: int, stopped_at: dict[int, int]):
    """Stop a sequence once its answer (leading whitespace skipped) holds a stop string.

    Hand-written because transformers' ``stop_strings`` stops at a stop string even before the answer
    starts, which ``prompts.postprocess`` deliberately skips; stopping here never changes a prediction.
    """
    import torch
    from transformers import StoppingCriteria

    class StopAfterAnswer(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            # As predictions are decoded: the model's newline marker (rinna's <NL>) is "\n" again.
            texts = [decode_generation(tokenizer, entry, row) for row in input_ids[:, prompt_len:].tolist()]
            done = [any(s and s in t.lstrip() for s in stops) for t in texts]
            for i, d in enumerate(done):
                if d:
                    stopped_at.setdefault(i, input_ids.shape[1] - prompt_len)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopAfterAnswer()


def generate_batch(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int, stops: list[str],
                   entry: dict, stop_ids: list[int]) -> list[Generation]:
    """Greedy generation from prompt ids (``prompts.encode_prompt``), left-padded into one batch.

    ``stop_ids`` are all the model's end tokens (Qwen2.5's generation config lists two): passed to
    ``generate`` as a list, so a single ``eos_token_id`` never overrides the model's own list.
    """
    import torch

    start = time.perf_counter()
    enc = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt").to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    stopped_at: dict[int, int] = {}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids,
                             stopping_criteria=[stop_criterion(tokenizer, entry, stops, prompt_len, stopped_at)])
    latency = (time.perf_counter() - start) / len(prompt_ids)  # a batch's time, split evenly (documented)
    new = out[:, prompt_len:].tolist()
    results = []
    for i, ids in enumerate(new):
        used = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), len(ids))
        used = min(used, stopped_at.get(i, used))
        results.append(Generation(decode_generation(tokenizer, entry, ids, stop_ids), len(prompt_ids[i]), used, latency))
    return results


def run_hf(base: modeling.BaseModel, passes: list[Pass], adapters_dir: Path, settings: InferSettings,
           max_new_tokens: int, stops: list[str], stats: EngineStats, progress: Callable) -> dict[int, list[Generation]]:
    """One base model; adapters attached, switched and dropped in turn with peft's multi-adapter API."""
    from peft import PeftModel

    tokenizer = base.tokenizer
    tokenizer.padding_side = "left"
    stop_ids = modeling.stop_token_ids(base)
    base.model.eval()
    peft_model = None
    active: str | None = None
    results: dict[int, list[Generation]] = {}
    for index, p in enumerate(passes):
        if p.skipped:
            continue
        context = nullcontext()
        if p.adapter is None:
            model = peft_model if peft_model is not None else base.model
            if peft_model is not None:
                context = peft_model.disable_adapter()
        else:
            name = f"seed{p.adapter[0]}_n{p.adapter[1]}"
            where = str(adapter_dir(adapters_dir, *p.adapter))
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base.model, where, adapter_name=name)
                peft_model.eval()
            else:
                peft_model.load_adapter(where, adapter_name=name)
                peft_model.set_adapter(name)
                peft_model.delete_adapter(active)  # keep one adapter in memory at a time
            active = name
            stats.adapter_switches += 1
            model = peft_model
        start = time.perf_counter()
        order = length_order(p.prompt_ids, p.prompts)
        generations: list[Generation | None] = [None] * len(p.prompts)
        with context, progress(p) as bar:
            for b in range(0, len(order), settings.batch_size):
                idx = order[b:b + settings.batch_size]
                batch = [p.prompt_ids[i] for i in idx]
                for i, gen in zip(idx, generate_batch(model, tokenizer, batch, max_new_tokens, stops, base.entry, stop_ids)):
                    generations[i] = gen
                bar.update(len(idx))
        stats.pass_wall_s[index] = time.perf_counter() - start
        results[index] = generations  # type: ignore[assignment]
    return results


# --- vllm engine (GPU only; not runnable on the CPU machines this was written on) ----------------
def run_vllm(base_path: str, entry: dict, passes: list[Pass], adapters_dir: Path, settings: InferSettings,
             max_new_tokens: int, stats: EngineStats, progress: Callable) -> dict[int, list[Generation]]:
    """One vLLM engine with LoRA enabled; a LoRARequest per adapter, none for the base model.

    No stop strings are given to vLLM: like lm-eval's, they would cut before the answer starts; the
    answer is cut by ``prompts.postprocess`` afterwards, as for the other engines.
    """
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
    llm = LLM(model=base_path, enable_lora=bool(ranks), max_lora_rank=max(ranks, default=8), max_loras=1,
              max_model_len=entry.get("context_length"), seed=0, trust_remote_code=entry.get("trust_remote_code", False))
    stats.base_model_loads += 1
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
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
            outputs = llm.generate(p.prompts, params, lora_request=lora, use_tqdm=False)
            bar.update(len(p.prompts))
        wall = time.perf_counter() - start
        stats.pass_wall_s[index] = wall
        results[index] = [Generation(o.outputs[0].text, len(o.prompt_token_ids), len(o.outputs[0].token_ids),
                                     wall / max(len(p.prompts), 1)) for o in outputs]
    return results


# --- the job -----------------------------------------------------------------------------------
def peak_memory_bytes(device: str) -> int:
    """GPU: torch's peak allocation; CPU: the process's peak resident set (Linux reports KiB)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if platform.system() == "Darwin" else rss * 1024)


def load_for_engine(engine: str, entry: dict, data_dir: Path) -> modeling.BaseModel:
    """The base model (hf, lm-eval: its tokenizer also lays out the prompts); vllm loads its own copy."""
    if engine == "vllm":
        if entry["source"] == "tiny":
            base = modeling.load_base(entry, data_dir, device="cpu")
            modeling.BASE_MODEL_LOADS -= 1  # a CPU build to save for vLLM, not the model that generates
            return base
        from transformers import AutoTokenizer

        where = entry["hub_id"] if entry["source"] == "hub" else entry["path"]
        tokenizer = AutoTokenizer.from_pretrained(where, revision=entry.get("revision"),
                                                  trust_remote_code=entry.get("trust_remote_code", False))
        return modeling.BaseModel(None, tokenizer, entry, modeling.fingerprint(entry, data_dir), "cuda", "auto")
    return modeling.load_base(entry, data_dir, load_in_4bit=entry.get("load_in_4bit", False),
                              load_in_8bit=entry.get("load_in_8bit", False))


def base_weights_path(base: modeling.BaseModel, workdir: Path) -> str:
    """A folder or Hub id that lm-eval / vLLM can load the same base from (tiny models are saved)."""
    entry = base.entry
    if entry["source"] == "tiny":
        from switchpoint.core.tiny import save_tiny

        return str(save_tiny(base.model, base.tokenizer, workdir / "base"))
    if entry["source"] == "local":
        return str(entry["path"])
    try:  # the weights load_base just cached, as a folder, so an offline run finds them
        from huggingface_hub import snapshot_download

        return snapshot_download(entry["hub_id"], revision=entry.get("revision"), local_files_only=True)
    except Exception:  # noqa: BLE001 - any cache layout problem: fall back to the Hub id
        return entry["hub_id"]


def infer(settings: InferSettings, data_dir: Path, adapters_dir: Path, out_dir: Path,
          model_entry: dict | None = None) -> dict:
    """Generate every requested arm and write one predictions file per arm plus infer_metrics.json."""
    import tempfile

    from tqdm import tqdm

    job_start = time.perf_counter()
    data_dir, adapters_dir, out_dir = Path(data_dir), Path(adapters_dir), Path(out_dir)
    task = load_task_from_data(data_dir)
    info = data_info(data_dir)
    entry = model_entry or manifests.get_model(settings.model)
    entry = {**entry, "name": entry.get("name", settings.model)}
    if settings.engine not in ENGINES:
        raise JobError(f"--engine {settings.engine!r}: expected one of {', '.join(ENGINES)}")
    bad = [a for a in settings.arms if a not in ARM_CHOICES]
    if bad or not settings.arms:
        raise JobError(f"--arms {','.join(settings.arms)!r}: expected a comma-separated subset of {', '.join(ARM_CHOICES)}")
    if settings.batch_size < 1:
        raise JobError(f"--batch-size {settings.batch_size}: must be at least 1")
    sizes = sorted(set(settings.sizes if settings.sizes is not None else info["sizes"]))
    seeds = sorted(set(settings.seeds if settings.seeds is not None else info["seeds"]))
    shots = sorted(set(settings.shots if settings.shots is not None else sizes))
    for name, values, prepared in (("--sizes", sizes, info["sizes"]), ("--shots", shots, info["sizes"]),
                                   ("--seeds", seeds, info["seeds"])):
        missing = [v for v in values if v not in prepared and not (name != "--seeds" and v == 0)]
        if missing:
            raise JobError(f"{name} {missing}: the data folder {data_dir} was prepared for {prepared}; "
                           "use those values or rerun `switchpoint data`")
    max_new_tokens = settings.max_new_tokens or task["generation"]["max_new_tokens"]
    stops = list(task["generation"].get("stop", []))
    eval_set = read_eval_set(data_dir)

    passes = plan_passes(settings, settings.model, sizes, seeds, shots)
    # Adapters are checked against the base's fingerprint before the (possibly long) base load.
    check_adapters(passes, adapters_dir, modeling.BaseModel(None, None, entry, modeling.fingerprint(entry, data_dir), "", ""))

    loads_before = modeling.BASE_MODEL_LOADS
    base = load_for_engine(settings.engine, entry, data_dir)
    budget = int(entry.get("context_length", 4096)) - max_new_tokens
    for p in passes:
        build_prompts(p, task, entry, eval_set, data_dir, base.tokenizer, budget)

    def progress(p: Pass):
        return tqdm(total=len(p.prompts), desc=f"{entry['name']}: {p.label}", unit="ex", leave=False)

    stats = EngineStats()
    with tempfile.TemporaryDirectory(prefix="switchpoint-infer-") as tmp:
        if settings.engine == "hf":
            results = run_hf(base, passes, adapters_dir, settings, max_new_tokens, stops, stats, progress)
        elif settings.engine == "vllm":
            results = run_vllm(base_weights_path(base, Path(tmp)), entry, passes, adapters_dir, settings,
                               max_new_tokens, stats, progress)
        else:
            from switchpoint.infer_local.lm_eval_engine import run_lm_eval

            results = run_lm_eval(base_weights_path(base, Path(tmp)), entry, task, passes, eval_set, adapters_dir,
                                  settings, max_new_tokens, stats, progress, Path(tmp), base.tokenizer)
    stats.base_model_loads += modeling.BASE_MODEL_LOADS - loads_before

    out_dir.mkdir(parents=True, exist_ok=True)
    arm_rows = []
    for index, p in enumerate(passes):
        gens = results.get(index, [])
        for arm in p.arms:
            row = {"arm": arm.to_dict(), "file": None if p.skipped else arm.filename, "examples": len(gens),
                   "wall_s": round(stats.pass_wall_s.get(index, 0.0), 3),
                   "input_tokens": sum(g.input_tokens or 0 for g in gens),
                   "output_tokens": sum(g.output_tokens or 0 for g in gens),
                   "truncated": p.truncated, "skipped": p.skipped, "shared_pass": len(p.arms) > 1}
            arm_rows.append(row)
            if p.skipped:
                continue
            records = (prediction_record(arm, ex["id"], postprocess(task, g.text), ex["references"],
                                         input_tokens=g.input_tokens, output_tokens=g.output_tokens, latency_s=g.latency_s)
                       for ex, g in zip(eval_set, gens))
            write_predictions(out_dir / arm.filename, records)

    wall = time.perf_counter() - job_start
    generated = [g for gens in results.values() for g in gens]
    out_tokens = sum(g.output_tokens or 0 for g in generated)
    metrics = {
        "model": settings.model, "task": task["name"], "engine": settings.engine, "device": base.device,
        "dtype": base.dtype, "batch_size": settings.batch_size, "max_new_tokens": max_new_tokens,
        "wall_s": round(wall, 3), "examples": len(generated),
        "examples_per_s": round(len(generated) / wall, 3) if wall > 0 else None,
        "generated_tokens": out_tokens, "generated_tokens_per_s": round(out_tokens / wall, 3) if wall > 0 else None,
        "base_model_loads": stats.base_model_loads, "adapter_switches": stats.adapter_switches,
        "peak_memory_bytes": peak_memory_bytes(base.device),
        "truncated_prompts": sum(p.truncated for p in passes if not p.skipped),
        "passes": len([p for p in passes if not p.skipped]), "arms": arm_rows,
    }
    (out_dir / "infer_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


# --- CLI ---------------------------------------------------------------------------------------
@click.command("infer-local", context_settings={"show_default": True})
@click.option("--model", required=True, help="Model key in models.yaml (e.g. tiny-gpt-neox, qwen2.5-1.5b-instruct).")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
              help="Data folder from `switchpoint data` [default: <ml-root>/processing/input/data].")
@click.option("--adapters", "adapters_dir", default=None, type=click.Path(file_okay=False),
              help="Adapters from `switchpoint train`, as seed=S/n=N/ [default: <ml-root>/processing/input/adapters].")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where predictions and infer_metrics.json go [default: <ml-root>/processing/output].")
@click.option("--sizes", default=None, help="Comma-separated N for the finetune arm (0 = base model) [default: data.json's sizes].")
@click.option("--seeds", default=None, help="Comma-separated seeds [default: data.json's seeds].")
@click.option("--arms", default="finetune", help="Comma-separated arms: finetune, fewshot-local.")
@click.option("--shots", default=None, help="Comma-separated shot counts k for fewshot-local [default: the sizes].")
@click.option("--engine", type=click.Choice(ENGINES), default="hf",
              help="hf: transformers+peft; vllm: GPU, LoRA requests; lm-eval: lm-evaluation-harness per pass.")
@click.option("--batch-size", type=int, default=8, help="Prompts per generation batch (hf, lm-eval).")
@click.option("--max-new-tokens", type=int, default=None, help="Override the task's generation.max_new_tokens.")
@click.option("--ml-root", default=None, help="Root of the /opt/ml job layout (default $SWITCHPOINT_ML_ROOT or /opt/ml).")
def command(model, data_dir, adapters_dir, out_dir, sizes, seeds, arms, shots, engine, batch_size, max_new_tokens, ml_root):
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
    task's truncate_field (the input text) and counted. Adapters are checked (present, same base)
    before anything is generated. Greedy decoding; batches sorted by prompt length.
    """
    paths = job_paths(ml_root)

    def body() -> None:
        raw = {"model": model, "sizes": sizes, "seeds": seeds, "arms": arms, "shots": shots, "engine": engine,
               "batch_size": batch_size, "max_new_tokens": max_new_tokens}
        settings = typed_settings(InferSettings, {k: v for k, v in raw.items() if v is not None}, source="command line")
        out = Path(out_dir) if out_dir else paths.processing_output
        metrics = infer(settings, Path(data_dir) if data_dir else paths.processing_input("data"),
                        Path(adapters_dir) if adapters_dir else paths.processing_input("adapters"), out)
        skipped = [r for r in metrics["arms"] if r["skipped"]]
        click.echo(f"infer-local: {metrics['model']} ({metrics['engine']}, {metrics['device']}): "
                   f"{len(metrics['arms']) - len(skipped)} arms, {metrics['examples']} generations, "
                   f"{metrics['examples_per_s']} ex/s, {metrics['truncated_prompts']} truncated, "
                   f"{len(skipped)} skipped -> {out}")

    run_job(paths, body, name="infer-local")
