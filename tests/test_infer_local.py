"""infer-local: one base load for the base model and every adapter, identical predictions across
engines and batch sizes, few-shot prompts built from the seed's own training examples, context
truncation, and adapter checks before anything is generated."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import (
    load_task_from_data,
    read_eval_set,
    read_train_set,
)
from switchpoint.core.predictions import Arm, read_predictions
from switchpoint.core.prompts import answer_text, model_prompt, render_input
from switchpoint.infer_local.job import infer
from switchpoint.infer_local.passes import Pass, build_prompts, fit_prompt
from switchpoint.infer_local.settings import Settings as InferSettings

MODEL = "tiny-gpt-neox"
SEEDS_SIZES = [(seed, n) for seed in (0, 1) for n in (2, 4, 8)]


def make_adapter(base: modeling.BaseModel, where: Path, seed: int) -> None:
    """A LoRA adapter with random A and B (so it changes the outputs), in train's layout."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=base.entry["lora_target_modules"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(base.model), lora).save_pretrained(where)
    modeling.write_base_info(where, base)


@pytest.fixture(scope="module")
def adapters(jsquad_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    base = modeling.load_base(manifests.get_model(MODEL), jsquad_data)
    for seed, n in SEEDS_SIZES:
        make_adapter(base, root / f"seed={seed}" / f"n={n}", seed=100 * seed + n)
    return root


def predictions(out: Path, kind: str, n: int, seed: int) -> list[str]:
    return [r["prediction"] for r in read_predictions(out / Arm(kind, MODEL, n, seed).filename)]


def test_one_base_load_serves_the_base_model_and_every_adapter(jsquad_data, adapters, tmp_path):
    loads = modeling.BASE_MODEL_LOADS
    metrics = infer(InferSettings(model=MODEL, max_new_tokens=8), jsquad_data, adapters, tmp_path)

    assert modeling.BASE_MODEL_LOADS - loads == 1
    assert metrics["base_model_loads"] == 1 and metrics["adapter_switches"] == 6
    assert 0 < metrics["adapter_switch_s"] < metrics["wall_s"]  # the switch cost, apart from generation
    # data.json's sizes 0,2,4,8 and seeds 0,1: the base's generation is shared by both seeds' N=0 files.
    assert metrics["passes"] == 7 and metrics["examples"] == 7 * 12
    eval_set = read_eval_set(jsquad_data)
    outputs = {}
    for seed in (0, 1):
        for n in (0, 2, 4, 8):
            records = read_predictions(tmp_path / Arm("finetune", MODEL, n, seed).filename)  # validates the contract
            assert [r["id"] for r in records] == [e["id"] for e in eval_set]
            assert [r["references"] for r in records] == [e["references"] for e in eval_set]
            assert all(r["input_tokens"] > 0 and 0 < r["output_tokens"] <= 8 and r["error"] is None for r in records)
            outputs[seed, n] = [r["prediction"] for r in records]
    assert outputs[0, 0] == outputs[1, 0]
    distinct = {tuple(v) for (seed, n), v in outputs.items() if n > 0} | {tuple(outputs[0, 0])}
    assert len(distinct) == 7, "every adapter must change the outputs, so each was really attached"
    saved = json.loads((tmp_path / "infer_metrics.json").read_text())
    assert saved["engine"] == "hf" and saved["truncated_prompts"] == 0 and len(saved["arms"]) == 8
    assert saved["examples_per_s"] > 0 and saved["generated_tokens"] > 0 and saved["peak_memory_bytes"] > 0


def test_batched_generation_equals_one_prompt_at_a_time(jsquad_data, adapters, tmp_path):
    settings = dict(model=MODEL, sizes=[0, 8], seeds=[1], max_new_tokens=8)
    infer(InferSettings(**settings, batch_size=5), jsquad_data, adapters, tmp_path / "batched")
    infer(InferSettings(**settings, batch_size=1), jsquad_data, adapters, tmp_path / "single")
    for n in (0, 8):
        batched = predictions(tmp_path / "batched", "finetune", n, 1)
        assert batched == predictions(tmp_path / "single", "finetune", n, 1)
        assert any(batched)


def test_lm_eval_engine_gives_the_hf_engine_predictions(jsquad_data, adapters, tmp_path, monkeypatch):
    lm_eval_tasks = pytest.importorskip("lm_eval.tasks")
    indexes = []
    real = lm_eval_tasks.TaskManager
    monkeypatch.setattr(lm_eval_tasks, "TaskManager", lambda *a, **k: indexes.append(k) or real(*a, **k))
    # The base and one adapter (an lm-eval run costs seconds); batches of 4 over prompts of different lengths.
    settings = dict(model=MODEL, sizes=[0, 4], seeds=[0], max_new_tokens=8, batch_size=4)
    infer(InferSettings(**settings, engine="hf"), jsquad_data, adapters, tmp_path / "hf")
    metrics = infer(InferSettings(**settings, engine="lm-eval"), jsquad_data, adapters, tmp_path / "lm-eval")
    for n in (0, 4):
        from_lm_eval = predictions(tmp_path / "lm-eval", "finetune", n, 0)
        assert from_lm_eval == predictions(tmp_path / "hf", "finetune", n, 0) and any(from_lm_eval)
    # lm-eval loads the base itself for each of its two runs; the job only built the tiny model to save it.
    assert metrics["engine"] == "lm-eval" and metrics["base_model_loads"] == 2 and metrics["passes"] == 2
    assert len(indexes) == 1 and indexes[0]["include_defaults"] is False  # one task index per job, ours only


def test_fewshot_prompt_holds_the_seeds_first_k_training_examples_in_order(jsquad_data):
    task = load_task_from_data(jsquad_data)
    entry = manifests.get_model(MODEL)
    base = modeling.load_base(entry, jsquad_data)
    example = read_eval_set(jsquad_data)[0]
    for seed in (0, 1):
        p = Pass(None, (seed, 4), [Arm("fewshot-local", MODEL, 4, seed)])
        build_prompts(p, task, entry, [example], jsquad_data, base.tokenizer, budget=4000)
        prompt = p.prompts[0]
        pool = read_train_set(jsquad_data, seed, 8)  # nested: the first 4 of these are the shots
        positions = [prompt.index(render_input(task, shot) + "\n\n出力:\n" + answer_text(shot)) for shot in pool[:4]]
        assert positions == sorted(positions)
        assert all(render_input(task, shot) not in prompt for shot in pool[4:])
        assert prompt.endswith(render_input(task, example) + "\n\n出力:\n")
    assert read_train_set(jsquad_data, 0, 4) != read_train_set(jsquad_data, 1, 4)


def test_long_prompts_are_cut_from_the_left_of_the_input_text_and_counted(jsquad_data, tmp_path):
    task = load_task_from_data(jsquad_data)
    entry = {**manifests.get_model(MODEL), "name": MODEL, "context_length": 160}
    base = modeling.load_base(entry, jsquad_data)
    eval_set = read_eval_set(jsquad_data)
    budget = 160 - 8
    too_long = [e for e in eval_set if len(base.tokenizer(model_prompt(task, entry, e))["input_ids"]) > budget]
    assert 0 < len(too_long) < len(eval_set)

    example = too_long[0]
    prompt, truncated = fit_prompt(task, entry, example, [], base.tokenizer, budget)
    assert truncated and len(base.tokenizer(prompt)["input_ids"]) <= budget
    assert prompt.startswith(task["prompt"]["instruction"])  # the instruction is intact
    assert prompt.endswith(f"\n質問：{example['question']}\n\n出力:\n")  # so are the question and answer slot
    kept = prompt.split("文章：", 1)[1].split("\n質問：", 1)[0]
    assert kept and len(kept) < len(example["context"]) and example["context"].endswith(kept)

    metrics = infer(InferSettings(model=MODEL, sizes=[0], seeds=[0], arms=["finetune", "fewshot-local"], shots=[8],
                                  max_new_tokens=8), jsquad_data, tmp_path, tmp_path / "out", model_entry_override=entry)
    assert metrics["truncated_prompts"] == len(too_long)
    rows = {(r["arm"]["kind"], r["arm"]["n"]): r for r in metrics["arms"]}
    assert rows["finetune", 0]["truncated"] == len(too_long) and rows["finetune", 0]["skipped"] is None
    # Eight shots cannot fit in 152 tokens: the arm is skipped with a reason, not written.
    assert "8 shots alone need" in rows["fewshot-local", 8]["skipped"]
    assert not (tmp_path / "out" / Arm("fewshot-local", MODEL, 8, 0).filename).exists()
    assert len(read_predictions(tmp_path / "out" / Arm("finetune", MODEL, 0, 0).filename)) == len(eval_set)


def test_missing_adapter_stops_the_cli_before_any_generation(jsquad_data, adapters, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from switchpoint.cli import main
    from switchpoint.infer_local import hf_engine as infer_local

    root = tmp_path / "ml"
    incomplete = root / "processing" / "input" / "adapters"
    for seed, n in [(0, 2), (0, 8)]:  # seed=0/n=4 is missing
        (incomplete / f"seed={seed}").mkdir(parents=True, exist_ok=True)
        (incomplete / f"seed={seed}" / f"n={n}").symlink_to(adapters / f"seed={seed}" / f"n={n}")
    monkeypatch.setattr(infer_local, "generate_batch", lambda *a, **k: pytest.fail("generated before the check"))
    loads = modeling.BASE_MODEL_LOADS
    result = CliRunner().invoke(main, ["infer-local", "--model", MODEL, "--data", str(jsquad_data), "--seeds", "0",
                                       "--ml-root", str(root)])
    assert result.exit_code == 1
    failure = (root / "output" / "failure").read_text()
    assert "seed=0/n=4" in failure and "adapter_config.json missing" in failure
    assert modeling.BASE_MODEL_LOADS == loads
    assert not (root / "processing" / "output").exists()


def test_adapter_trained_on_another_base_is_refused(jsquad_data, xlsum_data, adapters, tmp_path, monkeypatch):
    from switchpoint.infer_local import hf_engine as infer_local

    entry = manifests.get_model(MODEL)
    other = modeling.BaseModel(None, None, entry, modeling.fingerprint(entry, xlsum_data), "cpu", "float32")
    target = tmp_path / "seed=0" / "n=2"
    target.parent.mkdir()
    import shutil

    shutil.copytree(adapters / "seed=0" / "n=2", target)
    modeling.write_base_info(target, other)  # as if trained on the xlsum-built tiny base
    monkeypatch.setattr(infer_local, "generate_batch", lambda *a, **k: pytest.fail("generated before the check"))
    with pytest.raises(JobError, match=r"seed=0/n=2: adapter was trained on base .*use the matching model"):
        infer(InferSettings(model=MODEL, sizes=[0, 2], seeds=[0]), jsquad_data, tmp_path, tmp_path / "out")


def test_vllm_engine_without_a_gpu_says_so(jsquad_data, adapters, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the vllm path would run")
    loads = modeling.BASE_MODEL_LOADS
    with pytest.raises(JobError, match="--engine vllm needs a CUDA GPU and vLLM"):  # Llama: vLLM serves it on a GPU
        infer(InferSettings(model="tiny-llama", sizes=[0], seeds=[0], engine="vllm"), jsquad_data, adapters, tmp_path)
    assert modeling.BASE_MODEL_LOADS == loads  # said before the base loads


def test_predictions_flow_into_score(jsquad_data, adapters, tmp_path):
    score = pytest.importorskip("switchpoint.score.job", reason="the score job is not written yet")
    from click.testing import CliRunner

    root = tmp_path / "ml"
    out = root / "processing" / "input" / "predictions" / "local" / MODEL
    infer(InferSettings(model=MODEL, sizes=[0, 2], seeds=[0], max_new_tokens=8), jsquad_data, adapters, out)
    result = CliRunner().invoke(score.command, ["--task", str(jsquad_data), "--bootstrap", "50", "--ml-root", str(root)])
    assert result.exit_code == 0, result.output
    summary = (root / "processing" / "output" / "summary.csv").read_text()
    for n in (0, 2):
        assert f"finetune,{MODEL},{n},0" in summary
