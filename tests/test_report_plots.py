"""The report's plots: an all-zero metric gets a sane axis, per-dollar plots keep arms scoring 0."""

from __future__ import annotations

import json

import pytest
from switchpoint.core.predictions import Arm
from switchpoint.report import plots
from switchpoint.report.analysis import analyse_run
from switchpoint.report.settings import ReportSettings

EXAMPLES = 10


def ft(n: int) -> Arm:
    return Arm("finetune", "m", n, 0)


def first(k: int) -> list[float]:
    return [1.0 if i < k else 0.0 for i in range(EXAMPLES)]


def make_run(root, arms: dict) -> object:
    """A run folder with data/task.json and scores/scores.jsonl (f1 only)."""
    run = root / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "task.json").write_text(json.dumps({"name": "t", "metrics": ["f1"], "primary_metric": "f1"}))
    (run / "scores").mkdir()
    lines = [json.dumps({"id": f"q{i}", "arm": arm.to_dict(), "f1": v}) for arm, values in arms.items()
             for i, v in enumerate(values)]
    (run / "scores" / "scores.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_an_all_zero_metric_gets_an_axis_from_just_below_zero_to_one():
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    plots.sane_ylim(ax, [0.0, 0.0, -1.4e-17])
    low, high = ax.get_ylim()
    assert low == pytest.approx(-0.03) and high == pytest.approx(1.0)
    plots.sane_ylim(ax, [40.0, 95.0])
    assert ax.get_ylim() == (pytest.approx(-3.0), pytest.approx(100.0))
    plt.close(fig)


def test_per_dollar_plot_keeps_an_arm_that_scores_zero(tmp_path, monkeypatch):
    arms = {ft(0): first(0), ft(2): first(0), ft(4): first(0), Arm("fewshot-api", "claude-haiku-4.5", 0, 0): first(4)}  # the fine-tuned arm scores 0
    run = make_run(tmp_path, arms)
    path = run / "predictions/local/m/infer_metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"model": "m", "wall_s": 30.0, "arms": [
        {"arm": a.to_dict(), "examples": EXAMPLES, "wall_s": 10.0, "skipped": None} for a in (ft(0), ft(2), ft(4))]}))
    for n in (2, 4):
        metrics = run / f"train/m/checkpoints/adapters/seed=0/n={n}/train_metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"wall_s": 5.0}))
    sweep = {"name": "s", "train": {"instance_type": "local"}, "infer": {"instance_type": "ml.g5.2xlarge"}}
    from switchpoint.core.manifests import load_api_models, load_prices

    an = analyse_run(run, ReportSettings(resamples=200), sweep, load_prices(), load_api_models())
    drawn = {}

    def keep(self, fig, name, caption):
        drawn[name] = [(line.get_label(), list(line.get_ydata())) for line in fig.axes[0].get_lines()]
        self.plt.close(fig)

    monkeypatch.setattr(plots.Figures, "save", keep)
    figures = plots.Figures(an, tmp_path / "out")
    plots.per_usd_plot(figures, "f1")
    lines = dict(drawn["f1_per_usd_vs_n.png"])
    assert lines["fine-tuned m"] == [0.0, 0.0, 0.0]  # on a linear axis, visible at 0
