"""The report job on synthetic run folders with known answers (DESIGN.md layout)."""

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

EXAMPLES = 10
SETTINGS = report.ReportSettings(resamples=1000)


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


def analyse(tmp_path: Path, arms: dict, **kwargs) -> report.Analysis:
    run = make_run(tmp_path, arms, **kwargs)
    return report.write_report(run, tmp_path / "out", SETTINGS)


def test_crossover_between_two_sizes_is_interpolated_and_confident(tmp_path):
    arms = {ft(0): first(1), ft(2): first(2), ft(4): first(3), ft(8): first(5), ft(16): first(7),
            api(0): first(2), api(2): first(4), api(4): first(3)}  # the API's best: 40 with 2 shots
    t = transition(analyse(tmp_path, arms))
    assert t["prompt_shots"] == 2 and t["prompt_mean"] == pytest.approx(40.0)
    assert t["n_cross"] == pytest.approx(2 ** 2.5)  # 30 at N=4, 50 at N=8: half-way on log2 N
    assert t["n_cross_measured"] == 8
    assert t["n_cross_confident"] == 8  # the fine-tuned arm is right wherever the API is: no deficit
    assert t["status"] == "confident" and pd_isnull(t["n_cross_extrapolated"])


def test_reached_in_the_mean_but_not_with_confidence(tmp_path):
    arms = {ft(2): ones(9), ft(8): ones(5, 6, 7, 8, 9), ft(16): ones(4, 5, 6, 7, 8, 9),
            api(4): ones(0, 1, 2, 3)}  # fine-tuned wins 5-6 examples, loses the API's 4: interval spans 0
    t = transition(analyse(tmp_path, arms))
    assert t["n_cross_measured"] == 8 and t["n_cross"] == pytest.approx(2 ** (1 + 2 * 3 / 4))
    assert pd_isnull(t["n_cross_confident"]) and t["status"] == "mean-only"
    assert pd_isnull(t["n_cross_extrapolated"])


def test_not_reached_in_the_sweep_is_extrapolated_and_marked(tmp_path):
    arms = {ft(0): first(0), ft(2): first(1), ft(4): first(2), ft(8): first(3), ft(16): first(4), api(8): first(6)}
    an = analyse(tmp_path, arms)
    t = transition(an)
    assert t["status"] == "extrapolated" and pd_isnull(t["n_cross"]) and pd_isnull(t["n_cross_confident"])
    assert t["n_cross_extrapolated"] == pytest.approx(64.0)  # 10 points per doubling from 10 at N=2
    assert t["fit_form"] == "mean = a + b*log2(N)" and t["fit_points"] == "2,4,8,16"
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "EXTRAPOLATED" in text and "64 (extrapolated)" in text
    rows = list(csv.DictReader((tmp_path / "out" / "transitions.csv").open(encoding="utf-8")))
    assert rows[0]["n_cross"] == "" and float(rows[0]["n_cross_extrapolated"]) == pytest.approx(64.0)


def test_a_tie_counts_as_reached_with_confidence_when_scores_are_identical(tmp_path):
    arms = {ft(2): first(1), ft(4): first(4), ft(8): first(6), api(8): first(4)}
    t = transition(analyse(tmp_path, arms))
    assert t["n_cross"] == 4.0 and t["n_cross_measured"] == 4 and t["n_cross_confident"] == 4


def test_non_monotonic_curve_uses_the_first_crossing(tmp_path):
    arms = {ft(2): first(1), ft(4): first(5), ft(8): first(2), ft(16): first(6), api(4): first(4)}
    t = transition(analyse(tmp_path, arms))
    assert t["n_cross_measured"] == 4 and t["n_cross"] == pytest.approx(2 ** 1.75)


def test_several_seeds_are_averaged_per_n(tmp_path):
    arms = {ft(2, 0): first(1), ft(2, 1): first(1), ft(8, 0): first(2), ft(8, 1): first(6),
            api(4, 0): first(4), api(4, 1): first(4)}
    an = analyse(tmp_path, arms)
    t = transition(an)
    assert t["n_cross"] == 8.0  # seed 0 (20) alone would not reach 40; the seed average (40) ties it
    curve = an.curve[(an.curve.kind == "finetune") & (an.curve.n == 8)].iloc[0]
    assert curve["seeds"] == 2 and curve["mean"] == pytest.approx(40.0)
    results = list(csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8")))
    seeds = sorted((r["n"], r["seed"], r["mean"]) for r in results if r["kind"] == "finetune" and r["n"] == "8")
    assert [(s, float(m)) for _, s, m in seeds] == [("0", 20.0), ("1", 60.0)]


def test_without_an_api_arm_the_local_few_shot_arm_is_the_prompting_side(tmp_path):
    arms = {ft(0): first(0), ft(2): first(2), ft(4): first(6), Arm("fewshot-local", "m", 0, 0): first(1),
            Arm("fewshot-local", "m", 2, 0): first(3)}
    an = analyse(tmp_path, arms)
    t = transition(an)
    assert t["prompt_kind"] == "fewshot-local" and t["prompt_shots"] == 2 and t["n_cross_measured"] == 4
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "no fewshot-api arm was scored" in text


def test_fixed_reference_shots(tmp_path):
    arms = {ft(2): first(1), ft(4): first(3), api(0): first(2), api(8): first(9)}
    run = make_run(tmp_path, arms)
    an = report.write_report(run, tmp_path / "out", report.ReportSettings(reference="0", resamples=500))
    t = transition(an)
    assert t["prompt_shots"] == 0 and t["n_cross_measured"] == 4


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
    assert (row["ci_low"], row["ci_high"]) == (1.5, 33.3)


def _full_run(tmp_path: Path) -> Path:
    """A run with every input: scores (errors included), train/infer/bedrock metrics, runs/*.json."""
    arms = {ft(0): first(1), ft(2): first(2), ft(4): first(3), ft(8): first(5),
            Arm("fewshot-local", "m", 0, 0): first(1), api(0): first(2), api(8): first(4)}
    run = make_run(tmp_path, arms, errors={api(8): 1}, metrics=("exact_match", "f1"))

    def write(rel: str, value) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(value), encoding="utf-8")

    for n, wall in ((2, 100.0), (4, 200.0), (8, 300.0)):
        write(f"train/m/checkpoints/adapters/seed=0/n={n}/train_metrics.json", {"model": "m", "n": n, "seed": 0, "wall_s": wall,
                                                              "gpu_seconds": wall, "trained_tokens": 100 * n})
    write("train/m/checkpoints/adapters/train_summary.json", {"model": "m", "wall_s": 720.0, "adapters": []})
    write("runs/train-m.json", {"step": "train-m", "instance_type": "ml.g5.2xlarge", "wall_s": 720.0,
                                "billable_s": 720.0, "spot": False, "status": "Completed"})
    local = [ft(0), ft(2), ft(4), ft(8), Arm("fewshot-local", "m", 0, 0)]
    write("predictions/local/m/infer_metrics.json", {
        "model": "m", "wall_s": 100.0, "arms": [
            {"arm": a.to_dict(), "examples": EXAMPLES, "wall_s": 20.0, "input_tokens": 1000, "output_tokens": 50,
             "skipped": None} for a in local] + [
            {"arm": Arm("fewshot-local", "m", 8, 0).to_dict(), "examples": 0, "wall_s": 0.0,
             "skipped": "context guard: prompt 3000 tokens > context 2048"}]})
    write("predictions/bedrock/claude-haiku-4.5/bedrock_metrics.json", {
        "api_model": "claude-haiku-4.5", "records_ok": 19, "records_error": 1, "arms": [
            {"arm": api(0).to_dict(), "mode": "on-demand", "records": EXAMPLES, "input_tokens": 5000, "output_tokens": 200, "usd": 0.006, "skipped": None},
            {"arm": api(8).to_dict(), "mode": "on-demand", "records": EXAMPLES, "input_tokens": 45000, "output_tokens": 200, "usd": 0.046, "skipped": None},
            {"arm": api(32).to_dict(), "mode": None, "records": 0, "skipped": "context guard"}]})
    return run


def test_full_report_files_costs_and_what_was_not_measured(tmp_path):
    run = _full_run(tmp_path)
    out = tmp_path / "out"
    an = report.write_report(run, out, SETTINGS, sweep={"name": "smoke", "train": {"instance_type": "local"},
                                                        "infer": {"instance_type": "ml.g5.2xlarge"},
                                                        "score": {"bootstrap": 1000}})
    for name in ("results.csv", "transitions.csv", "report.md", "report.html", "plots/f1_vs_n.png",
                 "plots/exact_match_vs_n.png", "plots/cost_vs_n.png", "plots/f1_per_usd_vs_n.png"):
        assert (out / name).stat().st_size > 0, name
    results = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(results) == 7 * 2  # 7 arms x 2 metrics, one seed
    ft8 = next(r for r in results if r["kind"] == "finetune" and r["n"] == "8" and r["metric"] == "f1")
    # training: runs/train-m.json 720 billable s on g5.2xlarge = $0.303, N=8 has 300 of 600 adapter seconds
    assert float(ft8["train_usd"]) == pytest.approx(0.303 * 0.5)
    # inference: 100 s on g5.2xlarge = $0.042083.., five equal arms
    assert float(ft8["infer_usd"]) == pytest.approx(100 / 3600 * 1.515 / 5)
    assert float(ft8["eval_usd"]) == pytest.approx(0.1515 + 100 / 3600 * 1.515 / 5)
    a8 = next(r for r in results if r["kind"] == "fewshot-api" and r["n"] == "8" and r["metric"] == "f1")
    assert float(a8["api_usd"]) == pytest.approx(45000 / 1e6 * 1.0 + 200 / 1e6 * 5.0)
    assert a8["errors"] == "1" and a8["input_tokens"] == "45000"

    t = an.transitions[an.transitions.metric == "f1"].iloc[0]
    assert t["n_cross"] == pytest.approx(2 ** 2.5) and t["n_cross_measured"] == 8
    per_req_ft = (100 / 3600 * 1.515 / 5) / EXAMPLES
    per_req_api = (45000 * 1.0 + 200 * 5.0) / 1e6 / EXAMPLES
    assert t["breakeven_monthly_requests"] == pytest.approx(0.1515 / (per_req_api - per_req_ft))
    assert t["prompt_per_1k_usd_batch"] == pytest.approx(per_req_api * 1000 / 2)

    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## What was not measured" in text
    assert "context guard: prompt 3000 tokens > context 2048" in text
    assert "1 of 10 records in error" in text
    assert "Fine-tuned m matches claude-haiku-4.5 with 8 shots at N ≈ 5.7 examples" in text
    assert "Recommendation:" in text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 5 and 'src="plots/' not in html  # 2 metrics x 2 + cost


def test_html_renders_in_headless_chromium_with_every_image_loaded(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); cannot render the HTML headless")
    run = _full_run(tmp_path)
    out = tmp_path / "out"
    report.write_report(run, out, SETTINGS)
    # The page is copied aside with a probe that records, after load, how many images decoded.
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-images',i.length+':'+i.filter(x=>x.complete&&x.naturalWidth>0).length);});"
             "</script></body>")
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    marker = done.stdout.split('data-images="', 1)
    assert len(marker) == 2, f"probe did not run; stderr: {done.stderr[-1000:]}"
    total, loaded = map(int, marker[1].split('"', 1)[0].split(":"))
    assert total == 5 and loaded == total


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
