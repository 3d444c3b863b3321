"""The adaptive sweep: the same N* as the full grid for far fewer GPU hours, by simulation and end to end.

The simulations (tests/adaptive_sim.py) replay ``adaptive.decide`` round by round on two kinds of
curves and compute, at every round, what the report would say with the report's own code
(``report.transitions``: the match rule with persistence, N* and its bootstrap interval):

* synthetic study-like curves (JSQuAD F1): a 7B model reaches Claude Instant's level at about a
  hundred examples and Claude 2.1's at a few hundred, a 1B model never does; the grid and seeds are
  the study's (to 4096; three seeds up to N=256, one beyond), the cost a GPU-hour model per size;
* the toy task's real full-grid run (tests/data/adaptive/toy-full-grid.json, recorded from
  tests/data/adaptive/toy-full-grid.yaml: to N=256, three seeds everywhere), its cost the train and
  infer jobs' own wall seconds.
"""

from __future__ import annotations

import csv
import io

import pytest
from adaptive_sim import Synthetic, Toy, grid_seeds, outcome, share_of_grid, simulate
from switchpoint.orchestration.adaptive import (
    ModelRound,
    decide,
    grid_bracket,
    persistent_match,
    seeds_needed,
)

GRID = Synthetic.grid


def assert_same_answer(curves, seeds: dict[str, dict[int, int]], stops: dict[str, str]) -> None:
    """Per model and tier: the grid's first persistent match, and N* inside the grid's 95% interval."""
    for model in curves.models:
        for tier in curves.levels:
            grid, got = outcome(curves, model, tier, grid_seeds(curves)), outcome(curves, model, tier, seeds[model])
            where = f"{model} vs {tier} ({stops[model]})"
            assert got.n_match == grid.n_match, where
            if grid.n_star is None:
                assert got.n_star is None, where
            else:
                assert grid.n_star_low <= got.n_star <= grid.n_star_high, where


def test_adaptive_sweep_finds_the_grids_n_star_for_under_40_percent_of_its_gpu_hours():
    curves = Synthetic()
    seeds, stops = simulate(curves)
    assert set(stops) == set(curves.models), "every model ends with a reason"
    assert_same_answer(curves, seeds, stops)
    assert share_of_grid(curves, seeds) <= 0.40, f"adaptive spent {share_of_grid(curves, seeds):.1%} of the grid"


def test_on_the_toy_tasks_recorded_run_the_answer_is_the_grids_for_under_40_percent_of_its_seconds():
    """The toy task's N* sits at the grid's start: the tiny random model's few-shot arm scores 0 on every
    example, so the first adapter that names a category at all matches (N*=2, interval 2-2). The
    saving is then the first round's (N=0..8 at one seed) against the whole grid (to 256, three seeds),
    costed with the jobs' own wall seconds on a shared 2-core machine (noisy: the first adapter of a
    job carries its warm-up), and with the trained tokens, which the load does not move. A curve that
    crossed late would save less; the study-like test covers that.
    """
    curves = Toy()
    report = curves.record["report"]
    replay = outcome(curves, Toy.model, next(iter(curves.levels)), grid_seeds(curves))
    assert replay.n_match == report["n_match"] and replay.n_star == pytest.approx(report["n_star"])
    seeds, stops = simulate(curves)
    assert_same_answer(curves, seeds, stops)
    assert share_of_grid(curves, seeds) <= 0.40, f"adaptive spent {share_of_grid(curves, seeds):.1%} of the grid"
    assert share_of_grid(curves, seeds, curves.tokens) <= 0.40


def test_extra_seeds_go_only_to_the_sizes_bracketing_n_star():
    curves = Synthetic()
    seeds, _ = simulate(curves)
    hardest = max(curves.levels, key=curves.levels.get)
    seeded = {m: sorted(n for n, k in sizes.items() if k > 1) for m, sizes in seeds.items()}
    assert any(seeded.values()), "some interval was wider than the grid's bracket and got seeds"
    for model, sizes in seeded.items():
        if sizes:
            star = outcome(curves, model, hardest, seeds[model]).n_star
            assert set(sizes) <= set(grid_bracket(curves.grid, star)), model
            assert all(seeds[model][n] == curves.max_seeds[n] for n in sizes)  # every seed the sweep prepared


def _settled(low: float, high: float, seeds: dict[int, int]) -> ModelRound:
    means = {0: 40.0, 128: 75.0, 256: 79.0, 512: 83.0, 1024: 85.0}
    matches = {"t": {n: n >= 512 for n in means}}
    return ModelRound("m", means, {n: 1.0 for n in means}, matches, seeds=seeds, n_star={"t": (300.0, low, high)})


@pytest.mark.parametrize("low, high, seeds, expected", [
    (200.0, 600.0, {}, [256, 512]),  # wider than 256-512: the other seeds at both bracketing sizes
    (260.0, 500.0, {}, []),  # within the bracket: one seed is enough
    (200.0, 600.0, {256: 3}, [512]),  # 256 already has all three
    (200.0, 600.0, {256: 3, 512: 3}, []),  # nothing more was prepared
])
def test_seeds_are_asked_for_only_while_the_interval_is_wider_than_the_grids_bracket(low, high, seeds, expected):
    max_seeds = {n: 3 for n in GRID}
    assert seeds_needed(_settled(low, high, seeds), "t", GRID, max_seeds) == expected
    (d,) = decide({"m": _settled(low, high, seeds)}, {"t": 80.0}, GRID, margin=1.0, max_seeds=max_seeds)
    assert d.more_seeds == expected and (d.stop is None) == bool(expected)


def test_a_size_the_sweep_prepared_one_seed_for_gets_no_more():
    """Above seeds_up_to_n the data step draws one seed only: the decision asks for none there."""
    (d,) = decide({"m": _settled(200.0, 600.0, {})}, {"t": 80.0}, GRID, margin=1.0,
                  max_seeds={n: 3 if n <= 256 else 1 for n in GRID})
    assert d.more_seeds == [256]


@pytest.mark.parametrize("n_star, expected", [(300.0, (256, 512)), (256.0, (128, 256)), (1.5, (0, 2)), (2.0, (0, 2))])
def test_n_stars_bracket_is_two_adjacent_grid_sizes(n_star, expected):
    assert grid_bracket(GRID, n_star) == expected


def test_a_model_that_never_reaches_the_level_stops_when_its_curve_has_flattened():
    curves = Synthetic()
    _, stops = simulate(curves)
    assert "cannot reach" in stops["open-calm-1b"]
    assert outcome(curves, "open-calm-1b", "claude-2.1", grid_seeds(curves)).n_match is None


def test_a_match_is_confirmed_at_a_larger_size_before_the_model_stops():
    curves = Synthetic()
    seeds, stops = simulate(curves)
    n_match = outcome(curves, "elyza-7b", "claude-2.1", grid_seeds(curves)).n_match
    assert n_match is not None and "confirmed" in stops["elyza-7b"]
    assert max(seeds["elyza-7b"]) > n_match


@pytest.mark.parametrize("matches, expected", [
    ({2: False, 4: True, 8: False, 16: True, 32: True}, 16),  # a dip after crossing: no match until it stays
    ({2: True, 4: True}, 2),
    ({2: False, 4: False}, None),
])
def test_persistence_is_required(matches, expected):
    assert persistent_match(matches) == expected


def test_a_worse_and_costlier_model_is_stopped_as_dominated():
    cheap = ModelRound("a", {2: 50.0, 4: 60.0}, {2: 1.0, 4: 2.0}, {"t": {2: False, 4: False}})
    dear = ModelRound("b", {2: 40.0, 4: 55.0}, {2: 3.0, 4: 6.0}, {"t": {2: False, 4: False}})
    decisions = {d.model: d for d in decide({"a": cheap, "b": dear}, {"t": 90.0}, GRID, margin=1.0)}
    assert decisions["b"].stop and "dominated by a" in decisions["b"].stop
    assert decisions["a"].stop is None and decisions["a"].sizes == [8]


RESULT_COLS = ["kind", "model", "n", "seed", "metric", "mean", "train_wall_s", "infer_wall_s", "train_usd", "infer_usd",
               "shared_by"]
TRANSITION_COLS = ["metric", "model", "prompt_model", "prompt_variant", "prompt_mean", "n_match", "n_star",
                   "n_star_low", "n_star_high"]


def _fake_rounds(run, seconds: float, usd: float, transition: dict | None = None, *, first_seed_only: bool = False):
    """A round that 'runs' every asked size and seed, each costing ``seconds`` and ``usd``, and writes
    the report's two tables as the report job would (by default a curve that never reaches the level).
    ``first_seed_only``: the other seeds never reach the report (their steps came to nothing)."""
    asked = []
    transition = transition or {"n_match": "", "n_star": "", "n_star_low": "", "n_star_high": ""}

    def run_round(sweep: dict) -> None:
        from switchpoint.orchestration.rounds import ROUND_SEEDS, ROUND_SIZES

        asked.append((sweep[ROUND_SIZES], sweep[ROUND_SEEDS]))
        out = io.StringIO()
        writer = csv.DictWriter(out, RESULT_COLS)
        writer.writeheader()
        for model, sizes in sweep[ROUND_SIZES].items():
            for n in sizes:
                every = n in sweep[ROUND_SEEDS][model] and not first_seed_only
                for seed in sweep["seeds"] if every else sweep["seeds"][:1]:
                    writer.writerow({"kind": "finetune", "model": model, "n": n, "seed": seed, "metric": "exact_match",
                                     "mean": 10.0 + n / 100, "train_wall_s": seconds, "infer_wall_s": 0.0,
                                     "train_usd": usd, "infer_usd": 0.0, "shared_by": 1})
        run.write_text("report/results.csv", out.getvalue())
        out = io.StringIO()
        writer = csv.DictWriter(out, TRANSITION_COLS)
        writer.writeheader()
        for model in sweep[ROUND_SIZES]:
            writer.writerow({"metric": "exact_match", "model": model, "prompt_model": "claude", "prompt_variant": "",
                             "prompt_mean": 90.0, **transition})
        run.write_text("report/transitions.csv", out.getvalue())

    return run_round, asked


@pytest.mark.parametrize("budget, seconds, usd, reason, rounds", [
    ({"max_gpu_hours": 3.0}, 1800.0, 0.0, "the GPU-hour budget is spent (3 of 3 h)", 3),  # 4, 5 then 6 sizes of 0.5 h
    ({"max_usd": 10.0}, 1.0, 2.0, "the dollar budget is spent ($10.00 of $10)", 2),  # 4 then 5 sizes of $2
    ({"max_usd": 1000.0}, 1.0, 2.0, "every model has its answer", 4),  # the grid's end (64) first: 4 + 3 rounds
])
def test_the_sweep_stops_on_its_gpu_hour_or_dollar_budget_and_records_why(tmp_path, budget, seconds, usd, reason, rounds):
    from switchpoint.core import manifests
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import RECORD, run_adaptive

    sweep = manifests.load_sweep("smoke-adaptive")
    sweep["adaptive"].update(budget)
    run = open_store(tmp_path)
    run_round, asked = _fake_rounds(run, seconds, usd)
    said: list[str] = []
    summary = run_adaptive(sweep, manifests.load_task("toy-ja"), run, run_round, said.append)
    assert summary["reason"] == reason and len(asked) == rounds
    assert run.read_json(RECORD)["reason"] == reason and reason in said[-1]
    assert asked[0] == ({"tiny-gpt-neox": [0, 2, 4, 8]}, {"tiny-gpt-neox": []})  # first round: one seed everywhere


def test_a_wide_n_star_interval_gets_the_other_seeds_at_its_bracket_in_the_next_round_then_stops(tmp_path):
    from switchpoint.core import manifests
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import run_adaptive

    sweep = {**manifests.load_sweep("smoke-adaptive"), "seeds": [0, 1]}
    run = open_store(tmp_path)
    wide = {"n_match": "2", "n_star": "3.0", "n_star_low": "2.0", "n_star_high": "16.0"}  # bracket 2-4, interval 2-16
    run_round, asked = _fake_rounds(run, 1.0, 0.0, wide)
    summary = run_adaptive(sweep, manifests.load_task("toy-ja"), run, run_round, lambda _: None)
    assert [seeds for _, seeds in asked] == [{"tiny-gpt-neox": []}, {"tiny-gpt-neox": [2, 4]}]
    assert asked[1][0] == {"tiny-gpt-neox": [0, 2, 4, 8]}  # no new size: only the seeds
    assert "wider than the grid's bracket 2-4 with every prepared seed" in summary["stopped"]["tiny-gpt-neox"]


def test_extra_seeds_that_never_reach_the_report_stop_the_model_naming_them_instead_of_repeating(tmp_path):
    from switchpoint.core import manifests
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import run_adaptive

    sweep = {**manifests.load_sweep("smoke-adaptive"), "seeds": [0, 1]}
    run = open_store(tmp_path)
    wide = {"n_match": "2", "n_star": "3.0", "n_star_low": "2.0", "n_star_high": "16.0"}  # bracket 2-4, interval 2-16
    run_round, asked = _fake_rounds(run, 1.0, 0.0, wide, first_seed_only=True)
    summary = run_adaptive(sweep, manifests.load_task("toy-ja"), run, run_round, lambda _: None)
    assert len(asked) == 2, "the same seeds are asked for once, not until the round limit"
    assert summary["reason"] == "every model has its answer"
    why = summary["stopped"]["tiny-gpt-neox"]
    assert "never reached the report" in why and "N=2 has 1 of 2" in why and "N=4 has 1 of 2" in why


def test_a_model_with_extra_seeds_at_its_bracket_is_compared_per_seed_when_pruning_a_rival():
    # "a" ran three seeds at N=4 (3 x 2.0): per seed it is cheaper than "b" there, and better everywhere
    seeded = ModelRound("a", {2: 50.0, 4: 60.0}, {2: 1.0, 4: 6.0}, {"t": {2: False, 4: False}}, seeds={4: 3})
    rival = ModelRound("b", {2: 40.0, 4: 55.0}, {2: 3.0, 4: 5.0}, {"t": {2: False, 4: False}})
    decisions = {d.model: d for d in decide({"a": seeded, "b": rival}, {"t": 90.0}, GRID, margin=1.0)}
    assert decisions["b"].stop and "dominated by a" in decisions["b"].stop
    # ... and the seeded model is not stopped by a rival that only looks cheaper because it ran one seed there
    seeded = ModelRound("c", {2: 50.0, 4: 60.0}, {2: 1.0, 4: 6.0}, {"t": {2: False, 4: False}}, seeds={4: 3})
    rival = ModelRound("d", {2: 51.0, 4: 61.0}, {2: 1.0, 4: 5.0}, {"t": {2: False, 4: False}})
    decisions = {d.model: d for d in decide({"c": seeded, "d": rival}, {"t": 90.0}, GRID, margin=1.0)}
    assert decisions["c"].stop is None and decisions["c"].sizes == [8]


def test_a_shared_inference_pass_counts_its_gpu_seconds_once(tmp_path):
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import read_round

    run = open_store(tmp_path)
    out = io.StringIO()
    writer = csv.DictWriter(out, RESULT_COLS)
    writer.writeheader()
    # the base model's N=0 pass (600 s) serves 3 seeds of the N=0 arm and 3 seeds of the 0-shot arm
    for kind in ("finetune", "fewshot-local"):
        for seed in (0, 1, 2):
            writer.writerow({"kind": kind, "model": "m", "n": 0, "seed": seed, "metric": "exact_match", "mean": 1.0,
                             "train_wall_s": 0.0, "infer_wall_s": 600.0, "train_usd": 0.0, "infer_usd": 0.1,
                             "shared_by": 6})
    writer.writerow({"kind": "finetune", "model": "m", "n": 2, "seed": 0, "metric": "exact_match", "mean": 2.0,
                     "train_wall_s": 300.0, "infer_wall_s": 60.0, "train_usd": 0.0, "infer_usd": 0.0, "shared_by": 1})
    run.write_text("report/results.csv", out.getvalue())
    rounds, _, spent = read_round(run, "exact_match", ["m"])
    assert spent.seconds == pytest.approx(600.0 + 300.0 + 60.0)
    assert spent.gpu_hours == pytest.approx(960.0 / 3600)
    assert rounds["m"].usd[0] == pytest.approx(300.0)  # the N=0 arm's three seeds: half the shared pass


def test_results_without_the_shared_by_column_are_refused_in_one_line(tmp_path):
    from switchpoint.core.contract import JobError
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import read_round

    run = open_store(tmp_path)
    run.write_text("report/results.csv", "kind,model,n,seed,metric,mean,train_wall_s,infer_wall_s\n"
                                         "finetune,m,0,0,exact_match,1.0,0.0,600.0\n")
    with pytest.raises(JobError, match="report/results.csv: no shared_by column"):
        read_round(run, "exact_match", ["m"])


def test_the_record_is_written_after_every_round_and_status_resolves_the_round_running(tmp_path):
    from switchpoint.core import manifests
    from switchpoint.core.store import open_store
    from switchpoint.orchestration.rounds import RECORD, ROUND_SIZES, run_adaptive
    from switchpoint.orchestration.status import as_run_resolved_it

    sweep, task = manifests.load_sweep("smoke-adaptive"), manifests.load_task("toy-ja")
    run = open_store(tmp_path)
    fake, asked = _fake_rounds(run, 1.0, 0.0)
    seen = []

    def run_round(round_sweep: dict) -> None:
        record = run.read_json(RECORD)  # as a status run while this round trains (or after a kill) reads it
        seen.append((record["state"], len(record["rounds"]), as_run_resolved_it(sweep, task, run)[ROUND_SIZES]))
        fake(round_sweep)

    run_adaptive(sweep, task, run, run_round, lambda _: None)
    assert len(seen) == len(asked) >= 2
    for number, (state, rounds, resolved) in enumerate(seen, 1):
        assert (state, rounds) == ("in progress", number)
        assert resolved == asked[number - 1][0]  # this round's sizes, not the whole grid
    assert seen[1][2] != {"tiny-gpt-neox": manifests.sweep_sizes(sweep, task["name"])}
    final = run.read_json(RECORD)
    assert final["state"] == "stopped" and len(final["rounds"]) == len(asked)


def test_the_adaptive_smoke_sweep_runs_offline_end_to_end_and_trains_only_what_it_needs(tmp_path):
    from click.testing import CliRunner
    from switchpoint.cli import main
    from switchpoint.core.store import open_store

    result = CliRunner().invoke(main, ["run", "sweep", "--sweep", "smoke-adaptive", "--task", "toy-ja",
                                       "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = open_store(tmp_path).child("smoke-adaptive", "toy-ja")
    record = run.read_json("runs/adaptive.json")
    assert record["reason"] == "every model has its answer" and record["stopped"]["tiny-gpt-neox"]
    trained = {p.split("/")[-2] for p in run.list("train/tiny-gpt-neox/checkpoints/adapters") if p.endswith("train_metrics.json")}
    assert trained == {f"n={n}" for n in record["rounds"][-1]["sizes"]["tiny-gpt-neox"] if n > 0}
    assert record["sizes_run"] < record["grid_sizes"]  # the grid runs to 64; the answer was settled earlier
    assert run.child("report").is_complete()
    from switchpoint.core import manifests
    from switchpoint.orchestration.status import step_status

    states = step_status(manifests.load_sweep("smoke-adaptive"), manifests.load_task("toy-ja"), open_store(tmp_path))
    assert {r["state"] for r in states} == {"done"}, states  # the last round's sizes, not the grid, are current


@pytest.mark.parametrize("args, message", [
    (["run", "train", "--adaptive"], "cannot run the train step alone"),
    (["run", "sweep", "--adaptive", "--model", "tiny-gpt-neox"], "without --model and --force"),
    (["run", "sweep", "--adaptive", "--force"], "without --model and --force"),
])
def test_options_an_adaptive_sweep_cannot_honour_are_refused_in_one_line(tmp_path, args, message):
    from click.testing import CliRunner
    from switchpoint.cli import main

    result = CliRunner().invoke(main, [*args, "--sweep", "smoke-adaptive", "--task", "toy-ja", "--store", str(tmp_path)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.count("error:") == 1 and not list(tmp_path.iterdir())


def test_plan_prices_an_adaptive_sweep_as_its_worst_case_the_whole_grid(tmp_path):
    from click.testing import CliRunner
    from switchpoint.cli import main

    result = CliRunner().invoke(main, ["plan", "--sweep", "smoke-adaptive", "--task", "toy-ja", "--offline",
                                       "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "worst case, the whole grid (N=0,2,4,8,16,32,64 with seeds 0)" in result.output


def test_a_round_trains_and_evaluates_every_seed_only_at_the_sizes_it_names(jsquad_data):
    """What ``decide`` asks (every seed at N*'s bracket, the smallest elsewhere) is what the jobs run."""
    from switchpoint.core import manifests
    from switchpoint.infer_local.passes import plan_passes
    from switchpoint.infer_local.settings import Settings as InferSettings
    from switchpoint.orchestration.rounds import round_sweep
    from switchpoint.orchestration.steps import plan_steps
    from switchpoint.train.job import plan
    from switchpoint.train.settings import Settings as TrainSettings

    sweep = {**manifests.load_sweep("smoke-adaptive"), "seeds": [0, 1]}
    steps = {s.job: s for s in plan_steps(round_sweep(sweep, {"tiny-gpt-neox": {0, 2, 4, 8}}, {"tiny-gpt-neox": {4}}),
                                          manifests.load_task("toy-ja"))}
    assert steps["train"].hyperparameters["every_seed_at"] == "0,4"  # N=0: the base model's pass serves every seed
    args = steps["infer-local"].args
    assert args[args.index("--every-seed-at") + 1] == "0,4"
    assert "every_seed_at" not in next(s for s in plan_steps(sweep, manifests.load_task("toy-ja"))
                                       if s.job == "train").hyperparameters  # a plain sweep: every seed everywhere

    _, _, sets = plan(TrainSettings(model="tiny-gpt-neox", every_seed_at=[0, 4]), jsquad_data)
    assert set(sets) == {(0, 2), (0, 4), (1, 4), (0, 8)}
    settings = InferSettings(model="tiny-gpt-neox", arms=["finetune", "fewshot-local"], shots=[0, 2], every_seed_at=[0, 4])
    passes = plan_passes(settings, "tiny-gpt-neox", [0, 2, 4, 8], [0, 1], [0, 2])
    assert {p.adapter for p in passes if p.adapter} == {(0, 2), (0, 4), (1, 4), (0, 8)}
    assert {p.shots for p in passes if p.shots} == {(0, 2), (1, 2)}  # the prompting arm keeps every seed
