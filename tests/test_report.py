"""The report job on synthetic run folders with known answers (the store layout of docs/DESIGN.md)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.core.contract import JobError
from switchpoint.core.predictions import Arm
from switchpoint.report import job as report
from switchpoint.report.settings import ReportSettings

EXAMPLES = 10
SETTINGS = ReportSettings(resamples=1000)


def ones(*ids: int) -> list[float]:
    """Per-example scores of EXAMPLES examples: 1 for the listed ids, 0 otherwise."""
    return [1.0 if i in ids else 0.0 for i in range(EXAMPLES)]


def first(k: int) -> list[float]:
    return ones(*range(k))


def make_run(root: Path, arms: dict[Arm, list[float]], errors: dict[Arm, int] | None = None,
             metrics: tuple[str, ...] = ("f1",)) -> Path:
    """A run folder with data/task.json and scores/scores.jsonl (every metric gets the same scores)."""
    run = root / "store" / "smoke" / "jsquad"
    (run / "data").mkdir(parents=True, exist_ok=True)
    (run / "data" / "task.json").write_text(json.dumps({"name": "jsquad", "metrics": list(metrics),
                                                       "primary_metric": metrics[0]}), encoding="utf-8")
    (run / "scores").mkdir(parents=True, exist_ok=True)
    with (run / "scores" / "scores.jsonl").open("w", encoding="utf-8") as out:
        for arm, values in arms.items():
            bad = (errors or {}).get(arm, 0)
            for i, value in enumerate(values):
                record = {"id": f"q{i}", "arm": arm.to_dict(), **{m: value for m in metrics}}
                if i < bad:
                    record["error"] = "ThrottlingException"
                out.write(json.dumps(record) + "\n")
    return run


def ft(n: int, seed: int = 0, model: str = "m") -> Arm:
    return Arm("finetune", model, n, seed)


def api(k: int, seed: int = 0, model: str = "claude-haiku-4.5") -> Arm:
    return Arm("fewshot-api", model, k, seed)


def transition(an: report.Analysis, model: str = "m") -> dict:
    rows = an.transitions[an.transitions.model == model].to_dict("records")
    assert len(rows) == 1
    return rows[0]


def analyse(tmp_path: Path, arms: dict, settings: ReportSettings = SETTINGS, **kwargs) -> report.Analysis:
    run = make_run(tmp_path, arms, **kwargs)
    return report.write_report(run, tmp_path / "out", settings)


def test_crossover_between_two_sizes_is_interpolated_and_matched(tmp_path):
    arms = {ft(0): first(1), ft(2): first(2), ft(4): first(3), ft(8): first(5), ft(16): first(7),
            api(0): first(2), api(2): first(4), api(4): first(3)}  # the API's best: 40 with 2 shots
    t = transition(analyse(tmp_path, arms))
    assert t["prompt_shots"] == 2 and t["prompt_mean"] == pytest.approx(40.0)
    assert t["n_star"] == pytest.approx(2 ** 2.5)  # 30 at N=4, 50 at N=8: half-way on log2 N
    assert t["n_match"] == 8  # right wherever the API is from N=8 on: no deficit on any example
    assert t["status"] == "matched" and pd_isnull(t["n_extrapolated"])
    assert t["n_star_low"] <= t["n_star"] <= t["n_star_high"]


def test_a_model_equal_to_the_api_matches_but_is_not_better(tmp_path):
    arms = {ft(2): first(1), ft(4): first(4), ft(8): first(6), api(8): first(4)}
    t = transition(analyse(tmp_path, arms))
    assert t["n_match"] == 4 and t["n_star"] == pytest.approx(4.0)  # identical scores at N=4: a tie, other model
    assert pd_isnull(t["n_superior"])  # superiority needs a lower bound above 0


def test_a_curve_that_dips_below_after_crossing_matches_only_once_it_stays_above(tmp_path):
    arms = {ft(2): first(1), ft(4): first(5), ft(8): first(2), ft(16): first(6), api(4): first(4)}
    t = transition(analyse(tmp_path, arms))
    assert t["n_match"] == 16  # N=4 is above, N=8 falls back below
    assert 8 < t["n_star"] < 16


def test_a_model_is_never_compared_with_itself(tmp_path):
    local = lambda k: Arm("fewshot-local", "m", k, 0)
    arms = {ft(0): first(3), ft(2): first(1), ft(4): first(6), local(0): first(3), local(2): first(1)}
    an = analyse(tmp_path, arms)
    t = transition(an)
    assert t["prompt_kind"] == "fewshot-local" and t["prompt_shots"] == 0
    assert t["n_match"] == 4  # not 0: the base model at N=0 with 0 shots is the prompting arm itself
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "is the prompting arm itself" in text and "no fewshot-api arm was scored" in text


def test_two_seeds_far_apart_give_an_interval_spanning_both(tmp_path):
    arms = {ft(8, 0): first(2), ft(8, 1): first(8), api(4, 0): first(4), api(4, 1): first(4)}
    an = analyse(tmp_path, arms)
    row = an.curve[(an.curve.kind == "finetune") & (an.curve.n == 8)].iloc[0]
    assert row["seeds"] == 2 and row["mean"] == pytest.approx(50.0)
    assert row["ci_low"] <= 20.0 + 1e-9 and row["ci_high"] >= 80.0 - 1e-9
    results = list(csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8")))
    seeds = sorted((r["seed"], float(r["mean"])) for r in results if r["kind"] == "finetune")
    assert seeds == [("0", pytest.approx(20.0)), ("1", pytest.approx(80.0))]


def test_a_flat_tail_gives_no_number_beyond_eight_times_the_sweep(tmp_path):
    many = 100
    flat = lambda k: [1.0 if i < k else 0.0 for i in range(many)]
    arms = {ft(8): flat(10), ft(16): flat(10), ft(32): flat(10), ft(64): flat(11), api(4): flat(60)}
    an = analyse(tmp_path, arms)
    t = transition(an)
    assert t["status"] == "beyond-8x" and pd_isnull(t["n_extrapolated"]) and pd_isnull(t["n_star"])
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "more than 8× the sweep (N > 512" in text


def test_extrapolation_is_marked_and_bounded(tmp_path):
    arms = {ft(2): first(1), ft(4): first(2), ft(8): first(3), ft(16): first(4), api(8): first(6)}
    t = transition(analyse(tmp_path, arms))
    assert t["status"] == "extrapolated" and pd_isnull(t["n_star"])
    assert t["n_extrapolated"] == pytest.approx(64.0)  # 10 points per doubling from 10 at N=2
    assert t["n_extrapolated_low"] <= 64.0
    assert 64.0 <= t["n_extrapolated_high"] or math.isinf(t["n_extrapolated_high"])
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "N ≈ 64 EXTRAPOLATED" in text


def test_one_tier_per_prompting_arm_each_with_its_soonest_model(tmp_path):
    low, high = (lambda k: api(k, model="api-low")), (lambda k: api(k, model="api-high"))
    arms = {ft(2, model="a"): first(1), ft(4, model="a"): first(3), ft(8, model="a"): first(4), ft(16, model="a"): first(5),
            ft(2, model="b"): first(0), ft(4, model="b"): first(2), ft(8, model="b"): first(5), ft(16, model="b"): first(8),
            low(2): first(3), high(2): first(7)}
    an = analyse(tmp_path, arms)
    tiers = {t.model: t for t in an.tiers}
    assert [t.model for t in an.tiers] == ["api-low", "api-high"]  # lowest level first
    assert tiers["api-low"].best["model"] == "a" and tiers["api-low"].best["n_match"] == 4
    assert tiers["api-high"].best["model"] == "b" and tiers["api-high"].best["n_match"] == 16
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "api-low level (30.0" in text and "api-high level (70.0" in text


def test_prompting_knee_is_the_fewest_shots_within_the_best_interval(tmp_path):
    arms = {ft(2): first(1), api(0): first(1), api(2): first(6), api(8): first(7)}
    an = analyse(tmp_path, arms)
    assert an.tiers[0].knee == (2, pytest.approx(60.0))


def test_reference_shots_that_no_arm_ran_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path, {ft(2): first(1), api(0): first(2), api(8): first(9)})
    with pytest.raises(JobError, match=r"^--reference 64: fewshot-api claude-haiku-4.5 has no 64-shot arm"):
        report.write_report(run, tmp_path / "out", ReportSettings(reference="64", resamples=500))
    an = report.write_report(run, tmp_path / "out", ReportSettings(reference="0", resamples=500))
    assert transition(an)["prompt_shots"] == 0


def test_missing_scores_is_a_job_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(JobError, match="scores.jsonl: missing"):
        report.write_report(run, tmp_path / "out", SETTINGS)


def test_summary_csv_values_are_used_for_per_seed_rows(tmp_path):
    arms = {ft(2): first(1), ft(4): first(5), api(2): first(4)}
    run = make_run(tmp_path, arms)
    (run / "scores" / "summary.csv").write_text(
        "task,kind,model,n,seed,variant,metric,mean,ci_low,ci_high,count,errors\n"
        "jsquad,finetune,m,2,0,,f1,10.0,1.5,33.3,10,0\n", encoding="utf-8")
    an = report.write_report(run, tmp_path / "out", SETTINGS)
    row = an.per_seed[(an.per_seed.kind == "finetune") & (an.per_seed.n == 2)].iloc[0]
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(1.5), pytest.approx(33.3))


def _full_run(tmp_path: Path, model: str = "m") -> Path:
    """A run with every input: scores (errors included), train/infer/bedrock metrics, runs/*.json."""
    m = model
    local = [ft(0, model=m), ft(2, model=m), ft(4, model=m), ft(8, model=m), Arm("fewshot-local", m, 0, 0)]
    arms = dict(zip(local, [first(1), first(2), first(3), first(5), first(1)]))
    arms.update({api(0): first(2), api(8): first(4)})
    run = make_run(tmp_path, arms, errors={api(8): 1}, metrics=("exact_match", "f1"))

    def write(rel: str, value) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(value), encoding="utf-8")

    for n, wall in ((2, 100.0), (4, 200.0), (8, 300.0)):
        write(f"train/{m}/checkpoints/adapters/seed=0/n={n}/train_metrics.json",
              {"model": m, "n": n, "seed": 0, "wall_s": wall, "gpu_seconds": wall, "trained_tokens": 100 * n})
    write(f"train/{m}/checkpoints/adapters/train_summary.json", {"model": m, "wall_s": 720.0, "adapters": []})
    write(f"runs/train-{m}.json", {"step": f"train-{m}", "instance_type": "ml.g5.2xlarge", "wall_s": 720.0,
                                   "billable_s": 720.0, "spot": False, "status": "Completed"})
    write(f"predictions/local/{m}/infer_metrics.json", {
        "model": m, "wall_s": 100.0, "arms": [
            {"arm": a.to_dict(), "examples": EXAMPLES, "wall_s": 20.0, "input_tokens": 1000, "output_tokens": 50,
             "skipped": None, "shared_pass": a.n == 0} for a in local] + [
            {"arm": Arm("fewshot-local", m, 8, 0).to_dict(), "examples": 0, "wall_s": 0.0,
             "skipped": "context guard: prompt 3000 tokens > context 2048"}]})
    write("predictions/bedrock/claude-haiku-4.5/bedrock_metrics.json", {
        "api_model": "claude-haiku-4.5", "records_ok": 19, "records_error": 1, "arms": [
            {"arm": api(0).to_dict(), "mode": "on-demand", "records": EXAMPLES, "input_tokens": 5000, "output_tokens": 200,
             "usd": 0.006, "skipped": None},
            {"arm": api(8).to_dict(), "mode": "on-demand", "records": EXAMPLES, "input_tokens": 45000, "output_tokens": 200,
             "usd": 0.046, "skipped": None},
            {"arm": api(32).to_dict(), "mode": None, "records": 0, "skipped": "context guard"}]})
    return run


SWEEP = {"name": "smoke", "train": {"instance_type": "local"}, "infer": {"instance_type": "ml.g5.2xlarge"},
         "score": {"bootstrap": 1000}}


def test_full_report_files_costs_and_what_was_not_measured(tmp_path):
    run = _full_run(tmp_path)
    out = tmp_path / "out"
    an = report.write_report(run, out, ReportSettings(resamples=1000, label_usd=0.5, volume=1000), sweep=SWEEP)
    for name in ("results.csv", "transitions.csv", "report.md", "report.html", "plots/f1_vs_n.png",
                 "plots/exact_match_vs_n.png", "plots/cost_vs_n.png", "plots/f1_per_usd_vs_n.png",
                 "plots/monthly_cost_0_claude-haiku-4_5.png"):
        assert (out / name).stat().st_size > 0, name
    results = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(results) == 7 * 2  # 7 arms x 2 metrics, one seed
    ft8 = next(r for r in results if r["kind"] == "finetune" and r["n"] == "8" and r["metric"] == "f1")
    # training: runs/train-m.json 720 billable s on g5.2xlarge = $0.303, N=8 has 300 of 600 adapter seconds
    assert float(ft8["train_usd"]) == pytest.approx(0.303 * 0.5)
    # inference: 100 s on g5.2xlarge; the 0-shot pass shared by two arms is one pass: four passes of 20 s
    pass_usd = 100 / 3600 * 1.515 / 4
    assert float(ft8["infer_usd"]) == pytest.approx(pass_usd)
    base = next(r for r in results if r["kind"] == "finetune" and r["n"] == "0" and r["metric"] == "f1")
    assert float(base["infer_usd"]) == pytest.approx(pass_usd / 2)  # charged once, split between its two arms
    a8 = next(r for r in results if r["kind"] == "fewshot-api" and r["n"] == "8" and r["metric"] == "f1")
    assert float(a8["api_usd"]) == pytest.approx(45000 / 1e6 * 1.0 + 200 / 1e6 * 5.0)
    assert a8["errors"] == "1" and a8["input_tokens"] == "45000"

    t = an.transitions[an.transitions.metric == "f1"].iloc[0]
    assert t["n_star"] == pytest.approx(2 ** 2.5) and t["n_match"] == 8 and t["decision_n"] == 8
    per_req_ft = pass_usd / EXAMPLES
    per_req_api = (45000 * 1.0 + 200 * 5.0) / 1e6 / EXAMPLES
    one_off = 0.1515 + 0.5 * 8  # training at N=8 + labelling 8 examples at $0.50
    assert t["one_off_usd"] == pytest.approx(one_off)
    assert t["breakeven_monthly_requests"] == pytest.approx(one_off / (per_req_api - per_req_ft))
    assert t["prompt_per_1k_usd_batch"] == pytest.approx(per_req_api * 1000 / 2)

    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## What was not measured" in text and "one seed per fine-tuned size" in text
    assert "context guard: prompt 3000 tokens > context 2048" in text
    assert "1 of 10 records in error" in text
    assert "claude-haiku-4.5 level (40.0 [" in text and "fine-tuned m at N ≈ 6 (95% interval" in text
    assert "At 1,000 requests a month" in text and "SMOKE" not in text
    assert text.index("## Answer") < text.index("## Plots") < text.index("## All transitions")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 6 and 'src="plots/' not in html  # 2 metrics x 2 + 2 cost


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); cannot render the HTML headless")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000"]
    done = subprocess.run([browser, *flags, *args], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_html_renders_in_headless_chromium_with_banner_headline_and_every_plot(tmp_path):
    run = _full_run(tmp_path, model="tiny-gpt-neox")  # a packaged tiny model: a smoke run
    out = tmp_path / "out"
    an = report.write_report(run, out, SETTINGS)
    # The page is copied aside with a probe that records, after load, what rendered.
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "const b=document.getElementById('smoke');const t=document.querySelector('table');"
             "document.body.setAttribute('data-probe',[i.length,i.filter(x=>x.complete&&x.naturalWidth>0).length,"
             "b&&b.offsetHeight>0?1:0,t?t.innerText.includes('claude-haiku-4.5 level'):false].join(':'));});"
             "</script></body>")
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    done = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    marker = done.stdout.split('data-probe="', 1)
    assert len(marker) == 2, f"probe did not run; stderr: {done.stderr[-1000:]}"
    total, loaded, banner, headline = marker[1].split('"', 1)[0].split(":")
    assert int(total) == len(list((out / "plots").glob("*.png"))) == 6 and int(loaded) == int(total)
    assert banner == "1" and headline == "true"
    assert an.tiny_models == ["tiny-gpt-neox"]
    shot = tmp_path / "first-screen.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,900", (out / "report.html").as_uri()], tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_with_store_publishes_the_report(tmp_path):
    _full_run(tmp_path)
    store = tmp_path / "store"
    result = CliRunner().invoke(report.command, ["--store", str(store), "--sweep", "smoke", "--task", "jsquad",
                                                 "--resamples", "500", "--ml-root", str(tmp_path / "ml")])
    assert result.exit_code == 0, result.output
    published = store / "smoke" / "jsquad" / "report"
    listed = json.loads((published / "_SUCCESS").read_text(encoding="utf-8"))["files"]
    assert {"results.csv", "transitions.csv", "report.md", "report.html", "plots/cost_vs_n.png"} <= set(listed)
    assert "-> " + str(published) in result.output


@pytest.mark.parametrize("option, value, expected", [
    ("--margin", "-1", "--margin='-1' is invalid"), ("--reference", "most", "--reference='most' is invalid"),
    ("--amortize-months", "0", "--amortize-months='0' is invalid"), ("--volume", "abc", "--volume='abc' is invalid"),
    ("--label-usd", "-0.5", "--label-usd='-0.5' is invalid")])
def test_bad_options_are_one_line_errors_without_output(tmp_path, option, value, expected):
    run = _full_run(tmp_path)
    result = CliRunner().invoke(report.command, ["--run", str(run), "--out", str(tmp_path / "out"), option, value,
                                                 "--ml-root", str(tmp_path / "ml")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: report: command line: ") and expected in lines[0]
    assert not (tmp_path / "out" / "report.html").exists()


def test_cli_job_layout_defaults_and_failure_file(tmp_path):
    ml = tmp_path / "ml"
    (ml / "processing" / "input" / "run").mkdir(parents=True)
    result = CliRunner().invoke(report.command, ["--ml-root", str(ml)])
    assert result.exit_code == 1
    assert "scores.jsonl: missing" in (ml / "output" / "failure").read_text(encoding="utf-8")
    run = _full_run(tmp_path)
    shutil.rmtree(ml / "processing" / "input" / "run")
    shutil.copytree(run, ml / "processing" / "input" / "run")
    result = CliRunner().invoke(report.command, ["--ml-root", str(ml), "--resamples", "500"])
    assert result.exit_code == 0, result.output
    assert (ml / "processing" / "output" / "report.html").exists()


def pd_isnull(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_a_request_count_is_rounded_up_but_not_by_float_noise():
    from switchpoint.report.document import fmt_requests

    assert fmt_requests(0.1 * 3 / (0.3 - 0.1) * 1000) == "1,500"  # 1500.0000000000005 in floats
    assert fmt_requests(2500.2) == "2,501" and fmt_requests(math.inf) == "never"
