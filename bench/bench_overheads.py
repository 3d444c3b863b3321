"""Overheads of the jobs, each as a ratio against its baseline run in the same process.

1. Stop strings: the hf engine's incremental test (only the newest tokens are decoded) against
   decoding each sequence's whole answer at every step (how v0.1 did it). 8 XL-Sum prompts on the
   tiny GPT-NeoX, 256 new tokens, a stop string that never fires (the worst case for the old test).
2. torch threads: one generation batch with 1 thread against torch's default thread count. The job
   sets `--threads` to the cores it may use; on a shared 2-core machine the default can oversubscribe.
3. The smoke JSQuAD sweep's wall time (`run sweep --sweep smoke --task jsquad`) with the local
   runner's plain subprocess per job (SWITCHPOINT_WARM_LAUNCHER=0, each torch job imports torch
   itself) against the warm launcher (jobs forked from a server that imported torch once), target
   < 10 s on a quiet 2-core machine, with the per-step seconds the runs recorded (medians).

Medians of REPEATS paired runs (SWEEP_REPEATS for the sweeps, in alternating order); the load
average is printed, since the machine may be shared.
Run: .venv/bin/python bench/bench_overheads.py (writes bench/results/overheads.json).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_ratio, save_results

REPEATS = 5
SWEEP_REPEATS = int(os.environ.get("BENCH_SWEEP_REPEATS", "3"))
WARM_SWITCH = "SWITCHPOINT_WARM_LAUNCHER"  # switchpoint.orchestration.launcher.ENV_SWITCH


class WholeAnswerStopTest:
    """The baseline: decode the whole answer at every step and look for a stop string in it."""

    def __init__(self, tokenizer, stops, entry=None):
        self.tokenizer, self.stops, self.stopped_at = tokenizer, [s for s in stops if s], {}

    def update(self, row, new_ids):
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True).lstrip()
        if any(s in text for s in self.stops):
            self.stopped_at.setdefault(row, len(new_ids))
            return True
        return False


def generation_setup(tmp: Path):
    from switchpoint.core import manifests, modeling, prompts
    from switchpoint.core.datafolder import load_task_from_data, read_eval_set
    from switchpoint.data.job import DataSettings, prepare

    prepare(DataSettings(task="xlsum", sizes=[0], seeds=[0], source="bundled", eval_size=8), tmp / "d")
    entry = manifests.get_model("tiny-gpt-neox")
    base = modeling.load_base(entry, tmp / "d")
    base.tokenizer.padding_side = "left"
    task = load_task_from_data(tmp / "d")
    ids = [prompts.encode_prompt(base.tokenizer, entry, prompts.model_prompt(task, entry, ex, tokenizer=base.tokenizer))[-200:]
           for ex in read_eval_set(tmp / "d")]
    return base, entry, ids


def paired(first, second) -> tuple[float, float]:
    a, b = [], []
    for _ in range(REPEATS):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def stop_strings(base, entry, ids) -> dict:
    import torch

    from switchpoint.infer_local import hf_engine

    torch.set_num_threads(1)
    incremental = hf_engine.StopWatch

    def run(cls):
        def once():
            hf_engine.StopWatch = cls
            start = time.perf_counter()
            hf_engine.generate_batch(base.model, base.tokenizer, ids, 256, ["\x00"], entry)
            return time.perf_counter() - start
        return once

    try:
        before, after = paired(run(WholeAnswerStopTest), run(incremental))
    finally:
        hf_engine.StopWatch = incremental
    return {"whole_answer_s": round(before, 3), "incremental_s": round(after, 3), "speedup": round(before / after, 2)}


def threads(base, entry, ids, default: int) -> dict:
    import torch

    from switchpoint.infer_local import hf_engine

    def run(count):
        def once():
            torch.set_num_threads(count)
            start = time.perf_counter()
            hf_engine.generate_batch(base.model, base.tokenizer, ids, 64, ["\n"], entry)
            return time.perf_counter() - start
        return once

    before, after = paired(run(default), run(1))
    return {"default_threads": default, "default_s": round(before, 3), "one_thread_s": round(after, 3),
            "speedup_of_one_thread": round(before / after, 2), "cores_this_process_may_use": len(os.sched_getaffinity(0))}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "n/a"


def one_sweep(tmp: Path, warm: bool, index: int) -> tuple[float, dict[str, float]]:
    """One smoke JSQuAD sweep from scratch in a fresh process: its wall seconds and each step's."""
    store = tmp / f"store-{'warm' if warm else 'plain'}-{index}"
    env = {**os.environ, WARM_SWITCH: "1" if warm else "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "switchpoint", "run", "sweep", "--sweep", "smoke", "--task", "jsquad",
                    "--store", str(store)], check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    runs = store / "smoke" / "jsquad" / "runs"
    steps = {p.stem: json.loads(p.read_text())["wall_s"] for p in sorted(runs.glob("*.json"))}
    shutil.rmtree(store)
    return wall, steps


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {step: round(statistics.median(r[step] for r in runs), 3) for step in runs[0]}


def smoke_sweep(tmp: Path) -> dict:
    load_before = loadavg()
    plain, warm = [], []
    for i in range(SWEEP_REPEATS):  # alternating, so a change in load hits both alike
        for is_warm in ((False, True) if i % 2 == 0 else (True, False)):
            (warm if is_warm else plain).append(one_sweep(tmp, is_warm, i))
    before = statistics.median(w for w, _ in plain)
    after = statistics.median(w for w, _ in warm)
    return {"plain_subprocess_wall_s": round(before, 2), "warm_launcher_wall_s": round(after, 2),
            "speedup": round(before / after, 2), "wall_s": round(after, 2), "target_s": 10.0, "met": after < 10.0,
            "repeats": SWEEP_REPEATS, "plain_steps_wall_s": _medians([s for _, s in plain]),
            "steps_wall_s": _medians([s for _, s in warm]), "loadavg_before": load_before, "loadavg_after": loadavg()}


def main() -> dict:
    import torch

    load = round(os.getloadavg()[0], 2)
    default_threads = torch.get_num_threads()  # before any section sets its own
    with tempfile.TemporaryDirectory() as tmp:
        base, entry, ids = generation_setup(Path(tmp))
        result = {"load_average_1min": load, "stop_strings": stop_strings(base, entry, ids),
                  "threads": threads(base, entry, ids, default_threads), "smoke_jsquad_sweep": smoke_sweep(Path(tmp))}
    for section, figures in result.items():
        save_results("overheads", section, figures)
    return result


if __name__ == "__main__":
    res = main()
    s, t, w = res["stop_strings"], res["threads"], res["smoke_jsquad_sweep"]
    print(f"load average {res['load_average_1min']}; medians of {REPEATS} paired runs")
    print_ratio("hf engine stop strings, 8 XL-Sum prompts x 256 tokens", "whole answer decoded every step (v0.1)",
                s["whole_answer_s"], "newest tokens only", s["incremental_s"])
    print_ratio("torch threads, one generation batch", f"torch's default ({t['default_threads']} threads)",
                t["default_s"], "1 thread", t["one_thread_s"])
    print(f"smoke JSQuAD sweep: load {w['loadavg_before']} (before) / {w['loadavg_after']} (after); "
          f"medians of {w['repeats']} paired sweeps")
    print_ratio("smoke JSQuAD sweep (local runner)", "plain subprocess per job", w["plain_subprocess_wall_s"],
                "warm launcher", w["warm_launcher_wall_s"], target="< 10 s on a quiet 2-core machine")
    print(f"  {'met' if w['met'] else 'MISSED'}: warm {w['wall_s']} s vs target < {w['target_s']} s")
    for step, after in w["steps_wall_s"].items():
        print(f"  {step}: {w['plain_steps_wall_s'][step]} s -> {after} s")
