"""The steps of a sweep for one task: which job, which inputs and outputs in the store, which settings.

A step is data only. The runners in ``runners.py`` turn a step into a local subprocess, a
``docker run`` or a SageMaker job; all three stage the same folders into the same ``/opt/ml``
layout, so the jobs never know which one ran them.

Store layout (relative to ``STORE/<sweep>/<task>/``): ``switchpoint.core.layout``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from switchpoint.core import layout, manifests
from switchpoint.core.contract import JobError
from switchpoint.core.settings import encode_value, load_settings

ML_ROOT = "{ml_root}"  # placeholder in step arguments, replaced by the runner with the job's root
# Placeholder for the run's own store location as the job sees it (a folder, a mount or s3://...):
# a job that must keep state across a kill (infer-bedrock's paid answers) writes there directly.
RUN_STORE = "{run_store}"


@dataclass
class Step:
    name: str                      # unique within a task: data, train-<model>, infer-local-<model>, ...
    job: str                       # the `switchpoint` subcommand
    image: str                     # train | infer-local | infer-bedrock | score
    kind: str                      # training | processing | local (runs in-process wherever the sweep runs)
    inputs: dict[str, str]         # input/channel name -> store prefix relative to the run
    output: str                    # store prefix the job's outputs go to
    args: list[str] = field(default_factory=list)        # command-line options (processing jobs)
    hyperparameters: dict[str, str] = field(default_factory=dict)  # training jobs
    instance_type: str = "local"
    gpu: bool = False
    spot: bool = False
    max_runtime_s: int = 86400
    stage: int = 0                 # steps of one stage may run in parallel; stages run in order
    model: str | None = None       # the open or API model a train/infer step is for (None: data, score, report)

    @property
    def checkpoints(self) -> str | None:
        return f"{self.output}/checkpoints" if self.kind == "training" else None


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


# Sweep train/infer keys that are orchestration, not the jobs' own settings: every other key of those
# sections goes to the job as it is and is parsed by the job's settings model (defaults live there).
TRAIN_ORCHESTRATION_KEYS = ("instance_type", "spot", "max_runtime_s")
INFER_ORCHESTRATION_KEYS = ("instance_type",)
# Environment variables for the Bedrock batch role and prefix (distinct from the SageMaker role).
BEDROCK_ENV = {"role_arn": "BEDROCK_ROLE_ARN", "s3_prefix": "BEDROCK_S3_PREFIX"}


def bedrock_setting(sweep: dict, key: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The sweep's ``fewshot_api.<key>``, else ``$BEDROCK_ROLE_ARN`` / ``$BEDROCK_S3_PREFIX``."""
    environ = os.environ if environ is None else environ
    return sweep["fewshot_api"].get(key) or environ.get(BEDROCK_ENV[key]) or None


def api_mode(sweep: dict, api_model: str) -> str:
    """The sweep's mode for one API model (``fewshot_api.mode`` is one mode or a mapping per model)."""
    mode = sweep["fewshot_api"]["mode"]
    if isinstance(mode, dict):
        return mode.get(api_model, "auto")
    return mode


def model_entries(sweep: dict) -> dict[str, dict]:
    """The sweep's resolved model entries (a user's own models included)."""
    return sweep.get("model_entries") or {name: manifests.get_model(name) for name in sweep["models"]}


def train_hyperparameters(sweep: dict, task: dict, model: str, entry: dict) -> dict[str, str]:
    """The train job's hyperparameters: every job setting the sweep's ``train:`` section holds."""
    train = sweep["train"]
    hyper = {"model": model, "sizes": _csv(model_sizes(sweep, task, model)), "seeds": _csv(sweep["seeds"])}
    every = every_seed_at(sweep, model)
    if every is not None:
        hyper["every_seed_at"] = _csv(every)
    for key, value in train.items():
        if key not in TRAIN_ORCHESTRATION_KEYS and value is not None:
            hyper[key] = encode_value(value)
    hyper["load_in_4bit"] = encode_value(bool(train.get("load_in_4bit")) or bool(entry.get("load_in_4bit", False)))
    return hyper


def train_settings(sweep: dict, hyperparameters: dict[str, str]) -> Any:
    """A train step's settings as the job will resolve them (its own defaults for whatever the sweep
    leaves out): what the plan's estimates are computed from."""
    from switchpoint.train.settings import Settings

    try:
        return load_settings(Settings, (f"sweep {sweep['name']}: at train", hyperparameters))
    except JobError:
        # The pre-flight reports the bad value (checks.job_settings); estimates go on with the defaults.
        return load_settings(Settings, ("train defaults", {"model": hyperparameters["model"]}))


def infer_engine(sweep: dict) -> str:
    """The infer-local engine the sweep asks for, else the job's own default."""
    from switchpoint.infer_local.settings import Settings

    return sweep["infer"].get("engine") or Settings.model_fields["engine"].default


def plan_steps(sweep: dict, task: dict, *, api_enabled: bool = True) -> list[Step]:
    """Every step of ``sweep`` for ``task``, in stage order."""
    steps = [Step(name="data", job="data", image="score", kind="local", inputs={}, output=layout.DATA, stage=0)]
    for model, entry in model_entries(sweep).items():
        steps += _model_steps(sweep, task, model, entry)
    for api_model in sweep["api_models"] if api_enabled else []:
        steps.append(_bedrock_step(sweep, task, api_model))
    score = sweep["score"]
    steps.append(Step(
        name="score", job="score", image="score", kind="processing",
        inputs={"data": layout.DATA, "predictions": layout.PREDICTIONS}, output=layout.SCORES,
        args=["--task", f"{ML_ROOT}/processing/input/data", "--bootstrap", str(score["bootstrap"])],
        instance_type=score["instance_type"], stage=3,
    ))
    # The report reads the sweep from the data folder (sweep.json): no manifest path travels.
    steps.append(Step(
        name="report", job="report", image="score", kind="processing", inputs={"run": ""}, output=layout.REPORT,
        args=[], instance_type=score["instance_type"], stage=4,
    ))
    return steps


def model_sizes(sweep: dict, task: dict, model: str) -> list[int]:
    """The sizes a model is trained and evaluated at: the sweep's, or its own in an adaptive round."""
    return sorted((sweep.get("round_sizes") or {}).get(model) or manifests.sweep_sizes(sweep, task["name"]))


def every_seed_at(sweep: dict, model: str) -> list[int] | None:
    """In an adaptive round, the sizes that run every seed (the others run the smallest); None: every size.
    N=0 is always among them: it trains nothing and its base-model pass serves every seed."""
    every = (sweep.get("round_seeds") or {}).get(model)
    return None if every is None else sorted({0, *every})


def _model_steps(sweep: dict, task: dict, model: str, entry: dict) -> list[Step]:
    sizes = model_sizes(sweep, task, model)
    train, infer = sweep["train"], sweep["infer"]
    on_gpu = entry["source"] != "tiny"
    # The model's own instance (a 13B model needs more GPU memory) wins over the sweep-wide default.
    train_instance = (entry.get("instance_type") or train["instance_type"]) if on_gpu else "local"
    steps = [Step(
        name=layout.train_step(model), model=model, job="train", image="train", kind="training", inputs={"data": layout.DATA},
        output=layout.train_prefix(model), hyperparameters=train_hyperparameters(sweep, task, model, entry),
        instance_type=train_instance, gpu=on_gpu, spot=bool(train["spot"]) and on_gpu,
        max_runtime_s=int(train["max_runtime_s"]), stage=1,
    )]
    local = sweep["fewshot_local"]
    arms = ["finetune"] + (["fewshot-local"] if local["enabled"] else [])
    args = ["--model", model, "--arms", _csv(arms), "--sizes", _csv(sizes), "--seeds", _csv(sweep["seeds"])]
    if every_seed_at(sweep, model) is not None:
        args += ["--every-seed-at", _csv(every_seed_at(sweep, model))]
    for key, value in infer.items():
        if key not in INFER_ORCHESTRATION_KEYS and value is not None:
            args += ["--" + key.replace("_", "-"), encode_value(value)]
    if local["enabled"] and local["shots"]:
        args += ["--shots", _csv(local["shots"])]
    if bool(train.get("load_in_4bit")) or bool(entry.get("load_in_4bit")):
        args += ["--load-in-4bit", "true"]  # evaluate adapters on the 4-bit base they were trained on
    steps.append(Step(
        name=layout.infer_local_step(model), model=model, job="infer-local", image="infer-local", kind="processing",
        inputs={"data": layout.DATA, "adapters": layout.adapters_prefix(model)},
        output=layout.local_predictions_prefix(model), args=args,
        instance_type=(entry.get("instance_type") or infer["instance_type"]) if on_gpu else "local", gpu=on_gpu, stage=2,
    ))
    return steps


def _bedrock_step(sweep: dict, task: dict, api_model: str) -> Step:
    api = sweep["fewshot_api"]
    shots = api["shots"] if api["shots"] is not None else manifests.sweep_sizes(sweep, task["name"])
    args = ["--api-model", api_model, "--shots", _csv(shots), "--seeds", _csv(sweep["seeds"]),
            "--mode", api_mode(sweep, api_model), "--skip-without-credentials"]
    variants = api["variants"].get(task["name"])
    if variants:
        args += ["--variants", _csv(variants)]
    budget = api["max_usd"] if api["max_usd"] is not None else api.get("max_usd_default", {}).get(api_model)
    values = {"max_usd": budget, "region": api["region"],
              "role_arn": bedrock_setting(sweep, "role_arn"), "s3_prefix": bedrock_setting(sweep, "s3_prefix")}
    for key, value in values.items():
        if value is not None:
            args += ["--" + key.replace("_", "-"), str(value)]
    # Every paid answer is saved there before the next request, so a killed step never pays twice.
    args += ["--state", f"{RUN_STORE}/{layout.bedrock_state_prefix(api_model)}"]
    return Step(
        name=layout.infer_bedrock_step(api_model), model=api_model, job="infer-bedrock", image="infer-bedrock", kind="processing",
        inputs={"data": layout.DATA}, output=layout.bedrock_predictions_prefix(api_model), args=args,
        instance_type=sweep["score"]["instance_type"], stage=2,
    )
