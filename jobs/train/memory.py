"""Gradient checkpointing ``auto``: on only when the training memory estimate does not fit the GPU.

Checkpointing recomputes every layer's forward during the backward pass (about a third more
compute), so it is worth paying only when the activations would not fit. The estimate, per process:

    weights         the loaded model's parameter and buffer storage: params x bytes per param of the
                    load dtype (bf16 2, fp32 4, 8-bit 1, 4-bit about 0.5), divided by the processes
                    under FSDP (each holds a shard)
    LoRA states     trainable params x 16 bytes (fp32 weight, gradient, AdamW's two moments)
    activations     tokens per micro-batch x per-token bytes: every layer keeps about
                    (10 x hidden + 3 x intermediate) values per token for the backward pass
                    (+ 3 x heads x sequence length for the eager attention: its fp32 softmax and
                    the bf16 copy), and the logits about 14 bytes per vocabulary entry per token (the
                    bf16 logits kept, the loss's fp32 upcast and log-softmax, their gradients; a
                    floor: checkpointing cannot save it);
                    with checkpointing only each layer's input (hidden) is kept, plus one layer's
                    full activations during its recomputation
    tokens          micro-batch x cutoff-len (the worst case: every example at the cutoff); a packed
                    row is that long too, so its sequence length is the whole row

against 90 % of the device's memory (CUDA context, allocator fragmentation, temporary buffers).
It is a deliberately simple model (Korthikanti et al. 2022's per-layer count, generalised to gated
MLPs); on CPU checkpointing is never needed (host memory, and no device to run out of).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024 ** 3
USABLE_FRACTION = 0.9
LORA_STATE_BYTES = 16
LOGIT_BYTES = 14  # per vocabulary entry and token: bf16 logits 2 + fp32 upcast 4 + log-softmax 4 + gradients 4
EAGER_SCORE_COPIES = 3  # eager attention keeps its scores, their fp32 softmax and the bf16 copy


@dataclass(frozen=True)
class Shape:
    """What the estimate needs to know about a model."""

    weight_bytes: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int


@dataclass(frozen=True)
class Estimate:
    weights: float
    lora_states: float
    activations: float
    activations_checkpointed: float

    @property
    def total(self) -> float:
        return self.weights + self.lora_states + self.activations

    @property
    def total_checkpointed(self) -> float:
        return self.weights + self.lora_states + self.activations_checkpointed


def estimate(shape: Shape, trainable: int, tokens: int, seq_len: int, activation_bytes: int,
             eager_attention: bool = False) -> Estimate:
    """Bytes needed to train, without and with gradient checkpointing (see the module docstring)."""
    per_layer = 10 * shape.hidden + 3 * shape.intermediate + (
        EAGER_SCORE_COPIES * shape.heads * seq_len if eager_attention else 0)
    logits = shape.vocab * LOGIT_BYTES
    full = tokens * (shape.layers * per_layer * activation_bytes + logits)
    checkpointed = tokens * (shape.layers * shape.hidden * activation_bytes + per_layer * activation_bytes + logits)
    return Estimate(weights=shape.weight_bytes, lora_states=trainable * LORA_STATE_BYTES,
                    activations=full, activations_checkpointed=checkpointed)


def decide(setting: bool | str, found: Estimate | None, device_bytes: int | None, tokens_text: str) -> tuple[bool, str]:
    """(checkpointing on?, the reason, one line). ``found``/``device_bytes`` are None on CPU."""
    if setting is not True and setting is not False and setting != "auto":
        raise ValueError(f"gradient_checkpointing={setting!r}")
    if isinstance(setting, bool):
        return setting, f"gradient checkpointing {'on' if setting else 'off'} (--gradient-checkpointing {str(setting).lower()})"
    if found is None or device_bytes is None:
        return False, "gradient checkpointing off (auto: training on the CPU)"
    budget = USABLE_FRACTION * device_bytes
    parts = (f"weights {found.weights / GIB:.1f} + LoRA states {found.lora_states / GIB:.2f} + activations "
             f"{found.activations / GIB:.1f} GiB for {tokens_text}")
    if found.total <= budget:
        return False, (f"gradient checkpointing off (auto: estimated {found.total / GIB:.1f} GiB = {parts} fits "
                       f"{USABLE_FRACTION:.0%} of the device's {device_bytes / GIB:.1f} GiB)")
    return True, (f"gradient checkpointing on (auto: estimated {found.total / GIB:.1f} GiB = {parts} exceeds "
                  f"{USABLE_FRACTION:.0%} of the device's {device_bytes / GIB:.1f} GiB; with checkpointing "
                  f"{found.total_checkpointed / GIB:.1f} GiB)")


def model_shape(model: Any, shards: int = 1) -> Shape:
    """The estimate's view of a loaded transformers model (config names differ between families);
    ``shards``: processes the weights are split over (FSDP), else 1."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    stored = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    return Shape(weight_bytes=stored // shards, hidden=hidden, intermediate=intermediate,
                 layers=int(config.num_hidden_layers), heads=int(config.num_attention_heads),
                 vocab=int(config.vocab_size))


def lora_params(model: Any, targets: list[str], rank: int) -> int:
    """Trainable LoRA parameters before injection: r x (inputs + outputs) for each targeted linear layer."""
    count = 0
    for name, module in model.named_modules():
        # nn.Linear and bitsandbytes' 4/8-bit layers both carry their logical sizes (a 4-bit weight is packed)
        inputs, outputs = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if name.rsplit(".", 1)[-1] in targets and inputs and outputs:
            count += rank * (int(inputs) + int(outputs))
    return count


def device_memory(device: str) -> int | None:
    """Total memory of a CUDA device in bytes; None on CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
