"""train on a GPU's terms: length grouping by default, packing without cross-example attention, and
gradient checkpointing turned on by the memory estimate (the decision checked with given numbers)."""

from __future__ import annotations

import json

import pytest
from switchpoint.core import manifests, modeling
from switchpoint.core.contract import JobError, job_paths
from switchpoint.train import job as train_job
from switchpoint.train import loop, memory, packing
from switchpoint.train.settings import Settings

GIB = 1024 ** 3


def encoded_examples(data_dir, model: str, n: int = 8):
    from switchpoint.core.datafolder import load_task_from_data, read_train_set

    entry = manifests.get_model(model)
    base = modeling.load_base(entry, data_dir)
    task = load_task_from_data(data_dir)
    return base, [loop.encode_example(task, entry, base.tokenizer, ex, 512) for ex in read_train_set(data_dir, 0, n)]


# --- packing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-gpt-neox", "tiny-llama"])
def test_a_packed_row_has_the_loss_of_its_examples_run_one_by_one(jsquad_data, model):
    import torch

    base, encoded = encoded_examples(jsquad_data, model)
    chosen = [encoded[i] for i in (0, 3, 5)]
    assert len({len(e["input_ids"]) for e in chosen}) == 3  # different lengths: a padded batch would pad
    base.model.eval()
    with torch.no_grad():
        packed = float(base.model(**packing.collate_packed(chosen), use_cache=False).loss)
        alone = [float(base.model(**loop.collate([e], base.tokenizer.pad_token_id), use_cache=False).loss)
                 for e in chosen]
    weights = [loop.loss_tokens(e) for e in chosen]
    assert packed == pytest.approx(sum(a * w for a, w in zip(alone, weights)) / sum(weights), rel=1e-5)
    row = packing.collate_packed(chosen)
    assert row["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in chosen))
    starts = [0, len(chosen[0]["input_ids"]), len(chosen[0]["input_ids"]) + len(chosen[1]["input_ids"])]
    assert [int(row["position_ids"][0, s]) for s in starts] == [0, 0, 0]
    assert all(int(row["labels"][0, s]) == -100 for s in starts)  # never predicted from the previous example


@pytest.mark.parametrize("model", ["tiny-gpt-neox", "tiny-llama"])
def test_a_packed_step_has_the_gradient_of_the_padded_step(jsquad_data, model):
    import torch
    from accelerate import Accelerator

    base, encoded = encoded_examples(jsquad_data, model)
    results = []
    for packed in (False, True):
        settings = Settings(model=model, batch_size=6, micro_batch_size=3, lora_r=4, lora_dropout=0.0, packing=packed)
        peft_model, _, _ = loop.lora_model(base, settings, seed=0)
        for name, param in peft_model.named_parameters():  # B starts at zero; make every LoRA weight count
            if param.requires_grad and "lora_B" in name:
                param.data.normal_(0, 0.02)
        loss, seen, slots = loop.train_step(peft_model, Accelerator(cpu=True), encoded, [4, 0, 6, 2, 7, 1], settings,
                                            base.tokenizer.pad_token_id)
        grads = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        peft_model.unload()
        results.append((loss, seen, slots, grads))
    (padded_loss, padded_seen, padded_slots, padded), (packed_loss, packed_seen, packed_slots, packed) = results
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed_seen == padded_seen == packed_slots < padded_slots  # the same tokens, no padding slots
    for name, grad in padded.items():
        assert torch.allclose(packed[name], grad, rtol=1e-3, atol=1e-6), name
    assert any(float(g.abs().max()) > 0 for g in padded.values())


@pytest.mark.parametrize("family", ["GPTNeoXConfig", "LlamaConfig", "Qwen2Config"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_transformers_keeps_packed_boundaries_for_the_study_families(family, attention):
    import torch
    import transformers

    config = getattr(transformers, family)(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    assert model.config._attn_implementation == attention
    assert packing.leak(model, "cpu", 300) < 1e-4


def test_packing_is_refused_on_a_model_whose_attention_crosses_example_boundaries(jsquad_data):
    import torch

    base, _ = encoded_examples(jsquad_data, "tiny-llama")
    vocab = base.model.get_input_embeddings().weight.shape[0]
    assert packing.leak(base.model, "cpu", vocab) < 1e-4  # transformers keeps the boundaries here

    class IgnoresPositions(torch.nn.Module):
        """A model whose code drops position_ids: a packed row is one long sequence to it."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, position_ids=None, use_cache=False):
            return self.inner(input_ids=input_ids, use_cache=use_cache)

    leaky = IgnoresPositions(base.model)
    assert packing.leak(leaky, "cpu", vocab) > 0.5
    with pytest.raises(JobError, match=r"--packing true: model tiny-llama .* lets packed examples attend to each "
                                        r"other .* use --packing false"):
        packing.check_boundaries(leaky, "cpu", vocab, "tiny-llama")


def test_a_packed_training_job_records_no_padding_and_its_resolved_settings(jsquad_data, tmp_path):
    paths = job_paths(tmp_path / "ml")
    train_job.train(Settings(model="tiny-gpt-neox", sizes=[8], seeds=[0], batch_size=4, epochs=1, min_steps=2, lora_r=4,
                             lora_dropout=0.0, cutoff_len=256, threads=1, packing=True), paths, jsquad_data)
    metrics = json.loads((paths.checkpoints / "adapters" / "seed=0" / "n=8" / "train_metrics.json").read_text())
    assert metrics["padding_fraction"] == 0 and metrics["trained_tokens"] > 0
    assert metrics["hyperparameters"]["packing"] is True
    assert metrics["hyperparameters"]["gradient_checkpointing"] is False  # auto, decided: never on the CPU


# --- length grouping -----------------------------------------------------------------------------------
def test_length_grouping_is_the_default_and_cuts_the_padding_of_bundled_jsquad(jsquad_data):
    assert Settings(model="m").group_by_length is True and Settings(model="m").packing is False
    from switchpoint.core.datafolder import load_task_from_data, read_jsonl

    entry = manifests.get_model("tiny-gpt-neox")
    tokenizer = modeling.load_base(entry, jsquad_data).tokenizer
    task = load_task_from_data(jsquad_data)
    pool = read_jsonl(jsquad_data / "pool.jsonl")[:128]
    lengths = [len(loop.encode_example(task, entry, tokenizer, ex, 512)["input_ids"]) for ex in pool]
    steps = 3 * 32  # three epochs of N=128 at batch 4
    plain = loop.padded_fraction(lengths, loop.batch_schedule(128, steps, 4, seed=0), 4, group_by_length=False)
    grouped_schedule = loop.batch_schedule(128, steps, 4, seed=0, lengths=lengths)
    grouped = loop.padded_fraction(lengths, grouped_schedule, 4, group_by_length=True)
    assert plain > 0.15 and grouped < 0.4 * plain  # measured: 26 % -> 8 % at N=256 (bench/bench_train.py)
    assert grouped_schedule == loop.batch_schedule(128, steps, 4, seed=0, lengths=lengths)  # seeded
    assert loop.padded_fraction(lengths, grouped_schedule, 4, group_by_length=True, packing=True) == 0.0


def test_length_grouping_gives_a_small_n_new_batches_every_epoch():
    # N=16 (one group per epoch) with lengths spread like JSQuAD's prompts (about 150-260 tokens)
    lengths = [212, 187, 240, 163, 229, 198, 251, 176, 205, 233, 158, 219, 192, 247, 171, 226]
    schedule = loop.batch_schedule(16, 3 * 4, 4, seed=0, lengths=lengths)
    epochs = [{tuple(sorted(b)) for b in schedule[e * 4:(e + 1) * 4]} for e in range(3)]
    assert all(sorted(i for b in e for i in b) == list(range(16)) for e in epochs)  # each example once per epoch
    assert len(epochs[0] & epochs[1]) + len(epochs[0] & epochs[2]) <= 4  # sorted alone repeats all 8
    sorted_only = loop.padded_fraction(lengths, schedule, 4, group_by_length=True)
    assert sorted_only < loop.padded_fraction(lengths, loop.batch_schedule(16, 12, 4, seed=0), 4, group_by_length=False)


# --- gradient checkpointing: auto --------------------------------------------------------------------
def test_the_memory_estimate_adds_weights_lora_states_and_activations():
    shape = memory.Shape(weight_bytes=1000, hidden=10, intermediate=20, layers=2, heads=2, vocab=100)
    found = memory.estimate(shape, trainable=5, tokens=3, seq_len=4, activation_bytes=2)
    # per layer and token 10*10 + 3*20 = 160 values of 2 bytes; logits 14 bytes per vocabulary entry
    assert (found.weights, found.lora_states) == (1000, 5 * 16)
    assert found.activations == 3 * (2 * 160 * 2 + 1400)
    assert found.activations_checkpointed == 3 * (2 * 10 * 2 + 160 * 2 + 1400)  # layer inputs + one layer
    eager = memory.estimate(shape, trainable=5, tokens=3, seq_len=4, activation_bytes=2, eager_attention=True)
    assert eager.activations == 3 * (2 * (160 + 3 * 2 * 4) * 2 + 1400)  # + three copies of the scores per head


def test_auto_checkpointing_turns_on_only_when_the_estimate_exceeds_the_gpu():
    # A 7B Llama in bf16 (13.5 GB) with LoRA r=16 on q/k/v/o, micro-batch 4 x 512 tokens.
    llama7b = memory.Shape(weight_bytes=13_476_839_424, hidden=4096, intermediate=11008, layers=32, heads=32,
                           vocab=32000)
    lora = 16 * (4096 + 4096) * 4 * 32
    micro4 = memory.estimate(llama7b, lora, tokens=4 * 512, seq_len=512, activation_bytes=2)
    micro1 = memory.estimate(llama7b, lora, tokens=1 * 512, seq_len=512, activation_bytes=2)
    assert 22 * GIB < micro4.total < 24 * GIB and micro1.total < 17 * GIB
    on, reason = memory.decide("auto", micro4, 24 * GIB, "4 x 512 tokens")  # an A10G (ml.g5)
    assert on and reason.startswith("gradient checkpointing on (auto: estimated") and "exceeds 90%" in reason
    assert micro4.total_checkpointed < 15 * GIB  # the weights and 1.3 GiB of activations
    assert memory.decide("auto", micro1, 24 * GIB, "1 x 512 tokens")[0] is False
    assert memory.decide("auto", micro4, 80 * GIB, "4 x 512 tokens")[0] is False  # an H100
    on_cpu = memory.decide("auto", None, None, "4 x 512 tokens")
    assert on_cpu == (False, "gradient checkpointing off (auto: training on the CPU)")
    assert memory.decide(True, None, None, "")[0] is True and memory.decide(False, micro4, GIB, "")[0] is False


def test_the_lora_count_before_injection_is_what_peft_trains(jsquad_data):
    base, _ = encoded_examples(jsquad_data, "tiny-llama")
    settings = Settings(model="tiny-llama", lora_r=8)
    expected = memory.lora_params(base.model, list(base.entry["lora_target_modules"]), 8)
    shape = memory.model_shape(base.model)
    assert shape.weight_bytes >= 4 * sum(p.numel() for p in base.model.parameters())  # fp32 on the CPU
    peft_model, trainable, _ = loop.lora_model(base, settings, seed=0)
    peft_model.unload()
    assert expected == trainable > 0
    assert train_job.checkpointing(settings, base, _CPU(), fsdp=False) is False


class _CPU:
    """The accelerator attributes ``checkpointing`` reads, on a CPU."""

    device, num_processes, mixed_precision, is_local_main_process = "cpu", 1, "no", True
