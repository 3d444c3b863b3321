"""Greedy decoding that frees finished sequences: the hf engine's own loop over a ``DynamicCache``.

``model.generate`` batches statically: a sequence that has met its EOS or stop string keeps its row
(fed padding) until the last one of its batch ends, so a batch costs its longest answer times its
size. Here a finished row leaves the KV cache, mask and positions after the step that finished it,
and once half the slots are free the next prompts of the queue are prefilled and join the running
rows (continuous batching), so a pass costs about its answers' total length, not each batch's longest.

Everything else is ``generate``'s greedy search, so the tokens are the same: position ids from the
left-padded mask, a prefill's mask dropped when none of its rows is padded, ``logits_to_keep=1``, the
logits processors the model's own generation config asks for (Qwen2.5's repetition penalty; each row
seen as ``generate`` would see it in its batch, its left padding ignored by the penalty as there), argmax, the same stop rules; and each row comes back
as ``generate`` returns it (padded to its batch's longest answer). Rows joining with other padding is
exact in arithmetic (padding is masked) and gave identical tokens on CPU in every test; on a GPU,
bf16 kernels may round a row differently in another batch shape, as they do across ``generate``'s
batch sizes. With a peft model the call goes, as ``generate``'s does, to the transformers model
holding the injected LoRA layers (``disable_adapter`` still applies). transformers' own helpers
build the processors (private names, pinned version: the parity tests catch a change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchpoint.core.contract import JobError

# Logits processors that look at one row at a time, so dropping rows keeps them exact (the repetition
# penalty's one per-batch value, each row's padding, is set per row in ``greedy_decode``).
ROW_WISE_PROCESSORS = {
    "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
    "SequenceBiasLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor", "ForcedBOSTokenLogitsProcessor",
    "ForcedEOSTokenLogitsProcessor", "ExponentialDecayLengthPenalty", "InfNanRemoveLogitsProcessor",
}


def transformers_model(model: Any) -> Any:
    """The model ``generate`` runs: a peft model's base (its LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def greedy_processors(lm: Any, input_ids: Any, ends: list[int], pad_id: int, max_new_tokens: int) -> Any:
    """The logits processors ``generate(do_sample=False, num_beams=1)`` would build for this model.

    Built by ``generate``'s own helpers, so a generation config's greedy-relevant settings apply
    exactly as before; one that keeps per-batch state would not survive dropped rows and is refused.
    """
    config, _ = lm._prepare_generation_config(None, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                              pad_token_id=pad_id, eos_token_id=ends)
    lm._prepare_special_tokens(config, True, device=input_ids.device, batch_size=input_ids.shape[0])
    config.max_length = max_new_tokens + input_ids.shape[1]
    processors = lm._get_logits_processor(config, input_ids_seq_length=input_ids.shape[1],
                                          encoder_input_ids=input_ids, device=input_ids.device, model_kwargs={})
    unsupported = [type(p).__name__ for p in processors if type(p).__name__ not in ROW_WISE_PROCESSORS]
    cache = getattr(config, "cache_implementation", None)
    if cache not in (None, "dynamic"):  # a quantized or offloaded cache would change (or move) the logits
        unsupported.append(f"cache_implementation={cache}")
    if unsupported:
        raise JobError(f"the model's generation config asks for {', '.join(unsupported)}, which the hf engine's "
                       "decode loop cannot apply per row; remove it from generation_config.json")
    return processors


class Pool:
    """The rows decoding together: one KV cache (left-padded to a common width), its 2D mask, each
    row's last position. Rows prefilled apart join it padded on the left (masked, so exact); a row
    that finishes leaves it, and columns no remaining row attends to are cut off."""

    def __init__(self, lm: Any):
        self.lm, self.rows, self.cache, self.mask, self.positions = lm, [], None, None, None
        self.extra = {"logits_to_keep": 1} if lm._supports_logits_to_keep() else {}
        self.mergeable = True  # full-attention layers only; a sliding-window cache is never padded or cut

    def open(self, batch_size: int) -> int:
        """How many queued prompts may join now: none until half the slots are free (a prefill per
        step would cost more than it saves); with a sliding-window cache, only into an empty pool."""
        if not self.rows or (self.mergeable and len(self.rows) <= batch_size // 2):
            return batch_size - len(self.rows)
        return 0

    def prefill(self, prompts: list[list[int]], rows: list[int], pad_id: int) -> Any:
        """Add these prompts' rows (one left-padded forward, as ``generate`` prefills); their logits."""
        import torch
        from transformers import DynamicCache

        width, device = max(len(p) for p in prompts), self.lm.device
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = DynamicCache(config=self.lm.config.get_text_config(decoder=True))
        out = self.lm(input_ids=ids, attention_mask=None if bool(mask.all()) else mask, position_ids=positions,
                      cache=cache, use_cache=True, return_dict=True, **self.extra)
        self.mergeable = all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)
        self._join(cache, mask, positions[:, -1:], rows)
        return out.logits[:, -1].to(copy=True, dtype=torch.float32)

    def _join(self, cache: Any, mask: Any, positions: Any, rows: list[int]) -> None:
        import torch
        from torch.nn.functional import pad

        self.rows = self.rows + rows
        if self.cache is None:
            self.cache, self.mask, self.positions = cache, mask, positions
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(theirs, name)
                setattr(mine, name, torch.cat([pad(a, (0, 0, width - a.shape[-2], 0)),
                                               pad(b, (0, 0, width - b.shape[-2], 0))]))
        self.mask = torch.cat([pad(self.mask, (width - self.mask.shape[1], 0)), pad(mask, (width - mask.shape[1], 0))])
        self.positions = torch.cat([self.positions, positions])

    def keep(self, keep: list[int]) -> None:
        """Only these rows (indices into ``rows``) go on; leading columns all of them mask are dropped."""
        import torch

        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[k] for k in keep]
        if not keep:
            self.cache = self.mask = self.positions = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        first = int(self.mask.any(0).nonzero()[0]) if self.mergeable else 0
        if first:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
            self.mask = self.mask[:, first:]

    def step(self, tokens: Any) -> Any:
        """One token for every row; the next logits."""
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
        self.positions = self.positions + 1
        out = self.lm(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.positions,
                      cache=self.cache, use_cache=True, return_dict=True, **self.extra)
        return out.logits[:, -1].to(copy=True, dtype=torch.float32)


class Picker:
    """The next token of each running row: argmax, after the row's logits processors when the model's
    generation config asks for any (each row seen as in its ``generate`` batch)."""

    def __init__(self, rowwise: list[Any], prompts: list[list[int]], widths: list[int], batch_size: int,
                 pad_id: int) -> None:
        self.rowwise, self.prompts, self.widths = rowwise, prompts, widths
        self.batch_size, self.pad_id = batch_size, pad_id

    def pick(self, logits: Any, rows: list[int], new: list[list[int]]) -> Any:
        import torch

        if not any(self.rowwise):
            return torch.argmax(logits, dim=-1)
        scores = []
        for k, i in enumerate(rows):
            b = i // self.batch_size
            padding = self.widths[b] - len(self.prompts[i])
            for processor in self.rowwise[b]:
                # generate tells the repetition penalty each row's left padding (prompt_ignore_length
                # from the attention mask), so pad ids are never penalised: the same, one row at a time.
                if hasattr(processor, "prompt_ignore_length"):
                    processor.prompt_ignore_length = padding
            as_generate = [self.pad_id] * padding + self.prompts[i] + new[i]
            scores.append(self.rowwise[b](torch.tensor([as_generate], device=logits.device), logits[k:k + 1]))
        return torch.argmax(torch.cat(scores), dim=-1)


def greedy_decode(model: Any, prompts: list[list[int]], batch_size: int, max_new_tokens: int, ends: list[int],
                  pad_id: int, should_stop: Callable[[int, list[int]], bool],
                  on_forward: Callable[[int], None] | None = None,
                  on_finish: Callable[[int], None] | None = None) -> list[list[int]]:
    """Greedy new tokens for each prompt, at most ``batch_size`` decoding at once, finished rows dropped
    after each step and freed slots refilled from the queue once half the batch is free (``Pool.open``).

    The prompts come in ``generate``'s batches (consecutive groups of ``batch_size``); each row's
    logits processors see the row as ``generate`` would (its batch's left padding, prompt, answer).
    ``should_stop(i, new_ids)`` is asked after every token of prompt ``i``; a row also ends on a
    token in ``ends`` or after ``max_new_tokens``. ``on_forward(rows)`` sees each forward's batch size,
    ``on_finish(i)`` each prompt as it ends.
    Returns each prompt's new tokens padded with ``pad_id`` to its batch's longest (as ``generate``).
    """
    import torch

    if not prompts:
        return []
    lm = transformers_model(model)
    batches = [list(range(b, min(b + batch_size, len(prompts)))) for b in range(0, len(prompts), batch_size)]
    widths = [max(len(prompts[i]) for i in batch) for batch in batches]
    picker = Picker([greedy_processors(lm, torch.full((len(batch), width), pad_id, device=lm.device), ends, pad_id,
                                       max_new_tokens) for batch, width in zip(batches, widths)],
                    prompts, widths, batch_size, pad_id)

    new: list[list[int]] = [[] for _ in prompts]
    pool, queue, logits = Pool(lm), list(range(len(prompts))), None
    while queue or pool.rows:
        if queue and pool.open(batch_size):
            take, queue = queue[:pool.open(batch_size)], queue[pool.open(batch_size):]
            if on_forward:
                on_forward(len(take))
            fresh = pool.prefill([prompts[i] for i in take], take, pad_id)
            logits = fresh if logits is None else torch.cat([logits, fresh])
        tokens = picker.pick(logits, pool.rows, new)
        keep = []
        for k, (i, token) in enumerate(zip(pool.rows, tokens.tolist())):
            new[i].append(token)
            stopped = should_stop(i, new[i])  # asked even at an end token, as generate's criteria are
            if not (token in ends or stopped or len(new[i]) >= max_new_tokens):
                keep.append(k)
            elif on_finish:
                on_finish(i)
        pool.keep(keep)
        logits = None
        if pool.rows:
            if on_forward:
                on_forward(len(pool.rows))
            logits = pool.step(tokens[torch.tensor(keep, device=tokens.device)])
    longest = [max(len(new[i]) for i in batch) for batch in batches]
    return [ids + [pad_id] * (longest[i // batch_size] - len(ids)) for i, ids in enumerate(new)]
