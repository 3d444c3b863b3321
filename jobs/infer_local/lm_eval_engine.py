"""The ``lm-eval`` engine: EleutherAI lm-evaluation-harness, the harness the reference study used.

The task YAMLs in ``lm_eval_tasks/`` (shipped in the package) read a JSONL of documents whose
``prompt`` is already laid out by ``switchpoint.core.prompts`` for the model and arm, generate greedily
with ``generate_until`` and post-process with ``prompts.postprocess`` (a custom filter), so lm-eval
sees exactly the prompts the ``hf`` engine sees. The engine runs lm-eval once per pass (the base
model, then each adapter through ``peft=`` in model_args), fully offline, and converts its logged
samples into the predictions contract.

To run lm-eval yourself on the same prompts::

    python -c "from switchpoint.infer_local.lm_eval_engine import export_docs; export_docs('DATA', 'tiny-gpt-neox', 'switchpoint_lm_eval')"
    lm-eval run --model hf --model_args pretrained=BASE,peft=ADAPTER \\
        --include_path "$(python -c 'from switchpoint.infer_local.lm_eval_engine import TASKS_DIR; print(TASKS_DIR)')" \\
        --tasks switchpoint_jsquad --log_samples --predict_only --output_path results

from the folder holding ``switchpoint_lm_eval/`` (lm-eval resolves relative ``data_files`` against
the working directory).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from switchpoint.core import modeling
from switchpoint.core.contract import JobError
from switchpoint.core.prompts import from_model_text

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
DOCS_FOLDER = "switchpoint_lm_eval"


def lm_eval_task_name(task: dict) -> str:
    path = TASKS_DIR / f"switchpoint_{task['name']}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TASKS_DIR.glob("switchpoint_*.yaml"))
        raise JobError(f"--engine lm-eval: no lm-eval task YAML for task {task['name']!r} in {TASKS_DIR} "
                       f"(have {', '.join(known)}); add switchpoint_{task['name']}.yaml there or use --engine hf")
    return path.stem


def write_docs(path: Path, task: dict, eval_set: list[dict], prompts: list[str]) -> Path:
    """The JSONL lm-eval reads: one document per example, with its finished prompt and stop strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stops = list(task["generation"].get("stop", []))
    with path.open("w", encoding="utf-8") as out:
        for example, prompt in zip(eval_set, prompts, strict=True):
            out.write(json.dumps({"id": example["id"], "prompt": prompt, "references": example["references"],
                                  "stop": stops}, ensure_ascii=False) + "\n")
    return path


def export_docs(data_dir: str | Path, model: str, out_dir: str | Path, shots: int = 0, seed: int = 0) -> Path:
    """Write ``<out_dir>/<task>.jsonl`` for running the shipped YAMLs with lm-eval by hand."""
    from switchpoint.core.datafolder import (
        load_task_from_data,
        model_entry,
        read_eval_set,
        read_train_set,
    )
    from switchpoint.infer_local.passes import fit_prompt

    task = load_task_from_data(Path(data_dir))
    entry = model_entry(Path(data_dir), model)  # a user's own model travels in the data folder
    # Only the tokenizer lays out prompts; a tiny model's tokenizer is built with the model from the data.
    tokenizer = (modeling.load_base(entry, Path(data_dir), device="cpu").tokenizer if entry["source"] == "tiny"
                 else modeling.load_tokenizer(entry))
    budget = int(entry.get("context_length", 4096)) - int(task["generation"]["max_new_tokens"])
    train = read_train_set(Path(data_dir), seed, shots)
    eval_set = read_eval_set(Path(data_dir))
    prompts = [fit_prompt(task, entry, ex, train, tokenizer, budget)[0] for ex in eval_set]
    if any(p is None for p in prompts):
        raise JobError(f"{shots} shots do not fit the context of {model}; use fewer shots")
    return write_docs(Path(out_dir) / f"{task['name']}.jsonl", task, eval_set, prompts)  # type: ignore[arg-type]


def include_dir(task: dict, docs: Path, cache_dir: Path, dest: Path) -> Path:
    """A copy of the shipped tasks whose YAML reads ``docs`` by absolute path (lm-eval resolves a
    relative path against the working directory) and caches in ``cache_dir``."""
    shutil.copytree(TASKS_DIR, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    name = lm_eval_task_name(task)
    path = dest / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    relative = f"{DOCS_FOLDER}/{task['name']}.jsonl"
    if relative not in text:
        raise JobError(f"{TASKS_DIR / path.name}: expected data_files test: {relative}; restore the shipped YAML")
    # Plain text edits: the YAML holds a `!function` tag that a safe YAML round trip would drop.
    text = text.replace(relative, json.dumps(str(Path(docs).resolve())))
    text = text.replace("dataset_kwargs:\n", f"dataset_kwargs:\n  cache_dir: {json.dumps(str(cache_dir))}\n", 1)
    path.write_text(text, encoding="utf-8")
    return dest


@contextmanager
def offline_env() -> Iterator[None]:
    """HF_HUB_OFFLINE/HF_DATASETS_OFFLINE for the run: `datasets` otherwise tries the network."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_args(base_path: str, entry: dict, adapter: Path | None, device: str, add_bos: bool | None = None) -> str:
    """lm-eval's ``model_args``; ``add_bos`` (``prompts.prompt_wants_bos``) makes lm-eval tokenise each
    prompt as ``prompts.encode_prompt`` does: special tokens only for a model whose card adds a BOS."""
    args = [f"pretrained={base_path}", f"max_length={int(entry.get('context_length', 4096))}"]
    if add_bos is not None:
        args.append(f"add_bos_token={add_bos}")
    if device == "cpu":
        args.append("dtype=float32")
    if adapter is not None:
        args.append(f"peft={adapter}")
    if entry.get("trust_remote_code"):
        args.append("trust_remote_code=True")
    return ",".join(args)


def samples_to_generations(samples: list[dict], prompts: list[str], tokenizer: Any, wall_s: float,
                           entry: dict | None = None) -> list:
    """lm-eval's logged samples, in document order, as Generations (raw text before post-processing).

    lm-eval logs no token counts or latencies: tokens are recounted with the model's tokenizer and
    the pass's wall time is split evenly over its examples.
    """
    from switchpoint.infer_local.passes import Generation, count_tokens

    by_doc = {int(s["doc_id"]): s for s in samples}
    if sorted(by_doc) != list(range(len(prompts))):
        raise JobError(f"lm-eval returned {len(by_doc)} samples for {len(prompts)} prompts; the run is incomplete")
    out = []
    for i, prompt in enumerate(prompts):
        sample = by_doc[i]
        if sample["arguments"][0][0] != prompt:
            raise JobError(f"lm-eval sample {i} was given a different prompt than switchpoint wrote; "
                           "is the task YAML's doc_to_text still '{{prompt}}'?")
        text = from_model_text(entry or {}, sample["resps"][0][0])  # rinna's <NL> is "\n", as for the hf engine
        out.append(Generation(text, count_tokens(tokenizer, prompt, entry),
                              len(tokenizer(text, add_special_tokens=False)["input_ids"]), wall_s / len(prompts)))
    return out


def pass_task(task: dict, docs: Path, cache_dir: Path, tasks_dir: Path, suffix: str) -> str:
    """Add to ``tasks_dir`` a copy of the shipped task YAML, renamed ``<name><suffix>``, that reads
    ``docs`` (by absolute path) and caches in ``cache_dir``; returns the new task's name."""
    tasks_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TASKS_DIR / "utils.py", tasks_dir / "utils.py")  # the YAMLs' `!function utils.…`
    name = lm_eval_task_name(task)
    text = (TASKS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    relative = f"{DOCS_FOLDER}/{task['name']}.jsonl"
    if relative not in text or f"task: {name}\n" not in text:
        raise JobError(f"{TASKS_DIR / name}.yaml: expected `task: {name}` and data_files test: {relative}; "
                       "restore the shipped YAML")
    # Plain text edits: the YAML holds a `!function` tag that a safe YAML round trip would drop.
    text = text.replace(f"task: {name}\n", f"task: {name}{suffix}\n", 1).replace(relative, json.dumps(str(Path(docs).resolve())))
    text = text.replace("dataset_kwargs:\n", f"dataset_kwargs:\n  cache_dir: {json.dumps(str(cache_dir))}\n", 1)
    (tasks_dir / f"{name}{suffix}.yaml").write_text(text, encoding="utf-8")
    return f"{name}{suffix}"


def lm_eval_model(base: Any, base_path: str, entry: dict, adapter: Path | None, device: str, batch_size: int,
                  load_in_4bit: bool) -> dict[str, Any]:
    """``simple_evaluate``'s model arguments: a model_args string (lm-eval loads the base again, as
    the study did) or, for a 4-bit base, an HFLM around the base this job loaded with bitsandbytes
    (transformers 5 takes no ``load_in_4bit`` keyword, so lm-eval cannot quantise from model_args)."""
    from switchpoint.core.prompts import prompt_wants_bos

    add_bos = prompt_wants_bos(entry, base.tokenizer)
    if not load_in_4bit and entry.get("tokenizer", "auto") == "auto":
        return {"model": "hf", "model_args": model_args(base_path, entry, adapter, device, add_bos)}
    from lm_eval.models.huggingface import HFLM

    if not load_in_4bit:  # this job's own tokenizer (sentencepiece, tokenizer.json), not transformers' conversion
        return {"model": HFLM(pretrained=base_path, tokenizer=base.tokenizer, peft=str(adapter) if adapter else None,
                              batch_size=batch_size, device=device, add_bos_token=add_bos,
                              dtype="float32" if device == "cpu" else "auto",
                              max_length=int(entry.get("context_length", 4096)))}

    model = base.model
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base.model, str(adapter))
    return {"model": HFLM(pretrained=model, tokenizer=base.tokenizer, batch_size=batch_size, add_bos_token=add_bos,
                          max_length=int(entry.get("context_length", 4096)))}


def run_lm_eval(base: Any, base_path: str, task: dict, passes: list, eval_set: list[dict], adapters_dir: Path,
                batch_size: int, max_new_tokens: int, load_in_4bit: bool, stats: Any, progress: Callable,
                workdir: Path) -> dict[int, list]:
    """lm-eval's Python API once per pass, over one task index built for the whole job (indexing
    lm-eval's built-in tasks once per pass was ~90 % of this engine's time)."""
    from switchpoint.infer_local.passes import adapter_dir

    with offline_env():
        try:
            import lm_eval
            from lm_eval.tasks import TaskManager
        except ImportError as err:
            raise JobError(f"--engine lm-eval needs lm-evaluation-harness ({err}); install switchpoint[lm-eval]") from err
        device = "cuda" if modeling.cuda_available() else "cpu"
        names = {index: pass_task(task, write_docs(workdir / f"pass{index}" / f"{task['name']}.jsonl", task, eval_set,
                                                   p.prompts),
                                  workdir / f"pass{index}" / "datasets_cache", workdir / "tasks", f"_pass{index}")
                 for index, p in enumerate(passes) if not p.skipped}
        manager = TaskManager(include_path=str(workdir / "tasks"), include_defaults=False)
        results: dict[int, list] = {}
        for index, name in names.items():
            p = passes[index]
            adapter = adapter_dir(adapters_dir, *p.adapter) if p.adapter else None
            start = time.perf_counter()
            with progress(p) as bar:
                out = lm_eval.simple_evaluate(
                    **lm_eval_model(base, base_path, base.entry, adapter, device, batch_size, load_in_4bit),
                    tasks=[name], batch_size=batch_size, device=device, task_manager=manager,
                    predict_only=True, log_samples=True, gen_kwargs=f"max_gen_toks={max_new_tokens}",
                    random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
                bar.update(len(p.prompts))
            wall = time.perf_counter() - start
            stats.pass_wall_s[index] = wall
            stats.base_model_loads += not load_in_4bit
            stats.adapter_switches += adapter is not None
            results[index] = samples_to_generations(out["samples"][name], p.prompts, base.tokenizer, wall, base.entry)
    return results

