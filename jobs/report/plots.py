"""The report's figures: metric vs N, dollars vs N, metric per dollar, and monthly cost vs request volume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from switchpoint.report.analysis import Analysis, Tier, arm_rows, group_dollars, vlabel
from switchpoint.report.transitions import Axis

Plot = tuple[str, str]  # (file name, caption)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


class Figures:
    """Shared state of one report's plots: the axis, one colour per arm, and the files written."""

    def __init__(self, an: Analysis, out_dir: Path):
        self.plt = _pyplot()
        self.an, self.dir = an, out_dir / "plots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sizes = sorted(int(n) for n in an.curve.n.unique())
        self.axis = Axis.for_sizes(self.sizes)
        self.arms = sorted({(r.kind, r.model, r.variant) for r in an.curve.itertuples()})
        colors = self.plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self.color = {arm: colors[i % len(colors)] for i, arm in enumerate(self.arms)}
        self.made: list[Plot] = []

    def label(self, kind: str, model: str, variant: str) -> str:
        return f"{'fine-tuned' if kind == 'finetune' else kind} {model}{vlabel(variant)}"

    def x_axis(self, ax) -> None:
        ax.set_xticks([self.axis.x(n) for n in self.sizes])
        ax.set_xticklabels([str(n) for n in self.sizes], fontsize=8)
        ax.set_xlabel("N (training examples for fine-tuning, shots for prompting; log2 axis, N=0 one step left)")
        ax.grid(True, alpha=0.3)

    def save(self, fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(self.dir / name, dpi=100, metadata={"Software": None})
        self.plt.close(fig)
        self.made.append((name, caption))

    def dollars(self, kind: str, model: str, variant: str, n: int) -> dict:
        return group_dollars(self.an.run_costs, self.an.seeds.get((kind, model, variant, n), []),
                             kind, model, variant, n)


def sane_ylim(ax, highs: list[float]) -> None:
    """From just below 0, with a visible range even when every value is 0 (no -1.4e-17 to 0 axis)."""
    top = max([h for h in highs if h is not None and math.isfinite(h)] + [0.0])
    top = min(100.0, top * 1.1) if top > 0 else 1.0
    ax.set_ylim(-0.03 * top, top)  # a little room below 0, so a level or a curve at 0 stays visible


def metric_plot(f: Figures, metric: str) -> None:
    an = f.an
    fig, ax = f.plt.subplots(figsize=(8, 4.6))
    for arm in f.arms:
        s = arm_rows(an.curve, *arm, metric)
        if s.empty:
            continue
        xs = [f.axis.x(n) for n in s.n]
        ax.plot(xs, s["mean"], "-" if arm[0] == "finetune" else "--", marker="o", color=f.color[arm], label=f.label(*arm))
        ax.fill_between(xs, s["ci_low"], s["ci_high"], color=f.color[arm], alpha=0.15)
    for t in an.tiers if metric == an.primary else []:
        ax.axhline(t.level[0], linestyle=":", color=f.color[(t.kind, t.model, t.variant)],
                   label=f"{t.model}{vlabel(t.variant)} level ({t.shots} shots): {t.level[0]:.1f}")
        _star(f, ax, t)
    f.x_axis(ax)
    sane_ylim(ax, an.curve[an.curve.metric == metric]["ci_high"].tolist())
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{an.name}: {metric} vs N (bands: 95% intervals; ★ N* with its interval)")
    ax.legend(fontsize=7, loc="best")
    f.save(fig, f"{safe(metric)}_vs_n.png", f"{metric} vs N: fine-tuned (solid) and prompting arms (dashed, vs "
           "shots); dotted lines are the prompting levels; a star marks N* and its bar the 95% interval of N*.")


def _star(f: Figures, ax, tier: Tier) -> None:
    best = tier.best
    if best is None or best["n_star"] is None or pd.isna(best["n_star"]):
        return
    color = f.color.get(("finetune", best["model"], best["model_variant"]), "k")
    x = f.axis.x(best["n_star"])
    lo, hi = best["n_star_low"], best["n_star_high"]
    right = f.axis.x(max(f.sizes)) + 0.3 if not math.isfinite(hi) else f.axis.x(hi)
    ax.plot([f.axis.x(lo) if math.isfinite(lo) else x, right], [tier.level[0]] * 2, color=color, linewidth=3, alpha=0.5)
    ax.plot([x], [tier.level[0]], marker="*", markersize=14, color=color, linestyle="none")


def cost_plot(f: Figures) -> None:
    an = f.an
    fig, ax = f.plt.subplots(figsize=(8, 4.6))
    plotted = False
    for arm in f.arms:
        s = arm_rows(an.curve, *arm, an.primary)
        got = [(f.axis.x(n), f.dollars(*arm, int(n)).get("eval_usd")) for n in s.n]
        got = [(x, d) for x, d in got if d is not None and d > 0]
        if got:
            ax.plot(*zip(*got), "-" if arm[0] == "finetune" else "--", marker="o", color=f.color[arm], label=f.label(*arm))
            plotted = True
    if plotted:
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no arm has a positive dollar figure\n(unpriced or 'local' instances are priced at $0)",
                ha="center", va="center", transform=ax.transAxes)
    f.x_axis(ax)
    ax.set_ylabel("USD per evaluation run (on-demand)")
    ax.set_title(f"{an.name}: cost vs N")
    f.save(fig, "cost_vs_n.png", "Dollars per evaluation run vs N: fine-tuned = training on N examples + inference on "
           "the eval set; API = tokens × on-demand price.")


def per_usd_plot(f: Figures, metric: str) -> None:
    """Metric points per dollar; a linear axis, so an arm scoring 0 stays visible at 0."""
    an = f.an
    fig, ax = f.plt.subplots(figsize=(8, 4.6))
    plotted = False
    for arm in f.arms:
        s = arm_rows(an.curve, *arm, metric)
        got = [(f.axis.x(r.n), r.mean / d) for r in s.itertuples()
               if (d := f.dollars(*arm, int(r.n)).get("eval_usd")) is not None and d > 0]
        if got:
            ax.plot(*zip(*got), "-" if arm[0] == "finetune" else "--", marker="o", color=f.color[arm], label=f.label(*arm))
            plotted = True
    if plotted:
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no arm has a positive dollar figure: metric per dollar undefined",
                ha="center", va="center", transform=ax.transAxes)
    f.x_axis(ax)
    ax.set_ylabel(f"{metric} points per USD (per evaluation run)")
    ax.set_title(f"{an.name}: {metric} per dollar vs N")
    f.save(fig, f"{safe(metric)}_per_usd_vs_n.png", f"{metric} points per dollar of one evaluation run vs N (linear "
           "axis: arms scoring 0 show at 0; arms with no or a zero dollar figure are left out).")


def volume_plot(f: Figures, tier: Tier, index: int) -> None:
    """Monthly cost vs requests a month for one tier: prompting, fine-tuned per request, always-on endpoint."""
    cost = tier.cost
    fig, ax = f.plt.subplots(figsize=(8, 4.2))
    volumes = np.logspace(2, 8, 61)
    lines = [("prompting: " + tier.model, cost.prompting if cost else None, "--"),
             ("fine-tuned, billed per request", cost.per_request if cost else None, "-"),
             ("fine-tuned, always-on endpoint", cost.endpoint if cost else None, "-.")]
    plotted = False
    for name, fn, style in lines:
        ys = [fn(v) for v in volumes] if fn else []
        if ys and all(y is not None for y in ys) and max(ys) > 0:
            ax.plot(volumes, [max(y, 1e-6) for y in ys], style, label=name)
            plotted = True
    for value, what in ((cost.break_even_per_request(), "break-even (per request)"),
                        (cost.break_even_endpoint(), "break-even (endpoint)")) if cost else ():
        if value is not None and 0 < value < math.inf:
            ax.axvline(value, color="grey", linestyle=":")
            ax.text(value, 0.03, f" {what}: {math.ceil(value):,}", rotation=90, va="bottom", fontsize=7,
                    transform=ax.get_xaxis_transform())
    if f.an.settings.volume:
        ax.axvline(f.an.settings.volume, color="red", linewidth=1, label=f"--volume: {f.an.settings.volume:,.0f}")
    ax.set_xscale("log")
    if plotted:
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "dollar figures unknown or $0 (unpriced or 'local' instances): no cost comparison",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("requests a month")
    ax.set_ylabel("USD a month")
    ax.grid(True, alpha=0.3, which="both")
    ax.set_title(f"{tier.model}{vlabel(tier.variant)} level: monthly cost vs volume")
    f.save(fig, f"monthly_cost_{index}_{safe(tier.model)}.png", f"Monthly cost vs requests a month at the "
           f"{tier.model}{vlabel(tier.variant)} level ({tier.shots} shots), with the break-even volumes marked; the "
           "one-off cost (training and labelling) is spread over the amortisation months.")


def make_plots(an: Analysis, out_dir: Path) -> list[Plot]:
    """Write every PNG; returns (file name, caption) in report order: the primary metric, then one monthly-cost
    plot per tier whose dollars are known (none for a run on $0 'local' instances), then the rest."""
    f = Figures(an, out_dir)
    metrics = [an.primary] + [m for m in an.metrics if m != an.primary]
    metric_plot(f, an.primary)
    for i, tier in enumerate(an.tiers):
        if tier.cost is not None and any(v not in (0, None) for v in (tier.cost.one_off_usd, tier.cost.ft_per_request,
                                                                      tier.cost.prompt_per_request)):
            volume_plot(f, tier, i)
    for metric in metrics[1:]:
        metric_plot(f, metric)
    cost_plot(f)
    for metric in metrics:
        per_usd_plot(f, metric)
    return f.made
