"""The adaptive sweep's decisions: spend GPU hours only where they change the answer.

A full grid trains every model at every N of the doubling grid, with every seed. Most of those
adapters do not change the answer: once a model matches the hardest prompting arm (and keeps
matching at the next size), larger N only confirm it; a model that is worse *and* costlier than
another at every size so far cannot be the recommendation; a model whose curve has flattened far
below the level cannot reach it inside the sweep; and a second or third seed matters only at the two
sizes that bracket N*. So the sweep proceeds in rounds — train, infer, score, decide — and each round
asks only for the sizes (and seeds) that can still move N*.

Refinement stops at the grid's bracket, on purpose. The data step prepares nested training sets only
at the sweep's sizes (``manifests.prepared_sizes``); an N between two of them would change the data
step's settings and so re-run every model's steps. Walking up the grid one size at a time, N* always
falls between two *adjacent* grid sizes that are both measured, and the report interpolates N* (and
each resample's crossing) between exactly those two: the grid's own resolution, which is as narrow
as the full grid's interval can be. What is left to narrow is the noise of those two sizes, which
more seeds do (``seeds_needed``).

This module is the "decide" part, pure and deterministic: it reads what the last round measured
(``ModelRound``, built from the report's tables) and returns what to run next (``Decision``). The
orchestration runs the rounds; tests simulate them on recorded or synthetic curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

FIRST_ROUND_SIZES = 4  # N = 0, 2, 4, 8 on the doubling grid: enough to see the curve's start


@dataclass
class ModelRound:
    """What the sweep knows about one open model after a round."""

    model: str
    means: dict[int, float]  # N -> mean primary metric (seeds averaged)
    usd: dict[int, float]  # N -> training + inference cost spent for that N, all seeds (dollars or seconds)
    matches: dict[str, dict[int, bool]]  # prompting tier -> N -> non-inferior at N (the report's match rule)
    seeds: dict[int, int] = field(default_factory=dict)  # N -> seeds measured (absent: one)
    n_star: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # tier -> (N*, 95% low, high)

    def per_seed(self, n: int, unknown: float) -> float:
        """The cost of one seed at N (``unknown`` where unmeasured): extra seeds at N*'s bracket must not
        make a model look costlier there than a rival that ran one."""
        return self.usd[n] / max(self.seeds.get(n, 1), 1) if n in self.usd else unknown


@dataclass
class Decision:
    model: str
    sizes: list[int]  # sizes to run next round
    stop: str | None = None  # why this model needs nothing more (None while it does)
    more_seeds: list[int] = field(default_factory=list)  # sizes that get every prepared seed next round


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


def grid_bracket(grid: list[int], n_star: float) -> tuple[int, int]:
    """The two adjacent grid sizes around N*: the narrowest interval the grid can resolve.

    N* exactly on a grid size is bracketed by that size and the one below (where the curve was
    still under the level)."""
    sizes = sorted(grid)
    upper = next((n for n in sizes if n >= n_star), sizes[-1])
    below = [n for n in sizes if n < upper]
    return (below[-1] if below else upper), upper


def seeds_needed(model: ModelRound, tier: str, grid: list[int], max_seeds: dict[int, int]) -> list[int]:
    """The bracketing sizes that get the sweep's other seeds: only while N*'s interval is wider than the
    grid's bracket, and only where the sweep prepared more seeds than were run (``max_seeds``: N -> seeds).
    All of them at once: a round per extra seed would cost a round's overhead for the same adapters."""
    if tier not in model.n_star:
        return []
    star, low, high = model.n_star[tier]
    lower, upper = grid_bracket(grid, star)
    if low >= lower and high <= upper:
        return []
    return [n for n in (lower, upper) if n > 0 and n in model.means
            and model.seeds.get(n, 1) < max_seeds.get(n, 1)]


def dominated_by(model: ModelRound, others: list[ModelRound]) -> str | None:
    """Another model that scored at least as well for no more dollars per seed at every size both measured."""
    for other in others:
        common = sorted(set(model.means) & set(other.means) - {0})
        if len(common) < 2 or other.model == model.model:
            continue
        if all(other.means[n] >= model.means[n] and other.per_seed(n, math.inf) <= model.per_seed(n, 0.0)
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
    slopes = [(model.means[b] - model.means[a]) / math.log2(b / a) for a, b in pairwise(sizes)]
    if not slopes[-1] < slopes[-2] < slopes[-3]:
        return False
    doublings_left = math.log2(grid_max / sizes[-1]) if grid_max > sizes[-1] else 0.0
    return model.means[sizes[-1]] + max(slopes[-2:]) * doublings_left < level - margin


def decide(rounds: dict[str, ModelRound], levels: dict[str, float], grid: list[int], *, margin: float,
           max_seeds: dict[int, int] | None = None, asked: dict[str, set[int]] | None = None) -> list[Decision]:
    """What each model needs next, given the prompting tiers' levels (tier -> mean), the seeds the
    sweep prepared at each N (``max_seeds``; none: one seed everywhere) and the sizes earlier rounds
    already asked every seed at (``asked``: model -> sizes), so a request that came to nothing is not
    repeated round after round."""
    hardest = max(levels, key=levels.get) if levels else None
    decisions = []
    for name, model in sorted(rounds.items()):
        decisions.append(_decide_one(model, [r for r in rounds.values() if r.model != name], hardest,
                                     levels.get(hardest, math.inf) if hardest else math.inf, grid,
                                     margin=margin, max_seeds=max_seeds or {},
                                     asked=(asked or {}).get(name, set())))
    return decisions


def _decide_one(model: ModelRound, others: list[ModelRound], hardest: str | None, level: float, grid: list[int],
                *, margin: float, max_seeds: dict[int, int], asked: set[int]) -> Decision:
    measured = set(model.means)
    rival = dominated_by(model, others)
    if rival:
        return Decision(model.model, [], stop=f"dominated by {rival} (as good or better for no more dollars at every N)")
    matched = persistent_match(model.matches.get(hardest, {})) if hardest else None
    if matched is not None and any(n > matched for n in measured):
        return _settle(model, hardest, matched, grid, max_seeds, asked)
    following = next_size(grid, measured)
    if following is None:
        return Decision(model.model, [], stop="the grid's largest N is measured (N* beyond the sweep)"
                        if matched is None else f"matches {hardest} at the grid's largest N")
    if matched is None and out_of_reach(model, level, margin, max(grid)):
        return Decision(model.model, [], stop=f"cannot reach {hardest} within the sweep at its recent slope")
    return Decision(model.model, [following])


def _settle(model: ModelRound, tier: str, matched: int, grid: list[int], max_seeds: dict[int, int],
            asked: set[int]) -> Decision:
    """A confirmed match: the other seeds at N*'s bracket when its interval needs them, else done."""
    found = f"matches {tier} from N={matched}, confirmed at a larger N"
    more = seeds_needed(model, tier, grid, max_seeds)
    short = [n for n in more if n in asked]
    if short:
        missing = ", ".join(f"N={n} has {model.seeds.get(n, 1)} of {max_seeds.get(n, 1)}" for n in short)
        return Decision(model.model, [], stop=f"{found}; the other seeds asked for at N*'s bracket never reached "
                        f"the report ({missing} prepared seeds measured): see that size's train and infer steps")
    if more:
        return Decision(model.model, [], more_seeds=more)
    if tier not in model.n_star:
        return Decision(model.model, [], stop=found)
    star, low, high = model.n_star[tier]
    lower, upper = grid_bracket(grid, star)
    if low >= lower and high <= upper:
        return Decision(model.model, [], stop=f"{found}; N*'s interval lies within the grid's bracket {lower}-{upper}")
    return Decision(model.model, [], stop=f"{found}; N*'s interval ({low:.3g}-{high:.3g}) is wider than the "
                    f"grid's bracket {lower}-{upper} with every prepared seed there")


def first_round(grid: list[int]) -> list[int]:
    return sorted(grid)[:FIRST_ROUND_SIZES]
