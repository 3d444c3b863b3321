"""The train job: one base load, a fresh LoRA adapter per (seed, N), resumable, loss on answers only."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from switchpoint.core import manifests, modeling, prompts
from switchpoint.core.contract import job_paths, write_hyperparameters
from switchpoint.core.datafolder import (
    load_task_from_data,
    read_eval_set,
    read_train_set,
)
from switchpoint.data.job import DataSettings, prepare
from switchpoint.train import loop
from switchpoint.train.job import train
from switchpoint.train.loop import encode_example
from switchpoint.train.settings import Settings

FAST = dict(epochs=1, batch_size=2, min_steps=3, learning_rate=1e-2, lora_r=4, lora_alpha=8, lora_dropout=0.0,
            cutoff_len=256)
METRIC_FIELDS = {"model", "n", "seed", "optimizer_steps", "epochs", "batch_size", "trained_tokens", "wall_s",
                 "peak_memory_bytes", "tokens_per_s", "device", "gpu_seconds", "mfu", "loss_curve"}


def adapter_weights(adapter_dir: Path) -> dict:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.mark.parametrize("model", ["tiny-gpt-neox", "tiny-llama"])
def test_every_size_and_seed_gets_its_adapter_in_the_checkpoint_layout(jsquad_data, tmp_path, model):
    loads = modeling.BASE_MODEL_LOADS
    paths = job_paths(tmp_path / "ml")
    summary = train(Settings(model=model, sizes=[2, 4, 8], seeds=[0, 1], **FAST), paths, jsquad_data)

    assert modeling.BASE_MODEL_LOADS - loads == 1  # one base load for six adapters
    adapters = paths.checkpoints / "adapters"
    assert sorted(p.relative_to(adapters).as_posix() for p in adapters.glob("seed=*/n=*")) == [
        f"seed={s}/n={n}" for s in (0, 1) for n in (2, 4, 8)]
    assert not list(adapters.rglob("*.partial"))
    fingerprint = json.loads((adapters / "seed=0" / "n=2" / "base.json").read_text())["fingerprint"]
    for seed in (0, 1):
        for n in (2, 4, 8):
            folder = adapters / f"seed={seed}" / f"n={n}"
            assert {p.name for p in folder.iterdir()} == {"adapter_model.safetensors", "adapter_config.json",
                                                          "base.json", "train_metrics.json"}
            assert json.loads((folder / "base.json").read_text()) == {"model": model, "fingerprint": fingerprint,
                                                                       "load_in_4bit": False, "load_in_8bit": False}
            metrics = json.loads((folder / "train_metrics.json").read_text())
            assert METRIC_FIELDS <= set(metrics)
            assert (metrics["model"], metrics["n"], metrics["seed"], metrics["device"]) == (model, n, seed, "cpu")
            assert metrics["optimizer_steps"] == max(3, math.ceil(n / 2)) == len(metrics["loss_curve"])
            assert metrics["trained_tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0
            assert metrics["gpu_seconds"] is None and metrics["mfu"] is None
    assert adapter_weights(adapters / "seed=0" / "n=2").keys() == adapter_weights(adapters / "seed=1" / "n=8").keys()
    expected = {"model": model, "base_model_loads": 1, "device": "cpu",
                "adapters": [{"seed": s, "n": n, "skipped": False} for s in (0, 1) for n in (2, 4, 8)]}
    for where in (adapters, paths.model):
        written = json.loads((where / "train_summary.json").read_text())
        assert {k: written[k] for k in expected} == expected and written["wall_s"] > 0
    assert summary["adapters"] == expected["adapters"]


def test_same_seed_same_weights_and_no_carry_over_from_smaller_sizes(jsquad_data, tmp_path):
    """N=8 trained after N=2 and N=4 in one job equals N=8 trained alone: fresh adapter, untouched base."""
    sweep = train(Settings(model="tiny-gpt-neox", sizes=[2, 4, 8], seeds=[0], **FAST), job_paths(tmp_path / "a"), jsquad_data)
    alone = train(Settings(model="tiny-gpt-neox", sizes=[8], seeds=[0], **FAST), job_paths(tmp_path / "b"), jsquad_data)
    assert len(sweep["adapters"]) == 3 and len(alone["adapters"]) == 1
    first = adapter_weights(tmp_path / "a" / "checkpoints" / "adapters" / "seed=0" / "n=8")
    second = adapter_weights(tmp_path / "b" / "checkpoints" / "adapters" / "seed=0" / "n=8")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)
    other = adapter_weights(tmp_path / "a" / "checkpoints" / "adapters" / "seed=0" / "n=4")
    assert any(not (first[k] == other[k]).all() for k in first)  # and training did change something


def test_labels_cover_only_the_answer_and_eos(jsquad_data):
    task = load_task_from_data(jsquad_data)
    entry = manifests.get_model("tiny-llama")
    base = modeling.load_base(entry, jsquad_data)
    tok = base.tokenizer
    example = read_train_set(jsquad_data, 0, 2)[0]
    prompt_ids = tok(prompts.model_prompt(task, entry, example, tokenizer=tok))["input_ids"]
    answer_ids = tok(prompts.answer_text(example), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    full = encode_example(task, entry, tok, example, cutoff_len=4096)
    assert full["input_ids"] == prompt_ids + answer_ids and not full["truncated"]
    assert full["labels"] == [-100] * len(prompt_ids) + answer_ids
    assert tok.decode([t for t in full["labels"] if t != -100]) == prompts.answer_text(example) + tok.eos_token

    cutoff = len(full["input_ids"]) - 5  # the input text must lose a few tokens
    cut = encode_example(task, entry, tok, example, cutoff_len=cutoff)
    kept = len(cut["input_ids"]) - len(answer_ids)
    assert cut["truncated"] and len(cut["input_ids"]) <= cutoff and kept < len(prompt_ids)
    assert cut["input_ids"][kept:] == answer_ids  # the answer stays whole
    assert cut["labels"] == [-100] * kept + answer_ids
    assert cut["input_ids"][:3] == prompt_ids[:3]  # the template's head is kept (the input text is what shrinks)


def test_step_count_and_epoch_order():
    settings = Settings(model="tiny-gpt-neox", epochs=3, batch_size=4, min_steps=20)
    assert loop.optimizer_steps(2, settings) == 20  # the minimum for tiny N
    assert loop.optimizer_steps(100, settings) == 3 * 25
    assert loop.optimizer_steps(101, settings) == 3 * 26
    schedule = loop.batch_schedule(10, 9, 4, seed=0)
    assert [len(b) for b in schedule] == [4, 4, 2] * 3
    for epoch in range(3):  # every example exactly once per epoch
        assert sorted(i for b in schedule[3 * epoch: 3 * epoch + 3] for i in b) == list(range(10))
    assert schedule == loop.batch_schedule(10, 9, 4, seed=0) != loop.batch_schedule(10, 9, 4, seed=1)


def test_restart_trains_only_the_adapters_not_yet_complete(jsquad_data, tmp_path, monkeypatch):
    paths = job_paths(tmp_path / "ml")
    settings = Settings(model="tiny-gpt-neox", sizes=[2, 4, 8], seeds=[0], **FAST)
    real = loop.train_adapter
    trained: list[int] = []

    def stopped_after_first(accelerator, base, task, examples, *args, **kwargs):
        if trained:  # a spot interruption in the middle of the second adapter
            raise KeyboardInterrupt
        trained.append(len(examples))
        return real(accelerator, base, task, examples, *args, **kwargs)

    monkeypatch.setattr(loop, "train_adapter", stopped_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(settings, paths, jsquad_data)
    adapters = paths.checkpoints / "adapters" / "seed=0"
    assert sorted(p.name for p in adapters.iterdir()) == [".n=4.partial", "n=2"]  # no half-written n=4/
    first = (adapters / "n=2" / "adapter_model.safetensors").read_bytes()

    def counting(accelerator, base, task, examples, *args, **kwargs):
        trained.append(len(examples))
        return real(accelerator, base, task, examples, *args, **kwargs)

    monkeypatch.setattr(loop, "train_adapter", counting)
    trained.clear()
    summary = train(settings, paths, jsquad_data)
    assert trained == [4, 8]
    assert summary["adapters"] == [{"seed": 0, "n": 2, "skipped": True}, {"seed": 0, "n": 4, "skipped": False},
                                   {"seed": 0, "n": 8, "skipped": False}]
    assert (adapters / "n=2" / "adapter_model.safetensors").read_bytes() == first
    assert sorted(p.name for p in adapters.iterdir()) == ["n=2", "n=4", "n=8"]

    # A folder restored half-way from S3 (metrics missing) is not complete: it is trained again.
    (adapters / "n=8" / "train_metrics.json").unlink()
    trained.clear()
    train(settings, paths, jsquad_data)
    assert trained == [8]


def test_sagemaker_style_run_reads_hyperparameters_and_lets_options_override(jsquad_data, tmp_path):
    from switchpoint.cli import main

    paths = job_paths(tmp_path / "ml")
    shutil.copytree(jsquad_data, paths.channel("data"))
    write_hyperparameters(paths, {"model": "tiny-llama", "sizes": [2], "seeds": [1], "learning-rate": "0.01",
                                  "min-steps": 2, "epochs": 5, "lora_r": 4})
    result = CliRunner().invoke(main, ["train", "train", "--ml-root", str(paths.root), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((paths.checkpoints / "adapters" / "seed=1" / "n=2" / "train_metrics.json").read_text())
    hyper = metrics["hyperparameters"]
    assert (hyper["epochs"], hyper["min_steps"], hyper["lora_r"]) == (1, 2, 4)  # option > hyperparameters.json
    assert hyper["learning_rate"] == pytest.approx(0.01)  # from hyperparameters.json
    assert hyper["lora_alpha"] == Settings.model_fields["lora_alpha"].default  # the job's own default
    assert metrics["optimizer_steps"] == 2
    assert json.loads((paths.model / "train_summary.json").read_text())["adapters"] == [
        {"seed": 1, "n": 2, "skipped": False}]


@pytest.mark.parametrize("hyperparameters, expected", [
    ({"model": "tiny-gpt-neox", "lerning_rate": "0.1"}, "unknown setting 'lerning_rate'"),
    ({"model": "tiny-gpt-neox", "batch-size": "four"}, "'batch_size'='four' is invalid"),
    ({"model": "tiny-gpt-neox", "warmup-ratio": "1.5"}, "'warmup_ratio'='1.5' is invalid: Input should be less than 1"),
    ({"model": "tiny-gpt-neox", "sizes": "16"}, "no training set for seed=0, N=16"),
])
def test_bad_settings_fail_with_a_one_line_reason_under_a_moved_root(jsquad_data, tmp_path, hyperparameters, expected):
    from switchpoint.cli import main

    paths = job_paths(tmp_path / "moved")
    shutil.copytree(jsquad_data, paths.channel("data"))
    write_hyperparameters(paths, hyperparameters)
    loads = modeling.BASE_MODEL_LOADS
    result = CliRunner().invoke(main, ["train", "--ml-root", str(paths.root)])
    assert result.exit_code == 1
    reason = paths.failure.read_text()
    assert reason.startswith("train: ") and expected in reason and reason.count("\n") == 1
    assert modeling.BASE_MODEL_LOADS == loads  # settings and data are checked before any model is loaded
    assert not (paths.checkpoints / "adapters").exists()


def test_out_of_gpu_memory_fails_with_advice(jsquad_data, tmp_path, monkeypatch):
    import torch
    from switchpoint.cli import main

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "train_adapter", out_of_memory)
    root = tmp_path / "ml"
    result = CliRunner().invoke(main, ["train", "--ml-root", str(root), "--data", str(jsquad_data),
                                       "--model", "tiny-gpt-neox", "--sizes", "2", "--seeds", "0"])
    assert result.exit_code == 1
    reason = (root / "output" / "failure").read_text()
    assert "out of GPU memory while training seed=0 n=2" in reason and "--load-in-4bit" in reason
    assert "larger instance" in reason


# --- learning --------------------------------------------------------------------------------------
def _toy_task(folder: Path) -> Path:
    """A pattern a 2-layer random model can pick up with LoRA: the colour word decides the answer."""
    import random

    answer_of = {"red": "apple", "gray": "stone"}
    rng = random.Random(0)

    def record(i: int, colour: str) -> dict:
        noise = " ".join(rng.choice(["big", "old", "new", "small", "blue", "round"]) for _ in range(3))
        return {"id": f"toy-{i}", "text": f"{noise} colour: {colour}", "answer": answer_of[colour]}

    colours = list(answer_of)
    rows = {"train": [record(i, colours[i % 2]) for i in range(64)],
            "eval": [record(1000 + i, colours[i % 2]) for i in range(12)]}
    for role, records in rows.items():
        (folder / f"{role}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "toy.yaml").write_text(
        "name: toy\n"
        "sources:\n"
        "  train: {type: file, uri: train.jsonl, format: jsonl}\n"
        "  eval: {type: file, uri: eval.jsonl, format: jsonl}\n"
        "fields: {id: id, inputs: {text: text}, references: answer}\n"
        "prompt: {instruction: 'Name the thing of this colour.', input_template: '{text}'}\n"
        "generation: {max_new_tokens: 4, stop: ['\\n']}\n"
        "metrics: [exact_match]\n", encoding="utf-8")
    return folder / "toy.yaml"


def test_adapter_learns_a_pattern_the_base_model_gets_wrong(tmp_path):
    from peft import PeftModel

    data_dir = tmp_path / "data"
    prepare(DataSettings(task=str(_toy_task(tmp_path)), sizes=[16], seeds=[0], source="remote"), data_dir)
    paths = job_paths(tmp_path / "ml")
    train(Settings(model="tiny-gpt-neox", epochs=1, batch_size=4, min_steps=300,
                   learning_rate=1e-2, lora_dropout=0.0), paths, data_dir)

    task = load_task_from_data(data_dir)
    entry = manifests.get_model("tiny-gpt-neox")
    base = modeling.load_base(entry, data_dir)  # rebuilt independently, as the infer job does
    held_out = read_eval_set(data_dir)
    train_inputs = {ex["text"] for ex in read_train_set(data_dir, 0, 16)}
    assert not train_inputs & {ex["text"] for ex in held_out}

    def answers(model) -> list[str]:
        out = []
        for ex in held_out:
            ids = base.tokenizer(prompts.model_prompt(task, entry, ex, tokenizer=base.tokenizer), return_tensors="pt")
            generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
            out.append(prompts.postprocess(task, base.tokenizer.decode(generated[0, ids["input_ids"].shape[1]:],
                                                                      skip_special_tokens=True)))
        return out

    before = answers(base.model)
    tuned = PeftModel.from_pretrained(base.model, paths.checkpoints / "adapters" / "seed=0" / "n=16")
    after = answers(tuned)
    gold = [ex["references"][0] for ex in held_out]
    assert sum(b == g for b, g in zip(before, gold)) == 0
    assert sum(a == g for a, g in zip(after, gold)) >= 10  # of 12; always guessing one answer would get 6


def test_several_gpus_relaunch_the_job_under_torchrun_one_process_per_gpu(monkeypatch):
    """SageMaker starts the entrypoint once; with 4 GPUs the job re-runs itself as a 4-process DDP world."""
    import sys

    import torch
    from switchpoint.train.job import distributed_relaunch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cmd = distributed_relaunch(["/usr/local/bin/switchpoint", "train", "train"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
                   "-m", "switchpoint", "train", "train"]
    monkeypatch.setenv("LOCAL_RANK", "0")  # already inside torchrun: run as is
    assert distributed_relaunch(["switchpoint", "train"]) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed_relaunch(["switchpoint", "train"]) is None
