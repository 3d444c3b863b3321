"""The adaptive sweep's decisions: spend GPU hours only where they change the answer.

A full grid trains every model at every N of the doubling grid. Most of those adapters do not
change the answer: once a model matches the hardest prompting arm (and keeps matching at the next
size), larger N only confirm it; a model that is worse *and* costlier than another at every size so
far cannot be the recommendation; a model whose curve has flattened far below the level cannot
reach it inside the sweep. So the sweep proceeds in rounds — train, infer, score, decide — and each
round asks only for the sizes that can still move N*. (Every round runs the sweep's seeds, as
``seeds_up_to_n`` says; adding seeds only where N*'s interval needs them is not done yet.)

This module is the "decide" part, pure and deterministic: it reads what the last round measured
(``ModelRound``, built from the report's tables) and returns what to run next (``Decision``). The
orchestration runs the rounds; tests simulate them on recorded or synthetic curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIRST_ROUND_SIZES = 4  # N = 0, 2, 4, 8 on the doubling grid: enough to see the curve's start


@dataclass
class ModelRound:
    """What the sweep knows about one open model after a round."""

    model: str
    means: dict[int, float]  # N -> mean primary metric (seeds averaged)
    usd: dict[int, float]  # N -> training + inference dollars (or GPU hours) spent for that N, all seeds
    matches: dict[str, dict[int, bool]]  # prompting tier -> N -> non-inferior at N (the report's match rule)


@dataclass
class Decision:
    model: str
    sizes: list[int]  # sizes to run next round
    stop: str | None = None  # why this model needs nothing more (None while it does)


def persistent_match(matches: dict[int, bool]) -> int | None:
    """The first N from which every measured N matches (the match rule's persistence)."""
    first = None
    for n in sorted(matches):
        if matches[n]:
            first = n if first is None else first
        else:
            first = None
    return first


def next_size(grid: list[int], measured: set[int]) -> int | None:
    """The smallest grid size above everything measured (walking up the doubling grid)."""
    top = max(measured) if measured else -1
    bigger = [n for n in sorted(grid) if n > top]
    return bigger[0] if bigger else None


def dominated_by(model: ModelRound, others: list[ModelRound]) -> str | None:
    """Another model that scored at least as well for no more dollars at every size both measured."""
    for other in others:
        common = sorted(set(model.means) & set(other.means) - {0})
        if len(common) < 2 or other.model == model.model:
            continue
        if all(other.means[n] >= model.means[n] and other.usd.get(n, math.inf) <= model.usd.get(n, 0.0)
               for n in common) and any(other.means[n] > model.means[n] for n in common):
            return other.model
    return None


def out_of_reach(model: ModelRound, level: float, margin: float, grid_max: int) -> bool:
    """True when the curve has flattened (its gain per doubling shrank twice in a row) and even the
    steeper of its last two slopes cannot bring it within the margin of ``level`` by the grid's end.

    Early in a learning curve the gain per doubling still grows (and one noisy dip is no trend),
    so nothing is concluded there.
    """
    sizes = sorted(n for n in model.means if n > 0)
    if len(sizes) < 4:
        return False
    slopes = [(model.means[b] - model.means[a]) / math.log2(b / a) for a, b in zip(sizes, sizes[1:])]
    if not slopes[-1] < slopes[-2] < slopes[-3]:
        return False
    doublings_left = math.log2(grid_max / sizes[-1]) if grid_max > sizes[-1] else 0.0
    return model.means[sizes[-1]] + max(slopes[-2:]) * doublings_left < level - margin


def decide(rounds: dict[str, ModelRound], levels: dict[str, float], grid: list[int], *, margin: float) -> list[Decision]:
    """What each model needs next, given the prompting tiers' levels (tier -> mean)."""
    hardest = max(levels, key=levels.get) if levels else None
    decisions = []
    for name, model in sorted(rounds.items()):
        decisions.append(_decide_one(model, [r for r in rounds.values() if r.model != name], hardest,
                                     levels.get(hardest, math.inf) if hardest else math.inf, grid,
                                     margin=margin))
    return decisions


def _decide_one(model: ModelRound, others: list[ModelRound], hardest: str | None, level: float, grid: list[int],
                *, margin: float) -> Decision:
    measured = set(model.means)
    rival = dominated_by(model, others)
    if rival:
        return Decision(model.model, [], stop=f"dominated by {rival} (as good or better for no more dollars at every N)")
    matched = persistent_match(model.matches.get(hardest, {})) if hardest else None
    if matched is not None and any(n > matched for n in measured):
        return Decision(model.model, [], stop=f"matches {hardest} from N={matched}, confirmed at a larger N")
    following = next_size(grid, measured)
    if following is None:
        return Decision(model.model, [], stop="the grid's largest N is measured (N* beyond the sweep)"
                        if matched is None else f"matches {hardest} at the grid's largest N")
    if matched is None and out_of_reach(model, level, margin, max(grid)):
        return Decision(model.model, [], stop=f"cannot reach {hardest} within the sweep at its recent slope")
    return Decision(model.model, [following])


def first_round(grid: list[int]) -> list[int]:
    return sorted(grid)[:FIRST_ROUND_SIZES]
