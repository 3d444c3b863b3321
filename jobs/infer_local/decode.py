"""Greedy decoding that frees finished sequences: the hf engine's own loop over a ``DynamicCache``.

``model.generate`` batches statically: a sequence that has met its EOS or stop string keeps its row
(fed padding) until the last one of its batch ends, so a batch costs its longest answer times its
size. Here a finished row leaves the input ids, attention mask, position ids and KV cache after the
step that finished it, and each later step runs only the rows still generating.

Everything else is ``generate``'s greedy search, so the tokens are the same: position ids from the
left-padded mask, the mask dropped when no row is padded, ``logits_to_keep=1``, the logits
processors the model's own generation config asks for (Qwen2.5's repetition penalty), argmax,
and the same stop rules. The rows come back as ``generate`` returns them: finished rows filled with
the pad id up to the batch's last step. With a peft model the call goes, as ``generate``'s does, to
the transformers model holding the injected LoRA layers (``disable_adapter`` still applies).
"""

from __future__ import annotations

from typing import Any, Callable

from switchpoint.core.contract import JobError

# Logits processors that look at one row at a time (no per-batch state), so dropping rows keeps them exact.
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
    if unsupported:
        raise JobError(f"the model's generation config asks for {', '.join(unsupported)}, which the hf engine's "
                       "decode loop cannot apply per row; remove it from generation_config.json")
    return processors


def greedy_decode(model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, ends: list[int], pad_id: int,
                  should_stop: Callable[[int, list[int]], bool], on_forward: Callable[[int], None] | None = None
                  ) -> list[list[int]]:
    """Greedy new tokens for a left-padded batch, finished rows dropped after each step.

    ``should_stop(row, new_ids)`` is asked after every token of a still-running row (its index in
    this batch, every token generated so far); a row also ends on a token in ``ends`` or after
    ``max_new_tokens``. ``on_forward(rows)`` sees each forward pass's batch size (tests count them).
    Returns each row's new tokens, finished rows padded with ``pad_id`` to the longest (as ``generate``).
    """
    import torch
    from transformers import DynamicCache

    lm = transformers_model(model)
    processors = greedy_processors(lm, input_ids, ends, pad_id, max_new_tokens)
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    mask = None if bool((attention_mask == 1).all()) else attention_mask  # generate drops an all-ones mask
    cache = DynamicCache(config=lm.config.get_text_config(decoder=True))
    extra = {"logits_to_keep": 1} if lm._supports_logits_to_keep() else {}
    rows = list(range(input_ids.shape[0]))  # batch row of each running sequence
    sequences, step_ids = input_ids, input_ids
    new: list[list[int]] = [[] for _ in rows]
    end_ids = torch.tensor(ends, device=input_ids.device)
    for step in range(max_new_tokens):
        if on_forward:
            on_forward(len(rows))
        out = lm(input_ids=step_ids, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True,
                 return_dict=True, **extra)
        logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)
        tokens = torch.argmax(processors(sequences, logits), dim=-1)
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        ended = torch.isin(tokens, end_ids).tolist()
        keep = []
        for k, (row, token) in enumerate(zip(rows, tokens.tolist())):
            new[row].append(token)
            stopped = should_stop(row, new[row])  # asked even at an end token, as generate's criteria are
            if not (ended[k] or stopped or step + 1 == max_new_tokens):
                keep.append(k)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=input_ids.device)
            cache.batch_select_indices(index)
            sequences, tokens, position_ids = sequences[index], tokens[index], position_ids[index]
            mask = None if mask is None else mask[index]
            rows = [rows[k] for k in keep]
        step_ids = tokens[:, None]
        position_ids = position_ids[:, -1:] + 1
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        del out
    width = max(len(ids) for ids in new)
    return [ids + [pad_id] * (width - len(ids)) for ids in new]
