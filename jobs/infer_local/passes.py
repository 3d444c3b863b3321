"""Generation passes of the infer-local job: which model state meets which shots, and their prompts.

Shared by every engine (hf, vLLM, lm-eval), so all of them see the same passes and prompt texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from switchpoint.core import adapter_checks, layout, manifests, modeling
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import read_train_set
from switchpoint.core.predictions import Arm
from switchpoint.core.prompts import encode_prompt, minimal_prompt_length
from switchpoint.core.prompts import fit_prompt as core_fit_prompt
from switchpoint.infer_local.settings import Settings


@dataclass
class Pass:
    """One generation pass: a model state over the evaluation set with fixed shots."""

    adapter: tuple[int, int] | None  # (seed, n) of the adapter, None for the base model
    shots: tuple[int, int] | None  # (seed, k) of the shots, None for zero-shot
    arms: list[Arm]
    prompts: list[str] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)  # prompts.encode_prompt of each prompt
    truncated: int = 0
    skipped: str | None = None

    @property
    def label(self) -> str:
        model = "base" if self.adapter is None else f"adapter seed={self.adapter[0]} n={self.adapter[1]}"
        shots = "" if self.shots is None else f" + {self.shots[1]} shots (seed={self.shots[0]})"
        return model + shots


@dataclass
class Generation:
    """What an engine returns per example: raw text (before post-processing) and its costs."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float | None


@dataclass
class EngineStats:
    base_model_loads: int = 0
    adapter_switches: int = 0
    adapter_switch_s: float = 0.0  # time spent loading and switching adapters (hf engine; others: inside passes)
    pass_wall_s: dict[int, float] = field(default_factory=dict)


# --- planning ----------------------------------------------------------------------------------
def adapter_dir(adapters_dir: Path, seed: int, n: int) -> Path:
    return Path(adapters_dir) / layout.adapter_dir(seed, n)


def plan_passes(settings: Settings, model_key: str, sizes: list[int], seeds: list[int],
                shots: list[int], seeds_up_to_n: int | None = None, prepared_seeds: list[int] | None = None) -> list[Pass]:
    """Passes in run order: the base model's passes first (before any adapter is attached).
    Above ``seeds_up_to_n`` (data.json) only the smallest *prepared* seed has a training set, so only it runs."""
    prepared = prepared_seeds if prepared_seeds is not None else seeds
    passes: dict[tuple, Pass] = {}

    def add(adapter, shot_key, arm):
        passes.setdefault((adapter is not None, adapter or (), shot_key or ()), Pass(adapter, shot_key, [])).arms.append(arm)

    first = min((s for s in seeds if s in prepared), default=None)  # the seed every size runs in an adaptive round
    for seed in seeds:
        if "finetune" in settings.arms:
            for n in sizes:
                if seed in manifests.seeds_at(n, prepared, seeds_up_to_n) and (
                        settings.every_seed_at is None or n in settings.every_seed_at or seed == first):
                    add((seed, n) if n > 0 else None, None, Arm("finetune", model_key, n, seed))
        if "fewshot-local" in settings.arms:
            for k in shots:
                if seed in manifests.seeds_at(k, prepared, seeds_up_to_n):
                    add(None, (seed, k) if k > 0 else None, Arm("fewshot-local", model_key, k, seed))
    return [passes[key] for key in sorted(passes)]


def check_adapters(passes: list[Pass], adapters_dir: Path, probe: modeling.BaseModel, load_in_4bit: bool,
                   notice: Callable[[str], None]) -> None:
    """Every requested adapter is whole and was trained on this base, before the base loads.

    Checked per adapter: ``adapter_config.json`` is a LoRA config, ``adapter_model.safetensors`` has
    a readable header and all its bytes, ``base.json`` names this base, and the target modules exist
    in the model (module names from the model built on the meta device). An adapter trained on a
    4-bit base but evaluated on a full-precision one (or the reverse) gets a notice.
    """
    names: set[str] | None = None
    for p in passes:
        if p.adapter is None:
            continue
        where = adapter_dir(adapters_dir, *p.adapter)
        if not (where / "adapter_config.json").is_file():
            raise JobError(f"{where}: no adapter for seed={p.adapter[0]}, N={p.adapter[1]} (adapter_config.json missing); "
                           "run `switchpoint train` for this size and seed, or drop the size with --sizes")
        config = adapter_checks.check_adapter_files(where)
        modeling.check_base_info(where, probe)
        names = adapter_checks.module_names(probe.entry) if names is None else names
        adapter_checks.check_targets(probe.entry, config["target_modules"], str(where / "adapter_config.json"), names)
        trained_4bit = _trained_in_4bit(where)
        if trained_4bit is not None and trained_4bit != load_in_4bit:
            notice(f"{where}: trained on a {'4-bit' if trained_4bit else 'full-precision'} base, evaluated on a "
                   f"{'4-bit' if load_in_4bit else 'full-precision'} one; use --load-in-4bit "
                   f"{'true' if trained_4bit else 'false'} to match")


def _trained_in_4bit(where: Path) -> bool | None:
    """base.json's record of a 4-bit base (None for adapters written before it was recorded)."""
    import json

    value = json.loads((where / "base.json").read_text(encoding="utf-8")).get("load_in_4bit")
    return None if value is None else bool(value)


# --- prompts and context truncation ------------------------------------------------------------
def count_tokens(tokenizer: Any, text: str, entry: dict | None = None) -> int:
    """Tokens of a prompt as the model sees it (``prompts.encode_prompt``: BOS where the model wants one)."""
    return len(encode_prompt(tokenizer, entry or {}, text))


def fit_prompt(task: dict, entry: dict, example: dict, shots: list[dict], tokenizer: Any,
               budget: int) -> tuple[str | None, bool]:
    """(prompt, truncated) from ``prompts.fit_prompt``, the function training uses too: only the
    example's ``truncate_field`` is cut, from its left; (None, False) when even its removal is not enough."""
    fitted = core_fit_prompt(task, entry, example, shots, tokenizer, budget)
    return (None, False) if fitted is None else (fitted.text, fitted.truncated)


def build_prompts(p: Pass, task: dict, entry: dict, eval_set: list[dict], data_dir: Path, tokenizer: Any,
                  budget: int) -> None:
    shots = read_train_set(data_dir, *p.shots) if p.shots else []
    for example in eval_set:
        fitted = core_fit_prompt(task, entry, example, shots, tokenizer, budget)
        if fitted is None:
            need = minimal_prompt_length(task, entry, example, shots, tokenizer)
            why = (f"{len(shots)} shots alone need {need} prompt tokens (example {example['id']!r}, input text removed), "
                   f"more than the {budget} left of the model's {entry.get('context_length')}-token context")
            if shots:
                p.skipped, p.prompts, p.prompt_ids, p.truncated = why, [], [], 0
                return
            raise JobError(f"model {entry['name']}: the zero-shot prompt needs {need} tokens even without its input text, "
                           f"more than {budget}; raise context_length in models.yaml or lower --max-new-tokens")
        p.prompts.append(fitted.text)
        p.prompt_ids.append(fitted.ids)
        p.truncated += fitted.truncated
