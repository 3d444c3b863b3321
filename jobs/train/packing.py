"""Packing: the examples of one micro-batch concatenated into one row, with no padding at all.

Attention must not cross from one example into the next. transformers (5.x) supports this through
``position_ids`` alone, the format of its ``DataCollatorWithFlattening``: with no 2-D attention
mask, ``masking_utils.create_causal_mask`` detects where the positions restart
(``find_packed_sequence_indices``) and builds a block-diagonal causal mask for the sdpa, eager and
flex paths; the flash-attention paths turn the same restarts into ``cu_seqlens``. A model whose
code does not pass ``position_ids`` to that mask (remote code, older architectures) would silently
let examples attend to each other, so ``check_boundaries`` tests the loaded model itself before any
training and the job refuses packing where the boundaries leak.

Packing is detected only without a KV cache (training): every packed forward passes
``use_cache=False``; with a cache the positions are read as one sequence.

Loss: labels as in a padded batch (-100 on the prompt), and the first label of every example is
-100 too, so no token is ever predicted from the previous example's last token.
"""

from __future__ import annotations

from typing import Any

from switchpoint.core.contract import JobError

# A leaking model scores ~1 (measured: 1.00 on GPT-NeoX and Llama fed one long sequence), a sound one
# ~1e-7 in fp32 on the CPU. bf16 on a GPU adds rounding noise (not yet measured there): the limit
# leaves it a wide margin while any real leak stays far above it.
LEAK_LIMIT = 0.25


def collate_packed(encoded: list[dict]) -> dict[str, Any]:
    """One row holding every example of ``encoded``: input_ids, position_ids restarting at 0 for each
    example, labels (-100 on each example's first token) and no attention mask (none is needed)."""
    import torch

    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for e in encoded:
        ids.extend(e["input_ids"])
        positions.extend(range(len(e["input_ids"])))
        labels.extend([-100, *e["labels"][1:]])
    return {"input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long)}


def leak(model: Any, device: str, vocab_size: int) -> float:
    """How much the second of two packed sequences' logits move when it is packed behind the first,
    relative to how much they move when it truly follows the first (plain concatenation): ~0 when
    the boundary holds, ~1 when attention crosses it. Run without gradients, in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(2, vocab_size, (1, length), generator=generator) for length in (12, 9))
    joined = torch.cat([first, second], dim=1).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=second.to(device), use_cache=False).logits.float()[0]
            positions = torch.cat([torch.arange(12), torch.arange(9)]).unsqueeze(0).to(device)
            packed = model(input_ids=joined, position_ids=positions, use_cache=False).logits.float()[0, 12:]
            following = model(input_ids=joined, use_cache=False).logits.float()[0, 12:]
    finally:
        model.train(was_training)
    moved = float((following - alone).abs().max())
    return float((packed - alone).abs().max()) / moved if moved > 0 else 0.0


def check_boundaries(model: Any, device: str, vocab_size: int, name: str) -> None:
    """Refuse packing on a model whose attention crosses the packed examples' boundaries."""
    ratio = leak(model, device, vocab_size)
    if ratio > LEAK_LIMIT:
        implementation = getattr(model.config, "_attn_implementation", "?")
        raise JobError(f"--packing true: model {name} ({type(model).__name__}, attention {implementation}) lets packed "
                       f"examples attend to each other (logits moved {ratio:.0%} as much as for a true prefix): its "
                       "code does not keep position_ids boundaries; use --packing false (padding, --group-by-length)")
