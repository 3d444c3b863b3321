"""The ``hf`` engine: transformers + peft, one base model, adapters attached and switched in turn.

Greedy decoding, left padding, batches sorted longest prompt first (lm-eval's order, so both engines
batch alike and an out-of-memory error shows on the first batch); a finished sequence leaves its
batch at once and freed slots are refilled from the queue (``decode.greedy_decode``), with
``model.generate``'s tokens. A sequence stops once its answer
(leading whitespace skipped) holds a stop string; the test looks only at the newest tokens, so a
step costs the same however long the answer already is.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from switchpoint.core import modeling
from switchpoint.core.prompts import decode_generation
from switchpoint.infer_local.decode import greedy_decode
from switchpoint.infer_local.passes import EngineStats, Generation, Pass, adapter_dir


def length_order(prompt_ids: list[list[int]], prompts: list[str]) -> list[int]:
    """Longest prompt first, ties by text: lm-eval's order."""
    return sorted(range(len(prompts)), key=lambda i: (-len(prompt_ids[i]), prompts[i]))


class StopWatch:
    """Per sequence: has its answer, leading whitespace skipped, completed a stop string?

    transformers' own ``stop_strings`` would stop at a stop string even before the answer starts,
    which ``prompts.postprocess`` deliberately skips; stopping here never changes a prediction.
    Called after every new token, so a newly completed stop string ends in the newest token: only a
    window of the last tokens is decoded (wide enough for the longest stop string even when every
    character takes four byte-level tokens), plus, until the answer starts, its few leading tokens.
    """

    def __init__(self, tokenizer: Any, stops: list[str], entry: dict | None = None):
        self.tokenizer, self.entry = tokenizer, entry or {}
        self.stops = [s for s in stops if s]
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 4
        self.answer_start: dict[int, int] = {}  # sequence -> index of its first non-whitespace token
        self.stopped_at: dict[int, int] = {}  # sequence -> new tokens when its stop string completed
        self.decoded_tokens = 0  # work done, for tests: tokens decoded in all

    def _text(self, ids: list[int]) -> str:
        self.decoded_tokens += len(ids)
        return decode_generation(self.tokenizer, self.entry, ids)  # as predictions are: rinna's <NL> is "\n"

    def update(self, row: int, new_ids: list[int]) -> bool:
        """``new_ids``: every token generated so far for sequence ``row``; True once it should stop."""
        if not self.stops or row in self.stopped_at:
            return row in self.stopped_at
        start = self.answer_start.get(row)
        if start is None:
            if not self._text(new_ids).strip():
                return False  # only whitespace so far: the answer has not started
            start = self.answer_start[row] = next(i for i in range(len(new_ids)) if self._text(new_ids[: i + 1]).strip())
        first = max(start, len(new_ids) - self.window)
        text = self._text(new_ids[first:])
        if first == start:
            text = text.lstrip()  # the window reaches back to where the answer starts
        if any(s in text for s in self.stops):
            self.stopped_at[row] = len(new_ids)
            return True
        return False


def stop_criterion(watch: StopWatch, prompt_len: int):
    import torch
    from transformers import StoppingCriteria

    rows: list[list[int]] = []  # every sequence's new tokens so far, grown by the columns added since the last call
    seen = [prompt_len]

    class StopAfterAnswer(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            columns = input_ids[:, seen[0]:].tolist()  # only the newest tokens leave the device
            seen[0] = input_ids.shape[1]
            if not rows:
                rows.extend([] for _ in columns)
            for row, new in zip(rows, columns):
                row.extend(new)
            done = [watch.update(i, ids) for i, ids in enumerate(rows)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopAfterAnswer()


def generate_batch(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int, stops: list[str],
                   entry: dict | None = None, batch_size: int | None = None,
                   on_forward: Callable[[int], None] | None = None,
                   on_finish: Callable[[int], None] | None = None) -> list[Generation]:
    """Greedy generation from prompt ids (``prompts.encode_prompt``: the card's BOS, never an EOS) in
    ``generate``'s left-padded batches of ``batch_size`` (default: one batch), a finished sequence's
    slot freed at once and refilled from the queue (``decode.greedy_decode``); text decoded as
    ``prompts.decode_generation`` (no special tokens). Latency: the call's time, split evenly."""
    import torch

    if not prompt_ids:
        return []
    start = time.perf_counter()
    watch = StopWatch(tokenizer, stops, entry)
    ends = modeling.stop_token_ids(model, tokenizer)
    with torch.inference_mode():
        out = greedy_decode(model, prompt_ids, batch_size or len(prompt_ids), max_new_tokens, ends,
                            tokenizer.pad_token_id, watch.update, on_forward, on_finish)
    return _generations(tokenizer, entry, prompt_ids, out, ends, watch, start)


def generate_batch_static(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int,
                          stops: list[str], entry: dict | None = None) -> list[Generation]:
    """The same through ``model.generate``, which keeps a finished sequence's slot until its batch ends:
    the reference ``generate_batch`` is tested and benchmarked against."""
    import torch

    start = time.perf_counter()
    enc = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt").to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    watch = StopWatch(tokenizer, stops, entry)
    ends = modeling.stop_token_ids(model, tokenizer)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=ends,
                             stopping_criteria=[stop_criterion(watch, prompt_len)])
    return _generations(tokenizer, entry, prompt_ids, out[:, prompt_len:].tolist(), ends, watch, start)


def _generations(tokenizer: Any, entry: dict | None, prompt_ids: list[list[int]], new_ids: list[list[int]],
                 ends: list[int], watch: StopWatch, start: float) -> list[Generation]:
    latency = (time.perf_counter() - start) / len(prompt_ids)  # the call's time (a whole pass), split evenly
    results = []
    for i, ids in enumerate(new_ids):
        used = next((k + 1 for k, t in enumerate(ids) if t in ends), len(ids))
        used = min(used, watch.stopped_at.get(i, used))
        results.append(Generation(decode_generation(tokenizer, entry or {}, ids, ends), len(prompt_ids[i]), used,
                                  latency))
    return results


def run_hf(base: modeling.BaseModel, passes: list[Pass], adapters_dir: Path, batch_size: int, max_new_tokens: int,
           stops: list[str], stats: EngineStats, progress: Callable) -> dict[int, list[Generation]]:
    """One base model; adapters attached, switched and dropped in turn with peft's multi-adapter API."""
    tokenizer = base.tokenizer
    tokenizer.padding_side = "left"
    base.model.eval()
    state = {"peft": None, "active": None}
    results: dict[int, list[Generation]] = {}
    for index, p in enumerate(passes):
        if p.skipped:
            continue
        model, context = _model_for(p, base, adapters_dir, state, stats)
        start = time.perf_counter()
        order = length_order(p.prompt_ids, p.prompts)
        generations: list[Generation | None] = [None] * len(p.prompts)
        with context, progress(p) as bar:
            ordered = generate_batch(model, tokenizer, [p.prompt_ids[i] for i in order], max_new_tokens, stops,
                                     base.entry, batch_size, on_finish=lambda _: bar.update(1))
        for i, gen in zip(order, ordered):
            generations[i] = gen
        stats.pass_wall_s[index] = time.perf_counter() - start
        results[index] = generations  # type: ignore[assignment]
    return results


def _model_for(p: Pass, base: modeling.BaseModel, adapters_dir: Path, state: dict, stats: EngineStats):
    """(model, context) for a pass: the base (adapters disabled) or the pass's adapter, one in memory."""
    from peft import PeftModel

    peft_model = state["peft"]
    if p.adapter is None:
        if peft_model is None:
            return base.model, nullcontext()
        return peft_model, peft_model.disable_adapter()
    switch_started = time.perf_counter()
    name = f"seed{p.adapter[0]}_n{p.adapter[1]}"
    where = str(adapter_dir(adapters_dir, *p.adapter))
    if peft_model is None:
        peft_model = state["peft"] = PeftModel.from_pretrained(base.model, where, adapter_name=name)
        peft_model.eval()
    else:
        peft_model.load_adapter(where, adapter_name=name)
        peft_model.set_adapter(name)
        peft_model.delete_adapter(state["active"])  # keep one adapter in memory at a time
    state["active"] = name
    stats.adapter_switches += 1
    stats.adapter_switch_s += time.perf_counter() - switch_started
    return peft_model, nullcontext()
