"""train: settings from one model (ranges, --help, README keys), bad inputs fail before the base
loads, and gradient accumulation gives the update of one big batch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import job_paths, write_hyperparameters
from switchpoint.train import job as train_job
from switchpoint.train import loop
from switchpoint.train.settings import Settings

README = Path(__file__).resolve().parent.parent / "images" / "train" / "README.md"


def run_cli(args: list[str], root: Path):
    from switchpoint.cli import main

    loads = modeling.BASE_MODEL_LOADS
    result = CliRunner().invoke(main, ["train", "--ml-root", str(root), *args])
    return result, modeling.BASE_MODEL_LOADS - loads


def test_readme_lists_exactly_the_settings_and_help_shows_the_model_defaults():
    table = README.read_text(encoding="utf-8").split("## Settings", 1)[1].split("\n\n", 2)[1]
    keys = {k.replace("-", "_") for row in table.splitlines()[2:] for k in re.findall(r"`([a-z0-9-]+)`", row.split("|")[1])}
    assert keys == set(Settings.model_fields)
    from switchpoint.cli import main

    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    for name in ("epochs", "batch_size", "learning_rate", "min_steps", "max_grad_norm", "lora_r"):
        option = "--" + name.replace("_", "-")
        assert re.search(re.escape(option) + r" \S+ .*?\[default: " + re.escape(str(Settings.model_fields[name].default)),
                         help_text), option


@pytest.mark.parametrize("args, hyper, expected", [
    (["--seeds", "-1"], {}, "--seeds='-1' is invalid"),
    (["--learning-rate", "inf"], {}, "--learning-rate='inf' is invalid: Input should be a finite number"),
    (["--micro-batch-size", "0"], {}, "--micro-batch-size='0' is invalid"),
    (["--max-grad-norm", "-1"], {}, "--max-grad-norm='-1' is invalid"),
    ([], {"epochs": "1.5"}, "'epochs'='1.5' is invalid"),
    ([], {"sizes": "2,-4"}, "'sizes'='2,-4' is invalid"),
    ([], {"sweep": "smoke"}, "unknown setting 'sweep'"),
    (["--load-in-4bit", "true", "--load-in-8bit", "true"], {}, "--load-in-4bit and --load-in-8bit are both true"),
    (["--sizes", "16"], {}, "no training set for seed=0, N=16"),
])
def test_bad_settings_fail_in_one_line_before_any_model_loads(jsquad_data, tmp_path, args, hyper, expected):
    paths = job_paths(tmp_path / "ml")
    shutil.copytree(jsquad_data, paths.channel("data"))
    write_hyperparameters(paths, {"model": "tiny-gpt-neox", **hyper})
    result, loads = run_cli(args, paths.root)
    assert result.exit_code == 1
    reason = paths.failure.read_text()
    assert expected in reason and reason.count("\n") == 1, reason
    assert loads == 0 and not (paths.checkpoints / "adapters").exists() and not paths.model.exists()


def test_quantised_loading_without_a_gpu_fails_before_the_base_loads(jsquad_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    (tmp_path / "ml").mkdir()
    result, loads = run_cli(["--model", "tiny-gpt-neox", "--data", str(jsquad_data), "--load-in-4bit", "true"],
                            tmp_path / "ml")
    assert result.exit_code == 1 and loads == 0
    assert "--load-in-4bit true needs a CUDA GPU" in (tmp_path / "ml" / "output" / "failure").read_text()


def test_lora_targets_missing_from_the_model_fail_before_the_base_loads(jsquad_data, tmp_path, monkeypatch):
    entry = {**manifests.get_model("tiny-llama"), "lora_target_modules": ["q_proj", "query_key_value"]}
    monkeypatch.setattr(train_job, "model_entry", lambda data_dir, name: entry)
    (tmp_path / "ml").mkdir()
    result, loads = run_cli(["--model", "tiny-llama", "--data", str(jsquad_data), "--sizes", "2"], tmp_path / "ml")
    assert result.exit_code == 1 and loads == 0
    reason = (tmp_path / "ml" / "output" / "failure").read_text()
    assert "lora_target_modules" in reason and "query_key_value not in model" in reason
    assert "q_proj," not in reason.split("not in model")[0]  # q_proj exists in a Llama
    assert not (tmp_path / "ml" / "checkpoints").exists()


def test_a_plain_cli_run_with_only_model_and_data_uses_the_job_defaults(jsquad_data, tmp_path):
    settings = Settings(model="tiny-gpt-neox")
    assert (settings.epochs, settings.batch_size, settings.min_steps, settings.max_grad_norm) == (3, 4, 20, 1.0)
    assert settings.micro_batch == 4 and Settings(model="m", batch_size=32, micro_batch_size=4).micro_batch == 4
    assert train_job.resolve(settings, {"context_length": 128}).cutoff_len == 128  # capped at the context


# --- gradient accumulation ---------------------------------------------------------------------------
def step_gradients(base, encoded, indices, micro: int) -> dict:
    """Gradients of one step over ``indices`` with micro-batches of ``micro``, on a fresh seeded adapter."""
    from accelerate import Accelerator

    settings = Settings(model=base.entry["name"], batch_size=len(indices), micro_batch_size=micro, lora_r=4,
                        lora_dropout=0.0)
    peft_model, _, _ = loop.lora_model(base, settings, seed=0)
    for name, param in peft_model.named_parameters():  # B starts at zero; make every LoRA weight count
        if param.requires_grad and "lora_B" in name:
            param.data.normal_(0, 0.02)
    accelerator = Accelerator(cpu=True)
    loss, _, _ = loop.train_step(peft_model, accelerator, encoded, indices, settings, base.tokenizer.pad_token_id)
    grads = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.unload()
    return {"loss": loss, **grads}


def test_micro_batches_accumulate_to_the_gradient_of_one_big_batch(jsquad_data):
    import torch
    from switchpoint.core.datafolder import load_task_from_data, read_train_set

    task = load_task_from_data(jsquad_data)
    entry = manifests.get_model("tiny-llama")
    base = modeling.load_base(entry, jsquad_data)
    examples = read_train_set(jsquad_data, 0, 8)
    encoded = [loop.encode_example(task, entry, base.tokenizer, ex, 512) for ex in examples]
    assert len({loop.loss_tokens(e) for e in encoded}) > 1  # answers of different lengths: weighting matters
    indices = [3, 0, 5, 7, 1]
    whole = step_gradients(base, encoded, indices, micro=5)
    for micro in (1, 2):
        parts = step_gradients(base, encoded, indices, micro=micro)
        assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-5)
        for name, grad in whole.items():
            if name != "loss":
                assert torch.allclose(parts[name], grad, rtol=1e-4, atol=1e-7), (micro, name)
    assert any(float(g.abs().max()) > 0 for n, g in whole.items() if n != "loss")


def test_group_by_length_sees_every_example_once_per_epoch_with_less_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in range(200)]
    plain = loop.batch_schedule(200, 150, 4, seed=0)
    grouped = loop.batch_schedule(200, 150, 4, seed=0, lengths=lengths)
    for schedule in (plain, grouped):
        assert [len(b) for b in schedule] == [4] * 150
        assert sorted(i for b in schedule[:50] for i in b) == list(range(200))  # one epoch = 50 batches
    assert grouped == loop.batch_schedule(200, 150, 4, seed=0, lengths=lengths)  # seeded

    def padding(schedule):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in schedule)

    assert padding(grouped) < 0.3 * padding(plain)
    assert loop.micro_batches([5, 1, 7, 2], 0, 1, 2, lengths) == [sorted([5, 1, 7, 2], key=lambda i: -lengths[i])[:2],
                                                                 sorted([5, 1, 7, 2], key=lambda i: -lengths[i])[2:]]


def test_training_with_micro_batches_and_grouping_records_its_padding(jsquad_data, tmp_path):
    import json

    import torch

    paths = job_paths(tmp_path / "ml")
    fast = dict(epochs=1, min_steps=2, lora_r=4, lora_dropout=0.0, cutoff_len=256, threads=1)
    before = torch.get_num_threads()
    try:
        train_job.train(Settings(model="tiny-gpt-neox", sizes=[8], seeds=[0], batch_size=4, micro_batch_size=2,
                                 group_by_length=True, **fast), paths, jsquad_data)
        assert torch.get_num_threads() == 1  # the option, not the host's core count
    finally:
        torch.set_num_threads(before)
    metrics = json.loads((paths.checkpoints / "adapters" / "seed=0" / "n=8" / "train_metrics.json").read_text())
    assert (metrics["batch_size"], metrics["micro_batch_size"], metrics["optimizer_steps"]) == (4, 2, 2)
    assert 0 <= metrics["padding_fraction"] < 0.5 and metrics["hyperparameters"]["group_by_length"] is True
    assert "threads" not in metrics["hyperparameters"]


def test_a_seed_the_data_folder_lacks_is_refused_not_skipped(jsquad_data):
    from switchpoint.core.contract import JobError
    from switchpoint.core.settings import load_settings
    from switchpoint.train.job import plan
    from switchpoint.train.settings import Settings

    settings = load_settings(Settings, ("test", {"model": "tiny-gpt-neox", "seeds": "0,5", "sizes": "2"}))
    with pytest.raises(JobError, match=r"--seeds 5: not prepared in the data folder .* \(it has 0, 1\)"):
        plan(settings, jsquad_data)
