"""The cost model against figures computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from switchpoint.core import layout, pricing
from switchpoint.core.contract import JobError
from switchpoint.core.manifests import load_api_models, load_prices
from switchpoint.core.predictions import Arm
from switchpoint.report import costs

PRICES = load_prices()
API = load_api_models()
CONTENTS = layout.RunContents(models=("m",), api_models=("claude-haiku-4.5",), sizes=(0, 2, 4, 8), seeds=(0,))


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def test_an_hour_on_a_g5_2xlarge_costs_its_listed_prices():
    od, spot, basis = pricing.job_usd(pricing.JobTime("ml.g5.2xlarge", 3600.0, source="x"), PRICES)
    assert od == pytest.approx(1.515) and spot == pytest.approx(0.530) and basis.startswith("wall_s")


def test_spot_billable_seconds_are_billed_at_the_on_demand_rate():
    # 1200 billable s of a 3000 s spot job: 1200/3600 * 1.515 = 0.505 measured; on-demand would be 3000 s
    od, spot, basis = pricing.job_usd(pricing.JobTime("ml.g5.2xlarge", 3000.0, 1200.0, True, "runs/train-m.json"), PRICES)
    assert spot == pytest.approx(0.505) and od == pytest.approx(3000 / 3600 * 1.515)
    assert "runs/train-m.json" in basis


def test_unknown_instance_gives_no_dollars():
    assert pricing.job_usd(pricing.JobTime("ml.nope", 10.0), PRICES)[:2] == (None, None)
    assert pricing.job_usd(pricing.JobTime(None, 10.0), PRICES)[:2] == (None, None)


def test_split_shares_a_job_by_wall_seconds():
    assert costs.split(0.505, {"a": 100.0, "b": 300.0}) == {"a": pytest.approx(0.12625), "b": pytest.approx(0.37875)}
    assert costs.split(1.0, {"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    assert costs.split(None, {"a": 1.0}) == {"a": None}


def test_api_on_demand_batch_and_cached_by_hand():
    api = {**API["claude-haiku-4.5"], "cache_min_tokens": 0}  # $1 in, $5 out per Mtok, batch 50%, cache 1.25/0.10
    usage = costs.ApiUsage(records=1000, input_tokens=1_000_000, output_tokens=200_000, prefix_tokens=500.0)
    got = costs.api_costs(usage, api)
    assert got["api_usd"] == pytest.approx(1.0 + 1.0)
    assert got["api_usd_batch"] == pytest.approx(1.0)
    # 500 prefix tokens written once (0.000625), read 999 times (0.04995), 500k other input (0.5), output (1.0)
    assert got["api_usd_cached"] == pytest.approx(0.000625 + 0.04995 + 0.5 + 1.0)
    assert got["api_per_1k"] == pytest.approx(2.0)  # 1000 records: per 1k = the run
    assert got["api_per_1k_cached"] == pytest.approx(1.550575)


def test_api_without_batch_or_cache_prices_has_no_such_figures():
    api = API["claude-2.1"]  # $8 / $24, no batch discount, no cache prices
    got = costs.api_costs(costs.ApiUsage(200, 100_000, 10_000, 300.0), api)
    assert got["api_usd"] == pytest.approx(0.8 + 0.24)
    assert got["api_usd_batch"] is None and got["api_usd_cached"] is None
    assert got["api_per_1k"] == pytest.approx((0.8 + 0.24) * 5)


def test_break_even_volume_by_hand():
    # $10 training, $0.001 vs $0.003 per request: 10 / 0.002 = 5000 requests in one month
    assert costs.break_even_requests(10.0, 0.001, 0.003) == pytest.approx(5000.0)
    assert costs.break_even_requests(10.0, 0.001, 0.003, months=2) == pytest.approx(2500.0)
    assert costs.break_even_requests(10.0, 0.003, 0.002) == math.inf  # prompting cheaper per request
    assert costs.break_even_requests(0.0, 0.0, 0.002) == 0.0
    assert costs.break_even_requests(None, 0.001, 0.003) is None
    # always-on g5.2xlarge: (10 + 1.515 * 730) / 0.003 requests
    assert costs.break_even_endpoint(10.0, 1.515, 0.003) == pytest.approx((10 + 1.515 * 730) / 0.003)


def test_parse_arm_accepts_objects_and_file_names():
    arm = Arm("fewshot-api", "claude-haiku-4.5", 8, 0, "full")
    assert costs.parse_arm(arm.to_dict(), "x") == arm
    assert costs.parse_arm(arm.filename, "x") == arm
    assert costs.parse_arm("finetune__m__n=4__seed=1", "x") == Arm("finetune", "m", 4, 1, None)
    with pytest.raises(JobError, match="metrics.json arms\\[0\\]"):
        costs.parse_arm("garbage", "metrics.json arms[0]")


def test_a_step_record_is_found_by_the_layout_not_by_parsing_names(tmp_path):
    _write(tmp_path / "runs/train-m1.json", {"a": 1})
    _write(tmp_path / "runs/train-m10.json", {"c": 3})
    assert costs.read_run(tmp_path, layout.train_step("m1")) == {"a": 1, "_file": "runs/train-m1.json"}
    assert costs.read_run(tmp_path, layout.train_step("m2")) is None


def test_the_prompt_cache_is_not_applied_below_the_models_minimum_cacheable_length():
    api = {**API["claude-haiku-4.5"], "cache_min_tokens": 4096}  # Claude Haiku 4.5 on Bedrock: 4,096 tokens
    short = costs.api_costs(costs.ApiUsage(1000, 1_000_000, 200_000, prefix_tokens=500.0), api)
    assert short["api_usd_cached"] is None and short["api_per_1k_cached"] is None
    long = costs.api_costs(costs.ApiUsage(1000, 6_000_000, 200_000, prefix_tokens=5000.0), api)
    # 5000 prefix tokens written once, read 999 times, 1000 other input tokens per request, output
    expected = 5000 / 1e6 * 1.25 + 5000 * 999 / 1e6 * 0.10 + 1_000_000 / 1e6 * 1.0 + 200_000 / 1e6 * 5.0
    assert long["api_usd_cached"] == pytest.approx(expected)


def test_monthly_cost_and_break_evens_by_hand():
    cost = costs.MonthlyCost(one_off_usd=10.0, months=2.0, ft_per_request=0.001, endpoint_per_month=1.515 * 730,
                             prompt_per_request=0.003)
    assert cost.prompting(1000) == pytest.approx(3.0)
    assert cost.per_request(1000) == pytest.approx(5.0 + 1.0)
    assert cost.endpoint(1000) == pytest.approx(5.0 + 1.515 * 730)
    assert cost.break_even_per_request() == pytest.approx(5.0 / 0.002)
    assert cost.break_even_endpoint() == pytest.approx((5.0 + 1.515 * 730) / 0.003)
    # at the break-even volume both sides cost the same
    volume = cost.break_even_per_request()
    assert cost.per_request(volume) == pytest.approx(cost.prompting(volume))


def test_collect_prices_a_run_folder_by_hand(tmp_path):
    run = tmp_path / "run"
    for n, wall in ((2, 100.0), (4, 300.0)):
        _write(run / f"train/m/checkpoints/adapters/seed=0/n={n}/train_metrics.json",
               {"model": "m", "n": n, "seed": 0, "wall_s": wall, "gpu_seconds": wall * 0.9, "trained_tokens": 10})
    _write(run / "train/m/checkpoints/adapters/train_summary.json",
           {"model": "m", "base_model_loads": 1, "wall_s": 450.0, "device": "cuda",
            "adapters": [{"seed": 0, "n": 2, "skipped": None}, {"seed": 0, "n": 4, "skipped": None},
                         {"seed": 0, "n": 8, "skipped": "out of memory"}]})
    _write(run / "runs/train-m.json", {"step": "train-m", "backend": "sagemaker", "instance_type": "ml.g5.2xlarge",
                                      "status": "Completed", "wall_s": 500.0, "billable_s": 1200.0, "spot": False})
    arms = [Arm("finetune", "m", 0, 0), Arm("finetune", "m", 4, 0)]
    _write(run / "predictions/local/m/infer_metrics.json", {
        "model": "m", "wall_s": 360.0, "examples": 200,
        "arms": [{"arm": arms[0].filename, "examples": 100, "wall_s": 60.0, "input_tokens": 5000, "output_tokens": 500, "skipped": None},
                 {"arm": arms[1].to_dict(), "examples": 100, "wall_s": 180.0, "input_tokens": 5000, "output_tokens": 500, "skipped": None},
                 {"arm": Arm("fewshot-local", "m", 64, 0).to_dict(), "examples": 0, "wall_s": 0, "skipped": "context guard: 9000 > 2048 tokens"}]})
    api0, api8 = Arm("fewshot-api", "claude-haiku-4.5", 0, 0), Arm("fewshot-api", "claude-haiku-4.5", 8, 0)
    _write(run / "predictions/bedrock/claude-haiku-4.5/bedrock_metrics.json", {
        "api_model": "claude-haiku-4.5", "records_ok": 2000, "records_error": 0,
        "arms": [{"arm": api0.to_dict(), "mode": "batch", "records": 1000, "input_tokens": 500_000, "output_tokens": 200_000, "usd": 0.6, "skipped": None},
                 {"arm": api8.to_dict(), "mode": "batch", "records": 1000, "input_tokens": 1_000_000, "output_tokens": 200_000, "usd": 1.0, "skipped": None},
                 {"arm": Arm("fewshot-api", "claude-haiku-4.5", 32, 0).to_dict(), "mode": None, "records": 0, "skipped": "missing credentials"}]})
    sweep = {"train": {"instance_type": "ml.g5.xlarge", "spot": False}, "infer": {"instance_type": "ml.g5.2xlarge"}}
    got = costs.collect(run, CONTENTS, PRICES, API, sweep)

    # training: runs/train-m.json overrides the sweep's instance; 1200 billable s -> $0.505, split 100:300
    assert got.train[("m", 0, 2)]["train_usd"] == pytest.approx(0.12625)
    assert got.train[("m", 0, 4)]["train_usd"] == pytest.approx(0.37875)
    assert got.train[("m", 0, 4)]["train_usd_spot"] == pytest.approx(500 / 3600 * 0.530 * 0.75)
    assert got.train[("m", 0, 4)]["gpu_seconds"] == pytest.approx(270.0)
    # local inference: no run file -> infer_metrics wall 360 s at $1.515/h = $0.1515, split 60:180
    ft4 = got.local[("finetune", "m", 4, 0, None)]
    assert ft4["infer_usd"] == pytest.approx(0.1515 * 0.75)
    assert ft4["infer_per_1k"] == pytest.approx(0.1515 * 0.75 / 100 * 1000)
    assert got.infer_hourly["m"] == pytest.approx(1.515)
    # API: prefix = 1000 - 500 input tokens per request; cached as in the hand example above
    k8 = got.api[("fewshot-api", "claude-haiku-4.5", 8, 0, None)]
    assert k8["prefix_tokens"] == pytest.approx(500.0)
    assert k8["api_usd"] == pytest.approx(2.0)
    if float(API["claude-haiku-4.5"].get("cache_min_tokens") or 0) > 500:  # the manifest's minimum applies
        assert k8["api_usd_cached"] is None and any("minimum cacheable length" in n for n in got.notes)
    else:
        assert k8["api_usd_cached"] == pytest.approx(1.550575)
    assert k8["api_usd_billed"] == 1.0
    reasons = sorted(s["reason"] for s in got.skipped)
    assert reasons == ["context guard: 9000 > 2048 tokens", "missing credentials", "out of memory"]


def test_a_generation_pass_shared_by_two_arms_is_charged_once(tmp_path):
    shared = {"examples": 100, "wall_s": 100.0, "input_tokens": 5000, "output_tokens": 500, "skipped": None,
              "shared_pass": True}
    _write(tmp_path / "predictions/local/m/infer_metrics.json", {"model": "m", "wall_s": 200.0, "arms": [
        {"arm": Arm("finetune", "m", 0, 0).to_dict(), **shared},
        {"arm": Arm("fewshot-local", "m", 0, 0).to_dict(), **shared},
        {"arm": Arm("finetune", "m", 4, 0).to_dict(), "examples": 100, "wall_s": 100.0, "skipped": None}]})
    got = costs.collect(tmp_path, CONTENTS, PRICES, API, {"train": {"instance_type": "local"},
                                                          "infer": {"instance_type": "ml.g5.2xlarge"}})
    job = 200 / 3600 * 1.515  # two passes of 100 s each: half the job each
    base, local, ft4 = (got.local[("finetune", "m", 0, 0, None)], got.local[("fewshot-local", "m", 0, 0, None)],
                        got.local[("finetune", "m", 4, 0, None)])
    assert base["infer_usd"] + local["infer_usd"] == pytest.approx(job / 2)
    assert ft4["infer_usd"] == pytest.approx(job / 2)
    assert base["infer_per_1k"] == pytest.approx(job / 2 / 100 * 1000)  # per request: the pass's own price


def test_collect_states_missing_inputs(tmp_path):
    got = costs.collect(tmp_path, CONTENTS, PRICES, API, None)
    text = " ".join(got.notes)
    assert "runs/*.json" in text and "bedrock_metrics.json" in text and "infer_metrics.json" in text
    assert not got.train and not got.local and not got.api


def test_broken_metrics_file_names_the_file(tmp_path):
    path = tmp_path / "predictions/local/m/infer_metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(JobError, match="infer_metrics.json:1: not valid JSON"):
        costs.collect(tmp_path, CONTENTS, PRICES, API, None)
