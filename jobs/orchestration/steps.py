"""The steps of a sweep for one task: which job, which inputs and outputs in the store, which settings.

A step is data only. The runners in ``backends.py`` turn a step into a local subprocess, a
``docker run`` or a SageMaker job; all three stage the same folders into the same ``/opt/ml``
layout, so the jobs never know which one ran them.

Store layout (relative to ``STORE/<sweep>/<task>/``): see docs/DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchpoint.core import manifests
from switchpoint.core.contract import encode_value

ML_ROOT = "{ml_root}"  # placeholder in step arguments, replaced by the runner with the job's root


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

    @property
    def checkpoints(self) -> str | None:
        return f"{self.output}/checkpoints" if self.kind == "training" else None


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def plan_steps(sweep: dict, task: dict, *, api_enabled: bool = True) -> list[Step]:
    """Every step of ``sweep`` for ``task``, in stage order."""
    name = task["name"]
    sizes = manifests.sweep_sizes(sweep, name)
    seeds = sweep["seeds"]
    train, infer, score = sweep["train"], sweep["infer"], sweep["score"]
    # The data step runs in-process wherever the sweep runs (orchestrate.run_data_step), so it has no args.
    steps = [Step(name="data", job="data", image="score", kind="local", inputs={}, output="data", stage=0)]
    models = manifests.load_models()
    for model in sweep["models"]:
        entry = models[model]
        on_gpu = entry["source"] != "tiny"
        # The model's own instance (a 13B model needs more GPU memory) wins over the sweep-wide default.
        train_instance = (entry.get("instance_type") or train["instance_type"]) if on_gpu else "local"
        hyper = {
            "model": model, "sizes": _csv(sizes), "seeds": _csv(seeds),
            **{k: encode_value(train[k]) for k in ("epochs", "batch_size", "learning_rate", "min_steps", "warmup_ratio",
                                                   "lora_r", "lora_alpha", "lora_dropout", "cutoff_len",
                                                   "gradient_checkpointing")},
            "load_in_4bit": encode_value(train["load_in_4bit"] or entry.get("load_in_4bit", False)),
        }
        steps.append(Step(
            name=f"train-{model}", job="train", image="train", kind="training", inputs={"data": "data"},
            output=f"train/{model}", hyperparameters=hyper, instance_type=train_instance, gpu=on_gpu,
            spot=bool(train["spot"]) and on_gpu, max_runtime_s=int(train["max_runtime_s"]), stage=1,
        ))
        arms = ["finetune"] + (["fewshot-local"] if sweep["fewshot_local"]["enabled"] else [])
        args = ["--model", model, "--arms", _csv(arms), "--sizes", _csv(sizes), "--seeds", _csv(seeds),
                "--engine", infer["engine"], "--batch-size", str(infer["batch_size"])]
        if sweep["fewshot_local"]["enabled"] and sweep["fewshot_local"]["shots"]:
            args += ["--shots", _csv(sweep["fewshot_local"]["shots"])]
        steps.append(Step(
            name=f"infer-local-{model}", job="infer-local", image="infer-local", kind="processing",
            inputs={"data": "data", "adapters": f"train/{model}/checkpoints/adapters"},
            output=f"predictions/local/{model}", args=args,
            instance_type=(entry.get("instance_type") or infer["instance_type"]) if on_gpu else "local", gpu=on_gpu, stage=2,
        ))
    api = sweep["fewshot_api"]
    for api_model in sweep["api_models"] if api_enabled else []:
        shots = api["shots"] if api["shots"] is not None else sizes
        args = ["--api-model", api_model, "--shots", _csv(shots), "--seeds", _csv(seeds), "--mode", api["mode"],
                "--skip-without-credentials"]
        variants = api["variants"].get(name)
        if variants:
            args += ["--variants", _csv(variants)]
        for option, key in (("--max-usd", "max_usd"), ("--role-arn", "role_arn"), ("--s3-prefix", "s3_prefix"),
                            ("--region", "region")):
            if api[key] is not None:
                args += [option, str(api[key])]
        steps.append(Step(
            name=f"infer-bedrock-{api_model}", job="infer-bedrock", image="infer-bedrock", kind="processing",
            inputs={"data": "data"}, output=f"predictions/bedrock/{api_model}", args=args,
            instance_type=score["instance_type"], stage=2,
        ))
    steps.append(Step(
        name="score", job="score", image="score", kind="processing",
        inputs={"data": "data", "predictions": "predictions"}, output="scores",
        args=["--task", f"{ML_ROOT}/processing/input/data", "--bootstrap", str(score["bootstrap"])],
        instance_type=score["instance_type"], stage=3,
    ))
    steps.append(Step(
        name="report", job="report", image="score", kind="processing", inputs={"run": ""}, output="report",
        args=["--sweep", manifests.manifest_ref(sweep, "sweeps")], instance_type=score["instance_type"], stage=4,
    ))
    return steps
