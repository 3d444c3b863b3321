"""Scores → tables: one row per seed, one per arm (seeds pooled), and the bootstrap draws behind them.

Every interval of the report comes from one ``stats.Resamples``: the same example draws for every arm
and metric (so differences stay paired by example id), and, for arms with several seeds, a two-stage
bootstrap that draws seeds first and then examples (so the interval covers which N examples were
drawn as well as which evaluation examples were). See docs/report.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from switchpoint.core import layout, stats
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import load_task_from_data
from switchpoint.core.metric_names import KNOWN_METRICS

ArmKey = tuple  # (kind, model, variant, n, seed)
GroupKey = tuple  # (kind, model, variant, n): an arm with its seeds pooled
ARM_COLS = ["kind", "model", "variant", "n", "seed"]
GROUP_COLS = ["kind", "model", "variant", "n"]


@dataclass
class Scores:
    """scores.jsonl as matrices: per metric, examples x arms (NaN where an arm did not score an example)."""

    task: dict
    metrics: list[str]
    primary: str
    ids: list[str]
    arms: list[ArmKey]
    values: dict[str, np.ndarray]
    errors: np.ndarray  # records in error per arm
    summary: pd.DataFrame | None = None
    groups: dict[GroupKey, list[int]] = field(default_factory=dict)  # group -> arm columns (one per seed)

    @property
    def name(self) -> str:
        return str(self.task.get("name") or "task")


def _arm_of(record: dict, where: str) -> ArmKey:
    try:
        arm = record["arm"]
        return (str(arm["kind"]), str(arm["model"]), str(arm.get("variant") or ""), int(arm["n"]), int(arm["seed"]))
    except (KeyError, TypeError, ValueError) as err:
        raise JobError(f"{where}: not a score record with id and arm {{kind, model, n, seed}} ({err})") from None


def _read_records(path: Path) -> list[tuple[ArmKey, str, bool, dict[str, float], str]]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise JobError(f"{where}: not valid JSON ({err.msg}); re-run `switchpoint score`") from None
            if not isinstance(record, dict) or "id" not in record:
                raise JobError(f"{where}: not a score record with id and arm {{kind, model, n, seed}}")
            values = {}
            for key, value in record.items():
                if key in KNOWN_METRICS:
                    if value is None and record.get("error"):
                        value = 0.0  # a record in error scores 0, as the score job counts it
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise JobError(f"{where}: field {key}: expected a number in 0..1, got {value!r}")
                    values[key] = float(value)
            out.append((_arm_of(record, where), str(record["id"]), bool(record.get("error")), values, where))
    return out


def load_scores(run_dir: Path) -> Scores:
    """``scores/scores.jsonl`` of a run as matrices, with the task (``data/task.json``) and summary.csv."""
    path = Path(run_dir) / layout.SCORES / "scores.jsonl"
    if not path.exists():
        raise JobError(f"{path}: missing; run `switchpoint score` on this run first (the report needs scores)")
    task_path = Path(run_dir) / layout.DATA / layout.TASK_FILE
    task = load_task_from_data(Path(run_dir) / layout.DATA) if task_path.exists() else {"name": Path(run_dir).name}
    records = _read_records(path)
    if not records:
        raise JobError(f"{path}: holds no score records; re-run `switchpoint score`")
    found = sorted({m for _, _, _, values, _ in records for m in values})
    metrics = [m for m in task.get("metrics", []) if m in found] or found
    if not metrics:
        raise JobError(f"{path}: records carry no metric field (expected some of {', '.join(sorted(KNOWN_METRICS))})")
    ids = sorted({r[1] for r in records})
    arms = sorted({r[0] for r in records})
    row_of, col_of = {rid: i for i, rid in enumerate(ids)}, {arm: j for j, arm in enumerate(arms)}
    values = {m: np.full((len(ids), len(arms)), np.nan) for m in metrics}
    errors = np.zeros(len(arms), dtype=int)
    for arm, rid, error, scored, where in records:
        i, j = row_of[rid], col_of[arm]
        if not np.isnan(values[metrics[0]][i, j]):
            raise JobError(f"{where}: id {rid!r} appears twice for arm {arm}; re-run `switchpoint score`")
        for m in metrics:
            if m not in scored:
                raise JobError(f"{where}: field {m} is missing (other records have it); re-run `switchpoint score`")
            values[m][i, j] = scored[m]
        errors[j] += int(error)
    primary = task.get("primary_metric") if task.get("primary_metric") in metrics else metrics[0]
    scores = Scores(task, metrics, primary, ids, arms, values, errors, _read_summary(Path(run_dir)))
    for j, arm in enumerate(arms):
        scores.groups.setdefault(arm[:4], []).append(j)
    return scores


def _read_summary(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / layout.SCORES / "summary.csv"
    if not path.exists():
        return None
    summary = pd.read_csv(path)
    summary["variant"] = summary["variant"].fillna("").astype(str).replace({"None": "", "null": "", "nan": ""})
    return summary


class Draws:
    """The bootstrap draws of every arm, group and paired difference, from one shared ``Resamples``."""

    def __init__(self, scores: Scores, resamples: int, seed: int = 0):
        max_seeds = max(len(cols) for cols in scores.groups.values())
        self.scores = scores
        self.res = stats.Resamples(len(scores.ids), resamples, seed, max_seeds)
        self._arm = {m: self.res.means(v) for m, v in scores.values.items()}  # resamples x arms, percent below

    def arm(self, metric: str, column: int) -> np.ndarray:
        return self._arm[metric][:, column] * 100

    def group(self, metric: str, key: GroupKey) -> tuple[float, np.ndarray]:
        """(mean, draws) of a group in percent: seeds averaged; two-stage draws when it has several seeds."""
        cols = self.scores.groups[key]
        values = self.scores.values[metric][:, cols]
        point = float(np.nanmean(np.nanmean(values, axis=0))) * 100
        return point, self.res.two_stage(self._arm[metric][:, cols]) * 100

    def paired(self, metric: str, a: GroupKey, b: GroupKey) -> tuple[float, np.ndarray, int, int, int]:
        """(mean difference, draws, common, only_a, only_b): A minus B in points on the ids both scored."""
        cols_a, cols_b = self.scores.groups[a], self.scores.groups[b]
        values = self.scores.values[metric]
        present_a = ~np.isnan(values[:, cols_a]).any(axis=1)
        present_b = ~np.isnan(values[:, cols_b]).any(axis=1)
        common = present_a & present_b
        own_a = (~np.isnan(values[:, cols_a]) == common[:, None]).all()
        own_b = (~np.isnan(values[:, cols_b]) == common[:, None]).all()
        if own_a and own_b:  # the usual case: every arm scored the same ids, the cached draws are paired
            draws_a, draws_b = self._arm[metric][:, cols_a], self._arm[metric][:, cols_b]
        else:
            mask = np.repeat(common[:, None], len(cols_a) + len(cols_b), axis=1)
            both = self.res.means(values[:, cols_a + cols_b], mask)
            draws_a, draws_b = both[:, :len(cols_a)], both[:, len(cols_a):]
        point_a = np.nanmean(np.nanmean(np.where(common[:, None], values[:, cols_a], np.nan), axis=0))
        point_b = np.nanmean(np.nanmean(np.where(common[:, None], values[:, cols_b], np.nan), axis=0))
        diff = (self.res.two_stage(draws_a) - self.res.two_stage(draws_b)) * 100
        counts = int(common.sum()), int((present_a & ~present_b).sum()), int((present_b & ~present_a).sum())
        return float(point_a - point_b) * 100, diff, *counts


def per_seed_table(scores: Scores, draws: Draws) -> pd.DataFrame:
    """One row per arm x metric: mean, interval (percent), count, errors; summary.csv's figures where it has the row."""
    known = {}
    if scores.summary is not None:
        for row in scores.summary.itertuples(index=False):
            known[(row.kind, row.model, row.variant, int(row.n), int(row.seed), row.metric)] = row
    out = []
    for metric in scores.metrics:
        for j, arm in enumerate(scores.arms):
            column = scores.values[metric][:, j]
            count = int((~np.isnan(column)).sum())
            row = dict(zip(ARM_COLS, arm), metric=metric, count=count, errors=int(scores.errors[j]))
            got = known.get((*arm, metric))
            if got is not None:
                row.update(mean=float(got.mean), ci_low=float(got.ci_low), ci_high=float(got.ci_high))
            else:
                low, high = stats.percentile_interval(draws.arm(metric, j))
                row.update(mean=float(np.nanmean(column)) * 100, ci_low=low, ci_high=high)
            out.append(row)
    return pd.DataFrame(out)


def curve_table(scores: Scores, draws: Draws) -> pd.DataFrame:
    """One row per (kind, model, variant, n) x metric: seeds pooled, interval over seeds and examples."""
    out = []
    for metric in scores.metrics:
        for key, cols in sorted(scores.groups.items()):
            mean, sample = draws.group(metric, key)
            low, high = stats.percentile_interval(sample)
            count = int((~np.isnan(scores.values[metric][:, cols])).any(axis=1).sum())
            out.append(dict(zip(GROUP_COLS, key), metric=metric, seeds=len(cols), mean=mean, ci_low=low, ci_high=high,
                            count=count, errors=int(scores.errors[cols].sum()),
                            seed_list=",".join(str(scores.arms[c][4]) for c in cols)))
    return pd.DataFrame(out)
