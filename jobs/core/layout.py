"""The store layout of one run, in one place: ``STORE/<sweep>/<task>/…``.

Steps write to these prefixes; ``plan``, ``status``, the cost model and the report find files
through the same functions, never by globbing the store or parsing step names. Paths are relative
to the run root and use ``/`` (they are store keys as much as folder paths).

    data/                                          the data job's folder (task.json, eval.jsonl, …)
    train/<model>/checkpoints/adapters/seed=S/n=N/ one adapter (+ train_metrics.json)
    train/<model>/checkpoints/adapters/train_summary.json
    train/<model>/output/{model,data}/             the train job's /opt/ml/model and output/data
    predictions/local/<model>/                     infer-local predictions + infer_metrics.json
    predictions/bedrock/<api model>/               infer-bedrock predictions + bedrock_metrics.json
    scores/                                        scores.jsonl, summary.csv, score_metrics.json
    report/                                        results.csv, transitions.csv, plots/, report.{md,html}
    runs/<step>.json                               what the orchestration recorded for each step
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from switchpoint.core.datafolder import MODELS_FILE, SWEEP_FILE

DATA = "data"
PREDICTIONS = "predictions"
SCORES = "scores"
REPORT = "report"
TASK_FILE = "task.json"
DATA_RUN_FILES = (SWEEP_FILE, MODELS_FILE)  # the run's resolved sweep and models, carried by the data folder
ADAPTERS = "adapters"  # the train job's checkpoints/adapters/ folder
REPORT_MANIFEST = "runs/report-inputs.manifest"  # the keys a SageMaker report job is staged (ManifestFile)
TRAIN_METRICS = "train_metrics.json"
TRAIN_SUMMARY = "train_summary.json"
INFER_METRICS = "infer_metrics.json"
BEDROCK_METRICS = "bedrock_metrics.json"
SCORE_FILES = ("scores.jsonl", "summary.csv", "score_metrics.json")


def adapter_dir(seed: int, n: int) -> str:
    """One adapter's folder, relative to the adapters folder (the train job's checkpoints/adapters)."""
    return f"seed={seed}/n={n}"


def train_prefix(model: str) -> str:
    return f"train/{model}"


def checkpoints_prefix(model: str) -> str:
    return f"{train_prefix(model)}/checkpoints"


def adapters_prefix(model: str) -> str:
    return f"{checkpoints_prefix(model)}/{ADAPTERS}"


def local_predictions_prefix(model: str) -> str:
    return f"{PREDICTIONS}/local/{model}"


def bedrock_predictions_prefix(api_model: str) -> str:
    return f"{PREDICTIONS}/bedrock/{api_model}"


def bedrock_state_prefix(api_model: str) -> str:
    """infer-bedrock's append-only resume state (paid answers, submitted jobs) for one API model."""
    return f"state/infer-bedrock/{api_model}"


# --- steps -----------------------------------------------------------------------------------
def train_step(model: str) -> str:
    return f"train-{model}"


def infer_local_step(model: str) -> str:
    return f"infer-local-{model}"


def infer_bedrock_step(api_model: str) -> str:
    return f"infer-bedrock-{api_model}"


def run_record(step: str) -> str:
    """Where the orchestration records a step's status, backend, instance and seconds."""
    return f"runs/{step}.json"


# --- what the report reads -------------------------------------------------------------------
@dataclass(frozen=True)
class RunContents:
    """The models, API models, sizes and seeds of a run: enough to name every file the report reads."""

    models: tuple[str, ...]
    api_models: tuple[str, ...]
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]

    def train_metrics(self, model: str) -> Iterable[tuple[int, int, str]]:
        """(seed, n, path) of every adapter's train_metrics.json the sweep asks for."""
        for seed in self.seeds:
            for n in self.sizes:
                if n > 0:
                    yield seed, n, f"{adapters_prefix(model)}/{adapter_dir(seed, n)}/{TRAIN_METRICS}"

    def report_inputs(self) -> list[str]:
        """Every file the report job reads (some may be absent when a step was skipped or failed)."""
        files = [f"{DATA}/{TASK_FILE}", *(f"{DATA}/{name}" for name in DATA_RUN_FILES),
                 *(f"{SCORES}/{name}" for name in SCORE_FILES)]
        steps = [train_step(m) for m in self.models] + [infer_local_step(m) for m in self.models] \
            + [infer_bedrock_step(a) for a in self.api_models] + ["data", "score"]
        files += [run_record(step) for step in steps]
        for model in self.models:
            files += [path for _, _, path in self.train_metrics(model)]
            files.append(f"{adapters_prefix(model)}/{TRAIN_SUMMARY}")
            files.append(f"{local_predictions_prefix(model)}/{INFER_METRICS}")
        files += [f"{bedrock_predictions_prefix(a)}/{BEDROCK_METRICS}" for a in self.api_models]
        return files
