"""One price for the same seconds, instance and tokens: plan, status and the report agree.

Every dollar goes through core/pricing.py. SageMaker bills billable seconds at the on-demand rate,
managed spot included (the saving shows as fewer billable seconds); only a plan's estimate for a
spot job, made before any seconds exist, uses the spot rate.
"""

from __future__ import annotations

import json

import pytest
from switchpoint.core import layout, manifests, pricing
from switchpoint.core.store import open_store
from switchpoint.orchestration.estimate import estimate_plan
from switchpoint.orchestration.status import step_status
from switchpoint.orchestration.steps import plan_steps
from switchpoint.report import costs

PRICES = manifests.load_prices()
G5 = "ml.g5.2xlarge"
ON_DEMAND, SPOT_RATE = pricing.instance_rates(PRICES, G5)
SWEEP = """
name: pricetest
tasks: [jsquad]
data: {source: bundled, eval_size: 8}
sizes: [0, 2, 4]
seeds: [0, 1]
models: [qwen2.5-1.5b-instruct]
api_models: [claude-haiku-4.5]
fewshot_api: {shots: [0, 2], mode: on-demand}
train: {instance_type: ml.g5.2xlarge, spot: true, max_runtime_s: 7200}
infer: {instance_type: ml.g5.2xlarge}
score: {instance_type: ml.m5.xlarge}
"""


def test_the_same_seconds_cost_the_same_in_plan_status_and_report():
    on_demand = pricing.JobTime(G5, wall_s=3600.0, billable_s=3600.0, spot=False)
    assert pricing.estimate_usd(3600.0, G5, PRICES, spot=False) == pytest.approx(ON_DEMAND)
    assert pricing.spent_usd(on_demand, PRICES) == pytest.approx(ON_DEMAND)
    assert pricing.job_usd(on_demand, PRICES)[0] == pytest.approx(ON_DEMAND)
    # Managed spot: 1 h of training billed as 20 min, at the on-demand rate (not the spot rate).
    spot = pricing.JobTime(G5, wall_s=3600.0, billable_s=1200.0, spot=True)
    assert pricing.spent_usd(spot, PRICES) == pytest.approx(ON_DEMAND / 3)
    assert pricing.job_usd(spot, PRICES)[1] == pytest.approx(ON_DEMAND / 3)
    assert pricing.spent_usd(spot, PRICES) != pytest.approx(SPOT_RATE / 3)
    # Before anything ran, a plan can only expect the spot discount.
    assert pricing.estimate_usd(3600.0, G5, PRICES, spot=True) == pytest.approx(SPOT_RATE)


def test_status_and_the_report_bill_a_spot_training_job_alike(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP, encoding="utf-8")
    sweep, task = manifests.load_sweep(path), manifests.load_task("jsquad")
    run = open_store(tmp_path / "store").child(sweep["name"], task["name"])
    train = next(s for s in plan_steps(sweep, task) if s.job == "train")
    run.write_json(layout.run_record(train.name), {"step": train.name, "job": "train", "status": "failed",
                                                   "instance_type": G5, "spot": True, "wall_s": 3600.0,
                                                   "billable_s": 1200.0})
    contents = layout.RunContents(("qwen2.5-1.5b-instruct",), (), (0, 2, 4), (0, 1))
    for _, _, rel in contents.train_metrics("qwen2.5-1.5b-instruct"):
        run.write_text(rel, json.dumps({"wall_s": 900.0, "gpu_seconds": 900.0, "trained_tokens": 1000}))
    status_usd = next(r["usd"] for r in step_status(sweep, task, open_store(tmp_path / "store")) if r["step"] == train.name)
    report = costs.collect(tmp_path / "store" / sweep["name"] / task["name"], contents, PRICES,
                           manifests.load_api_models(), sweep)
    report_usd = sum(v["train_usd_spot"] for v in report.train.values())
    assert status_usd == pytest.approx(ON_DEMAND / 3)
    assert report_usd == pytest.approx(status_usd)


def test_plan_prices_api_tokens_as_the_infer_bedrock_job_and_the_report_do(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP, encoding="utf-8")
    sweep, task = manifests.load_sweep(path), manifests.load_task("jsquad")
    api = manifests.get_api_model("claude-haiku-4.5")
    row = next(r for r in estimate_plan(sweep, task) if r["job"] == "infer-bedrock")
    assert row["api_input_tokens"] > 0 and row["api_output_tokens"] > 0
    billed = pricing.token_usd(row["api_input_tokens"], row["api_output_tokens"], api)  # the job's bill
    assert row["usd"] == pytest.approx(billed, rel=1e-3)  # the plan's figure (token counts rounded)
    report = costs.api_costs(costs.ApiUsage(row["api_records"], row["api_input_tokens"], row["api_output_tokens"]), api)
    assert report["api_usd"] == pytest.approx(billed)
