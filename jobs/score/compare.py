"""Comparing two arms of a scores.jsonl: a paired bootstrap over the ids both scored (``score --compare``).

Two single arms (one seed each), so only examples are resampled. The report compares seed-averaged
curves and resamples seeds as well as examples (``report.analysis``); its intervals are wider where
seeds disagree, and that is the interval to quote for N*.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from switchpoint.core import stats
from switchpoint.core.contract import JobError
from switchpoint.core.predictions import ARM_KINDS, Arm

ARM_FIELDS = ("kind", "model", "n", "seed", "variant")


def load_scores(path: str | Path) -> list[dict]:
    """Records of a scores.jsonl (or of the scores.jsonl in a folder)."""
    from switchpoint.core.datafolder import read_jsonl

    path = Path(path)
    if path.is_dir():
        path = path / "scores.jsonl"
    if not path.exists():
        raise JobError(f"{path}: no such file; give the scores.jsonl written by `switchpoint score`")
    records = read_jsonl(path)
    for lineno, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("arm"), dict):
            raise JobError(f"{path}:{lineno}: expected an object with id and arm, as scores.jsonl holds")
    return records


def parse_arm_spec(text: str) -> dict:
    """An arm selector from words such as ``finetune tiny-gpt-neox n=8 seed=0`` (an Arm.label also works).

    Words: ``key=value`` for kind, model, n, seed, variant (``variant=none`` selects no variant);
    ``[v]`` for variant v; a bare arm kind; any other bare word is the model. Fields left out match
    anything, but the selector must pick exactly one arm.
    """
    selector: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in selector and selector[key] != value:
            raise JobError(f"arm {text!r}: {key} given twice ({selector[key]!r} and {value!r})")
        selector[key] = value

    for word in text.split():
        if "=" in word:
            key, _, value = word.partition("=")
            key = key.strip().lower()
            if key not in ARM_FIELDS:
                raise JobError(f"arm {text!r}: unknown field {key!r}; use {', '.join(ARM_FIELDS)}")
            if key in ("n", "seed"):
                try:
                    put(key, int(value))
                except ValueError:
                    raise JobError(f"arm {text!r}: {key}={value!r} is not an integer") from None
            elif key == "variant":
                put(key, None if value.lower() in ("", "none", "null") else value)
            else:
                put(key, value)
        elif word.startswith("[") and word.endswith("]"):
            put("variant", word[1:-1] or None)
        elif word in ARM_KINDS:
            put("kind", word)
        else:
            put("model", word)
    if not selector:
        raise JobError("arm selector is empty; give e.g. 'finetune tiny-gpt-neox n=8 seed=0'")
    return selector


def _matches(arm: dict, selector: dict) -> bool:
    return all(arm.get(k) == v for k, v in selector.items())


def select_arm(records: Sequence[dict], selector: dict) -> dict:
    """The one arm (as a dict) of ``records`` that ``selector``'s fields match."""
    found: dict[tuple, dict] = {}
    for record in records:
        arm = record["arm"]
        if _matches(arm, selector):
            found.setdefault(tuple(arm.get(k) for k in ARM_FIELDS), arm)
    if len(found) == 1:
        return next(iter(found.values()))
    labels = sorted({Arm.from_dict(r["arm"]).label for r in records if len(found) == 0 or _matches(r["arm"], selector)})
    what = "matches no arm" if not found else f"matches {len(found)} arms"
    shown = "; ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
    raise JobError(f"arm selector {selector} {what}; {'arms' if not found else 'candidates'}: {shown} "
                   "(add n=, seed=, variant= or the kind to narrow it)")


def compare_arms(scores_records: Sequence[dict], arm_a: dict, arm_b: dict, metric: str,
                 resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> stats.PairedDifference:
    """A minus B on ``metric`` over the ids both arms scored (percentage points, paired bootstrap).

    ``arm_a``/``arm_b`` are arm dicts or partial selectors (see parse_arm_spec); ids scored by one arm
    only are counted in ``only_a``/``only_b`` and left out, never silently compared.
    """
    chosen_a, chosen_b = select_arm(scores_records, arm_a), select_arm(scores_records, arm_b)
    if chosen_a == chosen_b:
        raise JobError(f"arms A and B are the same arm ({Arm.from_dict(chosen_a).label}); pick two different arms")
    values: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for record in scores_records:
        for side, chosen in zip(values, (chosen_a, chosen_b)):
            if record["arm"] == chosen:
                if metric not in record:
                    known = sorted(set(record) - {"id", "arm", "error"})
                    raise JobError(f"metric {metric!r} is not in the scores; they hold {', '.join(known)}")
                side[record["id"]] = float(record[metric])
    return stats.paired_difference(values[0], values[1], resamples, seed)


def run_compare(path: str, arm_a: str | None, arm_b: str | None, metric: str | None,
                 bootstrap: int | None, seed: int | None) -> None:
    if not arm_a or not arm_b:
        raise JobError("--compare needs --arm-a and --arm-b, e.g. --arm-a 'finetune tiny-gpt-neox n=8 seed=0'")
    records = load_scores(path)
    if not records:
        raise JobError(f"{path}: holds no scores")
    if metric is None:
        found = sorted(set().union(*(set(r) for r in records)) - {"id", "arm", "error"})
        if len(found) != 1:
            raise JobError(f"{path}: holds metrics {', '.join(found)}; choose one with --metric")
        metric = found[0]
    resamples = bootstrap or stats.DEFAULT_RESAMPLES
    seed = seed or 0
    sel_a, sel_b = parse_arm_spec(arm_a), parse_arm_spec(arm_b)
    label_a = Arm.from_dict(select_arm(records, sel_a)).label
    label_b = Arm.from_dict(select_arm(records, sel_b)).label
    diff = compare_arms(records, sel_a, sel_b, metric, resamples, seed)
    click.echo(f"A: {label_a}\nB: {label_b}")
    if diff.count == 0:
        raise JobError(f"arms '{label_a}' and '{label_b}' share no example ids; nothing to compare")
    click.echo(f"{metric}: A - B = {diff.mean_diff:+.2f} points, 95% paired bootstrap interval "
               f"[{diff.ci_low:+.2f}, {diff.ci_high:+.2f}] over {diff.count} common examples "
               f"({resamples} resamples, seed {seed})")
    if diff.only_a or diff.only_b:
        click.echo(f"score: notice: {diff.only_a} ids only in A and {diff.only_b} only in B were left out",
                   err=True)
