"""Record a finished full-grid run of the toy task as the small curve file the adaptive-sweep test replays.

Usage: python tests/data/adaptive/record.py STORE/toy-full-grid/toy-ja > tests/data/adaptive/toy-full-grid.json

Kept per fine-tuned (N, seed): the primary metric's per-example scores (0/1, as a string), the
train job's own wall seconds and trained tokens (train_metrics.json, via the report's results.csv)
and the infer job's wall seconds for that pass; plus the prompting tier's per-example scores and the
report's own N* row, so the test can check that its replay agrees with the report.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path


def main(run: Path) -> dict:
    sweep = json.loads((run / "data" / "sweep.json").read_text())
    task = json.loads((run / "data" / "task.json").read_text())
    metric = task.get("primary_metric") or task["metrics"][0]
    (row,) = [r for r in csv.DictReader(io.StringIO((run / "report" / "transitions.csv").read_text())) if r["metric"] == metric]
    prompt_kind, shots = row["prompt_kind"], int(row["prompt_shots"])
    scores: dict[tuple, dict[str, float]] = {}
    for line in (run / "scores" / "scores.jsonl").read_text().splitlines():
        record = json.loads(line)
        arm = record["arm"]
        scores.setdefault((arm["kind"], arm["n"], arm["seed"]), {})[record["id"]] = record[metric]
    ids = sorted(scores[("finetune", 0, 0)])

    def bits(key: tuple) -> str:
        return "".join(str(int(scores[key][i])) for i in ids)

    finetune: dict[str, dict[str, dict]] = {}
    for r in csv.DictReader(io.StringIO((run / "report" / "results.csv").read_text())):
        if r["kind"] != "finetune" or r["metric"] != metric:
            continue
        n, seed = int(r["n"]), int(r["seed"])
        metrics_file = run / "train" / r["model"] / "checkpoints" / "adapters" / f"seed={seed}" / f"n={n}" / "train_metrics.json"
        tokens = json.loads(metrics_file.read_text())["trained_tokens"] if n > 0 else 0
        finetune.setdefault(str(n), {})[str(seed)] = {
            "scores": bits(("finetune", n, seed)), "train_wall_s": float(r["train_wall_s"] or 0.0),
            "infer_wall_s": float(r["infer_wall_s"] or 0.0), "trained_tokens": tokens}
    return {
        "recorded_from": f"{sweep['name']}/{task['name']} (tests/data/adaptive/toy-full-grid.yaml)",
        "metric": metric, "grid": sweep["sizes"], "seeds": sweep["seeds"], "seeds_up_to_n": sweep.get("seeds_up_to_n"),
        "margin": float(row["margin"]), "examples": len(ids),
        "prompt": {"tier": f"{row['prompt_model']} ({prompt_kind}, {shots} shots)", "mean": float(row["prompt_mean"]),
                   "scores": bits((prompt_kind, shots, 0))},
        "finetune": finetune,
        "report": {k: (float(row[k]) if row[k] not in ("", None) else None)
                   for k in ("n_match", "n_star", "n_star_low", "n_star_high")},
    }


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1])), sys.stdout, indent=1)
    sys.stdout.write("\n")
