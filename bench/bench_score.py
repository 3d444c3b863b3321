"""Scoring benchmark on one core: JSQuAD EM+F1, XLSum ROUGE with MeCab, and the bootstrap.

Targets (issue 3): >= 20,000 JSQuAD pairs/s (exact_match + f1), >= 1,000 XLSum pairs/s (rouge1,
rouge2, rougeL including MeCab), 10,000 bootstrap resamples over 5,000 examples in < 1 s.

Pairs are built from the bundled data (manifests/data), since the full sets need the network:
- JSQuAD, 4,442 pairs: the 1,372 bundled questions (eval + train files) cycled; the k-th pass
  turns each question's first gold into a different prediction (exact, trailing 。, 「」 around it,
  first half, gold plus a clause, another question's gold, empty, spaced out), so predictions rarely
  repeat, and the references are all the question's golds (as in scoring several arms).
- XLSum, 889 pairs: the 450 bundled summaries cycled; predictions are another summary (shuffled),
  the summary cut to 70%, the article's first 120 characters, or the summary itself.
Tokenisation caches are cleared before every timed run; MeCab's tagger and the imports are made
once beforehand and timed apart (startup_s). Best and median of REPEATS runs are reported.

The score job (issue 15: within 2x of its metrics' own cost) on 20,000 records, 16 arms of 1,250
JSQuAD questions, as RATIO lines against baselines run in this process: the job against its metrics
alone (interleaved runs); its record check (compiled pydantic parse+check, once where records enter)
against v0.1's json.loads + jsonschema; its bootstrap (one shared counts matrix, one product for every
arm and metric) against v0.1's fresh indices per arm and metric and against one product per column.

Run: .venv/bin/python bench/bench_score.py   (writes bench/results/score.json)
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"  # one core, before numpy loads

import contextlib
import io
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import print_ratio, save_results
from switchpoint.core import stats
from switchpoint.core.manifests import bundled_dir
from switchpoint.score import metrics

REPEATS = 5
JSQUAD_PAIRS, XLSUM_PAIRS = 4_442, 889
TARGETS = {"jsquad_pairs_per_s": 20_000, "xlsum_pairs_per_s": 1_000, "bootstrap_10k_x_5k_s": 1.0}
RESULTS = Path(__file__).resolve().parent / "results" / "score.json"


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity here)"


def jsquad_pairs() -> tuple[list[str], list[list[str]]]:
    questions = []
    for name in ("eval.json", "train.json"):
        data = json.loads((bundled_dir() / "jsquad" / name).read_text(encoding="utf-8"))
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    questions.append([a["text"] for a in qa["answers"]])
    rng = random.Random(0)
    perturb = [
        lambda g, o: g,
        lambda g, o: g + "。",
        lambda g, o: f"「{g}」",
        lambda g, o: g[: max(1, len(g) // 2)],
        lambda g, o: g + "であると考えられる",
        lambda g, o: o,
        lambda g, o: "",
        lambda g, o: " ".join(g),
    ]
    preds, refs = [], []
    for i in range(JSQUAD_PAIRS):
        golds = questions[i % len(questions)]
        other = questions[rng.randrange(len(questions))][0]
        preds.append(perturb[(i // len(questions) + i) % len(perturb)](golds[0], other))
        refs.append(golds)
    return preds, refs


def xlsum_pairs() -> tuple[list[str], list[list[str]]]:
    rows = []
    for name in ("eval.jsonl", "train.jsonl"):
        for line in (bundled_dir() / "xlsum" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    rng = random.Random(0)
    shuffled = [r["summary"] for r in rows]
    rng.shuffle(shuffled)
    preds, refs = [], []
    for i in range(XLSUM_PAIRS):
        row = rows[i % len(rows)]
        summary = row["summary"]
        kind = (i // len(rows) + i) % 4
        preds.append([shuffled[i % len(rows)], summary[: int(len(summary) * 0.7)], row["text"][:120], summary][kind])
        refs.append([summary])
    return preds, refs


def timed(fn, repeats: int = REPEATS) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of this process) per run. CPU time is what one core spends; wall
    time also counts waiting for the core when other work shares the machine (see load_average)."""
    wall, cpu = [], []
    for _ in range(repeats):
        metrics.clear_caches()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def median_runs(fns: dict, repeats: int = REPEATS) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each function, the functions run in turn (interleaved), caches cleared."""
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            metrics.clear_caches()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall_s": round(statistics.median(wall[name]), 4), "cpu_s": round(statistics.median(cpu[name]), 4)}
            for name in fns}


def v01_resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The v0.1 bootstrap, the baseline: fresh resample indices for every arm and metric, mean of values[idx]."""
    n = len(values)
    rng = np.random.default_rng(seed)
    rows = max(1, 4_000_000 // n)
    out = np.empty(resamples)
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(resamples, start + rows) - start, n))
        out[start:start + len(idx)] = values[idx].mean(axis=1)
    return out


def v01_check(line: str, where: str) -> dict:
    """The v0.1 record check, the baseline: json.loads, then a jsonschema walk of the record."""
    from switchpoint.core.predictions import _validator

    record = json.loads(line)
    errors = list(_validator().iter_errors(record))
    if errors:
        raise ValueError(f"{where}: {errors[0].message}")
    return record


def ratio(what: str, before: str, before_s: float, after: str, after_s: float, target: str | None = None) -> dict:
    """One before/after pair as saved in score.json (and printed by print_ratio)."""
    return {"what": what, "before": before, "before_s": before_s, "after": after, "after_s": after_s,
            "ratio": round(before_s / after_s, 2), "target": target}


def score_job_section(tmp: Path, jq_preds: list[str], jq_refs: list[list[str]]) -> dict:
    """The score job on 20,000 records (16 arms of 1,250 questions, the JSQuAD pairs cycled, as one sweep's
    score step sees them) against its metrics alone, and its record check and bootstrap against v0.1's."""
    from switchpoint.core.predictions import (
        Arm,
        parse_record,
        prediction_record,
        write_predictions,
    )
    from switchpoint.score import job as score

    per_arm, arms, names = 1_250, 16, ["exact_match", "f1", "f1_mecab"]
    preds, refs = jq_preds[:per_arm], jq_refs[:per_arm]
    folder = tmp / "preds"
    for a in range(arms):
        arm = Arm("finetune", "bench", a, 0)
        write_predictions(folder / arm.filename, [prediction_record(arm, f"q{i}", preds[i], refs[i])
                                                  for i in range(per_arm)])
    settings = score.ScoreSettings(task="jsquad", predictions=[str(folder)], out=str(tmp / "out"))
    reports = []

    def run_job() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            reports.append(score.score_predictions(settings))

    job = median_runs({"metrics_alone": lambda: [metrics.score_batch(names, preds, refs) for _ in range(arms)],
                       "score_job": run_job})
    lines = [(f"{path}:{i}", line) for path in sorted(folder.glob("*.jsonl"))
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
    checks = median_runs({"v01": lambda: [v01_check(line, where) for where, line in lines],
                          "now": lambda: [parse_record(line, where) for where, line in lines]}, 3)

    with contextlib.redirect_stderr(io.StringIO()):
        _, names, _, arm_records, _ = score.load_inputs(settings)
        scores = score.score_arms(arm_records, names)
    matrix = np.column_stack([scores[a][m] for a in sorted(arm_records, key=score.arm_key) for m in names])
    boot = settings.bootstrap
    old_intervals = []

    def v01() -> None:
        old_intervals[:] = [np.percentile(v01_resampled_means(matrix[:, k], boot, settings.seed), [2.5, 97.5]) * 100
                            for k in range(matrix.shape[1])]

    def per_column() -> None:
        shared = stats.Resamples(per_arm, boot, settings.seed)
        for k in range(matrix.shape[1]):
            stats.bootstrap_ci(matrix[:, k], shared)

    new_intervals = []

    def one_product() -> None:
        new_intervals[:] = stats.bootstrap_cis(matrix, stats.Resamples(per_arm, boot, settings.seed))

    bootstrap = median_runs({"v01": v01, "per_column": per_column, "one_product": one_product}, 3)
    largest = max(abs(o[i] - (n.ci_low, n.ci_high)[i]) for o, n in zip(old_intervals, new_intervals) for i in (0, 1))
    what = f"score bootstrap, {arms} arms x {len(names)} metrics x {boot:,} resamples of {per_arm:,} examples"
    ratios = {
        "validation": ratio(f"score record check, {len(lines):,} records", "json.loads + jsonschema (v0.1)",
                            checks["v01"]["wall_s"], "compiled pydantic parse+check", checks["now"]["wall_s"]),
        "bootstrap_v01": ratio(what, "fresh indices per arm and metric (v0.1)", bootstrap["v01"]["wall_s"],
                               "one shared counts matrix, one product", bootstrap["one_product"]["wall_s"]),
        "bootstrap_per_column": ratio(what, "shared counts, one product per arm and metric",
                                      bootstrap["per_column"]["wall_s"], "one product for all",
                                      bootstrap["one_product"]["wall_s"]),
        "job_over_metrics": ratio(f"score job over its metrics, {len(lines):,} records", "score job",
                                  job["score_job"]["wall_s"], "metrics alone", job["metrics_alone"]["wall_s"], "<= 2x"),
    }
    report = reports[-1]
    return {"records": report["records"], "metrics": report["metrics"], "resamples": report["bootstrap"],
            "score_job_s": job["score_job"], "metrics_alone_s": job["metrics_alone"],
            "job_over_metrics": round(job["score_job"]["wall_s"] / job["metrics_alone"]["wall_s"], 2),
            "job_over_metrics_cpu": round(job["score_job"]["cpu_s"] / job["metrics_alone"]["cpu_s"], 2),
            "target_job_over_metrics": 2.0, "record_check_s": checks,
            "bootstrap": {**bootstrap, "largest_interval_end_difference_points": round(float(largest), 3)},
            "ratios": ratios}


def main() -> dict:
    where = pin_one_core()
    load_before = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    metrics.tagger()
    metrics.rouge_scorer(metrics.ROUGE_TYPES)
    metrics.harness_tokens("起動")
    startup_s = time.perf_counter() - start

    jq_preds, jq_refs = jsquad_pairs()
    xs_preds, xs_refs = xlsum_pairs()
    jq = timed(lambda: metrics.score_batch(["exact_match", "f1"], jq_preds, jq_refs))
    jq_mecab = timed(lambda: metrics.score_batch(["f1_mecab"], jq_preds, jq_refs))
    xs = timed(lambda: metrics.score_batch(list(metrics.ROUGE_TYPES), xs_preds, xs_refs))
    values = np.random.default_rng(0).random(5_000)
    boot = timed(lambda: stats.bootstrap_ci(values, 10_000, 0))
    paired = timed(lambda: stats.paired_difference({str(i): v for i, v in enumerate(values)},
                                                   {str(i): 1 - v for i, v in enumerate(values)}, 10_000, 0))

    with tempfile.TemporaryDirectory() as tmp:
        job = score_job_section(Path(tmp), jq_preds, jq_refs)

    def rate(n: int, runs: tuple[list[float], list[float]]) -> dict:
        wall, cpu = runs
        return {"median_pairs_per_s": round(n / statistics.median(wall), 1), "best_pairs_per_s": round(n / min(wall), 1),
                "median_pairs_per_cpu_s": round(n / statistics.median(cpu), 1),
                "median_s": round(statistics.median(wall), 4), "median_cpu_s": round(statistics.median(cpu), 4)}

    def secs(runs: tuple[list[float], list[float]]) -> dict:
        wall, cpu = runs
        return {"median": round(statistics.median(wall), 4), "best": round(min(wall), 4),
                "median_cpu": round(statistics.median(cpu), 4)}

    result = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpu": where, "threads": 1,
                    "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)]},
        "pairs": {"jsquad": JSQUAD_PAIRS, "xlsum": XLSUM_PAIRS,
                  "how": "built from the bundled manifests/data samples (see the module docstring)"},
        "startup_s": round(startup_s, 3),
        "jsquad_exact_match_f1": rate(JSQUAD_PAIRS, jq),
        "jsquad_f1_mecab": rate(JSQUAD_PAIRS, jq_mecab),
        "xlsum_rouge_with_mecab": rate(XLSUM_PAIRS, xs),
        "bootstrap_10k_x_5k_s": secs(boot),
        "paired_bootstrap_10k_x_5k_s": secs(paired),
        "job_jsquad_20k": job,
        "implementation": metrics.implementation(list(metrics.METRICS)),
        "repeats": REPEATS,
    }
    result["targets"] = {
        "jsquad_pairs_per_s": {"target": TARGETS["jsquad_pairs_per_s"],
                               "wall_median": result["jsquad_exact_match_f1"]["median_pairs_per_s"],
                               "cpu_median": result["jsquad_exact_match_f1"]["median_pairs_per_cpu_s"]},
        "xlsum_pairs_per_s": {"target": TARGETS["xlsum_pairs_per_s"],
                              "wall_median": result["xlsum_rouge_with_mecab"]["median_pairs_per_s"],
                              "cpu_median": result["xlsum_rouge_with_mecab"]["median_pairs_per_cpu_s"]},
        "bootstrap_10k_x_5k_s": {"target": TARGETS["bootstrap_10k_x_5k_s"],
                                 "wall_median": result["bootstrap_10k_x_5k_s"]["median"],
                                 "cpu_median": result["bootstrap_10k_x_5k_s"]["median_cpu"]},
    }
    for name, item in result["targets"].items():
        if name.endswith("per_s"):
            item["met_wall"], item["met_cpu"] = item["wall_median"] >= item["target"], item["cpu_median"] >= item["target"]
        else:
            item["met_wall"], item["met_cpu"] = item["wall_median"] < item["target"], item["cpu_median"] < item["target"]
    for section, figures in result.items():
        save_results("score", section, figures)
    return result


if __name__ == "__main__":
    res = main()
    machine = res["machine"]
    print(f"one core ({machine['cpu']}), load average {machine['load_average_1min_before_after']}, "
          f"startup (tagger + imports) {res['startup_s']} s; medians of {REPEATS} runs, wall-clock and CPU time")
    for key in ("jsquad_exact_match_f1", "jsquad_f1_mecab", "xlsum_rouge_with_mecab"):
        r = res[key]
        print(f"{key:26s} {r['median_pairs_per_s']:>10,.0f} pairs/s wall  {r['median_pairs_per_cpu_s']:>10,.0f} pairs/CPU-s")
    for key in ("bootstrap_10k_x_5k_s", "paired_bootstrap_10k_x_5k_s"):
        print(f"{key:26s} {res[key]['median']:.3f} s wall  {res[key]['median_cpu']:.3f} CPU-s")
    job = res["job_jsquad_20k"]
    ratios = job["ratios"]
    print(f"score job, JSQuAD {job['records']:,} records (16 arms x 1,250, 3 metrics, 10k resamples), medians of "
          f"{REPEATS} interleaved runs:")
    for key in ("validation", "bootstrap_v01", "bootstrap_per_column", "job_over_metrics"):
        r = ratios[key]
        print_ratio(r["what"], r["before"], r["before_s"], r["after"], r["after_s"], r["target"])
    print(f"intervals: shared draws vs per-arm fresh indices (v0.1), largest difference of an interval end "
          f"{job['bootstrap']['largest_interval_end_difference_points']} points (Monte Carlo noise, same distribution)")
    for name, item in res["targets"].items():
        print(f"target {name}: {item['target']} -> wall {item['wall_median']} ({'met' if item['met_wall'] else 'MISSED'}), "
              f"CPU {item['cpu_median']} ({'met' if item['met_cpu'] else 'MISSED'})")
    print(f"wrote {RESULTS}")
    sys.exit(0)
