"""The report as a document: blocks (headings, paragraphs, lists, tables, images) rendered to markdown and HTML.

The first screen answers the question: per prompting tier the headline figure, its interval, the
one-off cost and the break-even volumes; then the plots; the long tables come last.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from switchpoint.report.analysis import Analysis, Tier, vlabel
from switchpoint.report.settings import EXTRAPOLATE_MAX

Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"banner"|"ul"|"table"|"img", content)


# --- numbers for the page ------------------------------------------------------------------------
def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_n(value) -> str:
    """An N for the page: a whole number (N* and extrapolations are rough figures); infinity is 'beyond the sweep'."""
    if missing(value):
        return "–"
    return "beyond the sweep" if math.isinf(float(value)) else f"{float(value):,.0f}"


def fmt_usd(value) -> str:
    if missing(value):
        return "unknown"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:#.3g}"


def fmt_requests(value) -> str:
    """A request count: whole requests, rounded up; 'never' for infinity. Rounded to 9 significant
    digits first, so float noise (2500.0000000000005) does not add a request."""
    if missing(value):
        return "unknown"
    return "never" if math.isinf(value) else f"{math.ceil(float(f'{value:.9g}')):,}"


def fmt_pct(mean, low=None, high=None) -> str:
    if missing(mean):
        return "–"
    return f"{mean:.1f}" if low is None or missing(low) else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def fmt_range(low, high, cap: float | None = None) -> str:
    """An interval of N: 'a–b', with 'beyond the sweep' or 'more than 8× the sweep' for an open end."""
    def end(v):
        if cap is not None and not missing(v) and float(v) > cap:
            return f"more than {EXTRAPOLATE_MAX:g}× the sweep"
        return fmt_n(v)

    return "–" if missing(low) else f"{end(low)}–{end(high)}"


def n_star_text(row: dict, largest: int) -> str:
    """The headline figure: N* with its interval, a bounded extrapolation, or why there is none."""
    if not missing(row.get("n_star")):
        return f"N ≈ {fmt_n(row['n_star'])} (95% interval {fmt_range(row['n_star_low'], row['n_star_high'])})"
    if not missing(row.get("n_extrapolated")):
        cap = EXTRAPOLATE_MAX * largest
        return (f"N ≈ {fmt_n(row['n_extrapolated'])} EXTRAPOLATED beyond the sweep (range "
                f"{fmt_range(row['n_extrapolated_low'], row['n_extrapolated_high'], cap)})")
    if row.get("beyond_8x"):
        return f"more than {EXTRAPOLATE_MAX:g}× the sweep (N > {EXTRAPOLATE_MAX * largest:,.0f}; not extrapolated further)"
    return "not reached in the sweep"


# --- the answer ----------------------------------------------------------------------------------
def tier_name(t: Tier) -> str:
    local = " few-shot (local)" if t.kind == "fewshot-local" else ""
    return f"{t.model}{vlabel(t.variant)}{local} level"


def tier_sentence(an: Analysis, t: Tier) -> str:
    level = f"{tier_name(t)} ({fmt_pct(*t.level)} {an.primary} with {t.shots} shots)"
    b = t.best
    if b is None:
        return f"{level}: no fine-tuned model was compared."
    largest = max(an.contents.sizes or [0])
    figure = n_star_text(b, largest)
    text = f"{level}: fine-tuned {b['model']}{vlabel(b['model_variant'])}" + (
        f" at {figure}" if figure.startswith("N ≈") else f": {figure}")
    if not missing(b["n_match"]):
        text += f"; matches within {an.settings.margin:g} point(s) from N={int(b['n_match'])} on"
        text += f", better from N={int(b['n_superior'])} on" if not missing(b["n_superior"]) else ", never better with 95% confidence"
    else:
        text += f"; never matches within {an.settings.margin:g} point(s) at every larger N"
    return text + "." + (" " + cost_sentence(an, t) if t.cost is not None else "")


def priced(cost) -> bool:
    """Whether a tier's dollars can decide anything (not every figure $0 or unknown, as on 'local' instances)."""
    return cost is not None and any(v not in (0, None) for v in (cost.one_off_usd, cost.ft_per_request,
                                                                 cost.prompt_per_request))


def cost_sentence(an: Analysis, t: Tier) -> str:
    c, n = t.cost, int(t.best["decision_n"])
    label = f" + labelling {n} × {fmt_usd(an.settings.label_usd)}" if an.settings.label_usd else ""
    one_off = f"One-off cost at N={n}: {fmt_usd(c.one_off_usd)} (training{label})"
    per_req, endpoint = c.break_even_per_request(), c.break_even_endpoint()
    if not priced(c):
        return one_off + "; every dollar figure is $0 or unknown (local instances), so cost does not decide."
    return (f"{one_off}; pays back above {fmt_requests(per_req)} requests a month billed per request, "
            f"above {fmt_requests(endpoint)} with an always-on endpoint.")


def knee_sentence(an: Analysis, t: Tier) -> str | None:
    if t.knee is None:
        return None
    shots, mean = t.knee
    return (f"Prompting knee for {t.model}{vlabel(t.variant)}: {shots} shots give {mean:.1f}, inside the interval of "
            f"its best ({fmt_pct(*t.level)} with {t.shots} shots).")


def volume_sentence(an: Analysis) -> str | None:
    volume = an.settings.volume
    if volume is None:
        return None
    parts = []
    for t in an.tiers:
        if t.cost is None:
            parts.append(f"{tier_name(t)}: no fine-tuned answer to price")
            continue
        options = {"prompting": t.cost.prompting(volume), "fine-tuned billed per request": t.cost.per_request(volume),
                   "fine-tuned on an always-on endpoint": t.cost.endpoint(volume)}
        known = {k: v for k, v in options.items() if v is not None}
        if not known:
            parts.append(f"{tier_name(t)}: dollars unknown")
            continue
        cheapest = min(known, key=known.get)
        parts.append(f"{tier_name(t)}: {cheapest} is cheapest (" + ", ".join(f"{k} {fmt_usd(v)}" for k, v in known.items()) + ")")
    return f"At {volume:,.0f} requests a month — " + "; ".join(parts) + "."


def tier_table(an: Analysis) -> pd.DataFrame:
    largest = max(an.contents.sizes or [0])
    rows = []
    for t in an.tiers:
        b = t.best or {}
        rows.append({
            "tier": f"{tier_name(t)} ({t.shots} shots)", "level": fmt_pct(*t.level),
            "fine-tuned": f"{b.get('model', '–')}{vlabel(b.get('model_variant', ''))}",
            "N* (95% interval)": n_star_text(b, largest) if b else "–",
            f"matches (δ={an.settings.margin:g}) / better from": f"{fmt_n(b.get('n_match'))} / {fmt_n(b.get('n_superior'))}",
            "one-off $": fmt_usd(t.cost.one_off_usd) if t.cost else "–",
            "break-even req/month (per request; endpoint)":
                f"{fmt_requests(t.cost.break_even_per_request())}; {fmt_requests(t.cost.break_even_endpoint())}"
                if priced(t.cost) else "– (no dollar figures)",
        })
    return pd.DataFrame(rows)


def banner(an: Analysis) -> str | None:
    if not an.tiny_models:
        return None
    toy = " on a TOY task (generated data)" if an.task.get("toy") or "toy" in str(an.task.get("description", "")).lower() else ""
    return (f"SMOKE RUN{toy}: the figures come from tiny random models built on the spot ({', '.join(an.tiny_models)}). "
            "They check the pipeline and show the shape of the answer; they say nothing about real models or real prices.")


def answer_blocks(an: Analysis) -> list[Block]:
    if not an.tiers:
        return [("p", f"No answer could be computed: {an.notes[0] if an.notes else 'no arms to compare'}.")]
    blocks: list[Block] = [("table", tier_table(an)), ("ul", [tier_sentence(an, t) for t in an.tiers])]
    extra = [s for s in [volume_sentence(an), *(knee_sentence(an, t) for t in an.tiers)] if s]
    if extra:
        blocks.append(("ul", extra))
    return blocks


# --- the rest of the page ------------------------------------------------------------------------
def not_measured(an: Analysis) -> list[str]:
    items = list(an.notes) + list(an.run_costs.notes)
    items += [f"skipped arm {s['arm']}: {s['reason']} ({s['source']})" for s in an.run_costs.skipped]
    errs = an.per_seed[(an.per_seed.metric == an.metrics[0]) & (an.per_seed.errors > 0)]
    items += [f"{r.kind} {r.model}{vlabel(r.variant)} n={r.n} seed={r.seed}: {r.errors} of {r.count} records in error "
              "(scored 0)" for r in errs.itertuples()]
    t = an.transitions
    items += [f"{r.model} vs {r.prompt_model} ({r.metric}): N ≈ {fmt_n(r.n_extrapolated)} is EXTRAPOLATED from a fit "
              f"({r.fit_params}), not measured" for r in t[t.status == "extrapolated"].itertuples()]
    return list(dict.fromkeys(items)) or ["nothing: every arm of the sweep was run, scored and priced"]


def long_tables(an: Analysis) -> list[Block]:
    t = an.transitions
    largest = max(an.contents.sizes or [0])
    shown = pd.DataFrame({
        "metric": t.metric, "fine-tuned": t.model + t.model_variant.map(vlabel),
        "prompting level": [f"{m}{vlabel(v)} {k} shots: {fmt_pct(a, b, c)}" for m, v, k, a, b, c in
                            zip(t.prompt_model, t.prompt_variant, t.prompt_shots, t.prompt_mean, t.prompt_ci_low, t.prompt_ci_high)],
        "status": t.status, "N*": [n_star_text(r, largest) for r in t.to_dict("records")],
        "matches / better from": [f"{fmt_n(a)} / {fmt_n(b)}" for a, b in zip(t.n_match, t.n_superior)],
        "break-even req/month": [f"{fmt_requests(a)}; endpoint {fmt_requests(b)}" for a, b in
                                 zip(t.breakeven_monthly_requests, t.breakeven_monthly_requests_endpoint)],
    }) if not t.empty else pd.DataFrame({"transitions": ["none (see What was not measured)"]})
    c = an.curve.sort_values(["metric", "kind", "model", "variant", "n"])
    curve = pd.DataFrame({
        "metric": c.metric, "arm": c.kind + " " + c.model + c.variant.map(vlabel), "N": c.n, "seeds": c.seeds,
        "mean [95% CI]": [fmt_pct(*v) for v in zip(c["mean"], c.ci_low, c.ci_high)], "examples": c["count"],
        "errors": c.errors,
    })
    return [("h2", "All transitions"), ("table", shown), ("h2", "Results (seeds pooled)"), ("table", curve)]


def method_items(an: Analysis) -> list[str]:
    s = an.settings
    level = ("each prompting arm's best shot count (ties: fewer shots)" if s.reference == "best"
             else f"each prompting arm's {s.reference}-shot result")
    match = (f"Match rule: fine-tuned matches a level at N when the paired 95% lower bound of (fine-tuned − prompting) "
             f"is ≥ −{s.margin:g} point(s) (non-inferiority) at N and at every larger measured N (persistence). "
             "'Better' (superiority): the lower bound is > 0 from N on. A model is never compared with itself, and a "
             "tie with zero variance counts only between different models.")
    intervals = ("Intervals: percentile bootstrap; where an arm has several seeds, two-stage (seeds drawn, then "
                 "examples), with one set of example draws shared by every arm so differences stay paired by example id.")
    n_star = ("N*: where the mean difference reaches 0 for good, interpolated on log2 N; its interval applies the same "
              "rule to every resample ('beyond the sweep' when a resample's curve ends below the level).")
    extrapolation = (f"Extrapolation: only when the mean never reaches the level: a line in log2 N on the last 4 "
                     f"sizes, shown only up to {EXTRAPOLATE_MAX:g}× the largest measured N, with its range from the "
                     "resamples.")
    cost = (f"Cost: one-off = training at the decision N + labelling ({fmt_usd(s.label_usd)} per example), spread over "
            f"{s.amortize_months:g} month(s); fine-tuned per request at the measured throughput, or one always-on "
            "instance (730 h a month); API tokens at on-demand prices; the prompt cache only where the shot prefix "
            "reaches the model's minimum cacheable length; a generation pass shared by several arms is charged once.")
    return [f"Prompting level: {level}.", match, intervals, n_star, extrapolation, cost]


def build_document(an: Analysis, plots: list[tuple[str, str]]) -> list[Block]:
    sweep = an.sweep.get("name", "(unnamed)") if an.sweep else "(no sweep manifest)"
    seeds = sorted({len(v) for k, v in an.seeds.items() if k[0] == "finetune"})
    blocks: list[Block] = [("h1", f"switchpoint report: {an.name}")]
    if banner(an):
        blocks.append(("banner", banner(an)))
    context = (f"Sweep {sweep}; primary metric {an.primary}; margin δ = {an.settings.margin:g} point(s); "
               f"sizes N = {', '.join(map(str, an.contents.sizes))}; seeds per fine-tuned size: "
               f"{', '.join(map(str, seeds)) or '–'}; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    blocks.append(("p", context))
    blocks += [("h2", "Answer"), *answer_blocks(an), ("h2", "Plots")]
    blocks += [("img", plot) for plot in plots]
    blocks += [("h2", "What was not measured"), ("ul", not_measured(an)), *long_tables(an),
               ("h2", "How the figures are computed"), ("ul", method_items(an))]
    return blocks


# --- rendering -----------------------------------------------------------------------------------
def _md_table(df: pd.DataFrame) -> str:
    cells = df.astype(object).where(df.notna(), "").astype(str)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.values.tolist()]
    return "\n".join(lines)


MD = {"h1": lambda c: f"# {c}", "h2": lambda c: f"## {c}", "p": str, "banner": lambda c: f"> **{c}**",
      "ul": lambda c: "\n".join(f"- {i}" for i in c), "table": _md_table,
      "img": lambda c: f"![{c[1]}](plots/{c[0]})\n\n*{c[1]}*"}


def render_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(MD[kind](content) for kind, content in blocks) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
h1{margin:.3em 0}table{border-collapse:collapse;font-size:13px;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{font-size:13px;color:#555}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.5em .8em;font-weight:600}
ul{margin:.4em 0}li{margin:.2em 0}"""


def _html_table(df: pd.DataFrame) -> str:
    esc = html.escape
    cells = df.astype(object).where(df.notna(), "")
    head = "".join(f"<th>{esc(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in cells.values.tolist())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(blocks: list[Block], plots_dir: Path) -> str:
    """A self-contained page: the plots are embedded as base64 data URIs."""
    esc = html.escape

    def img(content) -> str:
        name, caption = content
        data = base64.b64encode((plots_dir / name).read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}" data-plot="{esc(name)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>")

    render = {"h1": lambda c: f"<h1>{esc(c)}</h1>", "h2": lambda c: f"<h2>{esc(c)}</h2>",
              "p": lambda c: f"<p>{esc(c)}</p>", "banner": lambda c: f'<div class="banner" id="smoke">{esc(c)}</div>',
              "ul": lambda c: "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in c) + "</ul>",
              "table": _html_table, "img": img}
    title = next((c for k, c in blocks if k == "h1"), "switchpoint report")
    body = "\n".join(render[kind](content) for kind, content in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
