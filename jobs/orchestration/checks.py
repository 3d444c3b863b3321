"""The pre-flight's checks, one function per concern; each adds problems and notices to ``Findings``.

A problem names the sweep file and key (or the model) and what to change; nothing here calls AWS
or the Hub (botocore's parameter validation runs on its bundled service model, offline).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.settings import JobSettings, load_settings
from switchpoint.orchestration.estimate import api_estimate, example_lengths
from switchpoint.orchestration.runners import CONTAINER_ROOT
from switchpoint.orchestration.steps import (
    ML_ROOT,
    Step,
    api_mode,
    bedrock_setting,
    infer_engine,
    model_entries,
    train_settings,
)

# Which sweep section holds each job's settings, for error messages that name the key.
SECTION = {"data": "data", "train": "train", "infer-local": "infer", "infer-bedrock": "fewshot_api",
           "score": "score", "report": "score"}
BF16_GIB_PER_B = 2e9 / 2**30  # 1e9 parameters at 2 bytes
NF4_GIB_PER_B = 0.6e9 / 2**30  # 4-bit weights plus quantisation constants and the bf16 parts
CUDA_CONTEXT_GIB = 1.5
JOB_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"  # TrainingJobName / ProcessingJobName in the service model


def _where(sweep: dict) -> str:
    return sweep.get("manifest_path") or f"sweep {sweep['name']}"


# --- every job's arguments through its own settings model -----------------------------------------
def settings_model(job: str) -> type[JobSettings] | None:
    """The job's settings model (``switchpoint.<job>.settings``), or None where it has none yet."""
    try:
        module = importlib.import_module(f"switchpoint.{job.replace('-', '_')}.settings")
    except ModuleNotFoundError:
        return None
    found = getattr(module, "Settings", None)
    if isinstance(found, type) and issubclass(found, JobSettings):
        return found
    candidates = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, JobSettings)
                  and v is not JobSettings and v.__module__ == module.__name__]
    return candidates[0] if len(candidates) == 1 else None


def parse_args(args: list[str]) -> dict[str, Any]:
    """Command-line options as a mapping (``--flag`` alone is True)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        name = args[i].removeprefix("--")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[name], i = args[i + 1].replace(ML_ROOT, CONTAINER_ROOT), i + 2
        else:
            values[name], i = True, i + 1
    return values


def job_settings(step: Step, sweep: dict, found: Any) -> None:
    """Parse the step's arguments with its job's own settings model, as the job itself will."""
    if step.kind == "local":
        return
    cls = settings_model(step.job)
    if cls is None:
        found.notice(f"{step.name}: arguments not checked: switchpoint.{step.job.replace('-', '_')} has no settings model")
        return
    values = step.hyperparameters if step.kind == "training" else parse_args(step.args)
    try:
        load_settings(cls, (f"{_where(sweep)}: at {SECTION[step.job]} (step {step.name})", values))
    except JobError as err:
        found.problem(str(err))


# --- the data step ---------------------------------------------------------------------------------
def data_step(sweep: dict, task: dict, done: Any, found: Any) -> None:
    """The data settings parse; a data folder already in the store holds every size and seed needed."""
    from switchpoint.data.settings import settings_for_sweep

    try:
        settings = settings_for_sweep(task["manifest_path"], task["name"], sweep)
    except JobError as err:
        found.problem(str(err))
        return
    if done is None:
        return
    info = done.read_json("data/data.json") if done.exists("data/data.json") else {}
    sizes = set(info.get("sizes", []))
    missing = sorted(set(settings.sizes) - sizes) + [f"seed {s}" for s in settings.seeds if s not in info.get("seeds", [])]
    if missing:
        found.problem(f"{done.child('data').uri}: the data folder was prepared for sizes {sorted(sizes)} and seeds "
                      f"{info.get('seeds')}; this sweep also needs {', '.join(map(str, missing))}: re-run the data step "
                      "(switchpoint run data --force)")


# --- the arms ----------------------------------------------------------------------------------------
def arms(sweep: dict, task: dict, found: Any) -> None:
    """API mode and availability, context windows; engine support and quantisation per open model."""
    lengths = example_lengths(task)
    for name in sweep["api_models"]:
        est = api_estimate(sweep, task, name, lengths)
        if est["mode"] == "unavailable":
            found.problem(f"{_where(sweep)}: at fewshot_api (mode {api_mode(sweep, name)}): {est['notice']}")
        else:
            found.notice(est["notice"])
        window = int(est["entry"].get("context_window") or 0)
        if window and est["largest_prompt_tokens"] > window:
            found.notice(f"{name}: the largest few-shot prompt is about {est['largest_prompt_tokens']:,} tokens, over its "
                         f"{window:,}-token context window: those arms will be skipped")
    if sweep["api_models"] and not (bedrock_setting(sweep, "role_arn") and bedrock_setting(sweep, "s3_prefix")):
        found.notice("no Bedrock batch role and S3 prefix (fewshot_api.role_arn / s3_prefix, or BEDROCK_ROLE_ARN / "
                     "BEDROCK_S3_PREFIX): API arms run on-demand")
    for model, entry in model_entries(sweep).items():
        _engine(sweep, task, model, entry, lengths, found)


def _engine(sweep: dict, task: dict, model: str, entry: dict, lengths: Any, found: Any) -> None:
    from switchpoint.infer_local.settings import ARCHITECTURES, VLLM_LORA, unsupported

    engine = infer_engine(sweep)
    arch = ARCHITECTURES.get(entry["family"], entry["family"])
    trains = any(n > 0 for n in manifests.sweep_sizes(sweep, task["name"]))
    reason = unsupported(engine, {**entry, "name": model}) if trains else None
    if reason:
        found.problem(f"{_where(sweep)}: at infer.engine: {reason}")
    elif engine == "auto" and arch not in VLLM_LORA:
        found.notice(f"{model}: engine auto serves its adapters with hf (vLLM has no LoRA for {arch})")
    if bool(sweep["train"].get("load_in_4bit")) or bool(entry.get("load_in_4bit")):
        found.notice(f"{model}: trained on a 4-bit base, so infer-local loads the base in 4-bit too (--load-in-4bit true): "
                     "its adapters are evaluated on the base they were trained on")
    shots = [k for k in (sweep["fewshot_local"]["shots"] if sweep["fewshot_local"]["enabled"] else []) if k > 0]
    context = int(entry.get("context_length") or 0)
    prompt = (max(shots, default=0) + 1) * lengths.input_tokens + task["generation"]["max_new_tokens"]
    if shots and context and prompt > context:
        found.notice(f"{model}: a {max(shots)}-shot prompt is about {prompt:,.0f} tokens (estimated high), over its "
                     f"{context:,}-token context: the input text is cut to fit or the arm is skipped")


def model_sources(sweep: dict, backend: str, found: Any) -> None:
    """A model read from a path exists here, and is only used where that path can be read."""
    for model, entry in model_entries(sweep).items():
        if entry["source"] == "hub" and not entry.get("revision"):
            found.notice(f"{model}: no revision pinned; the Hub's latest files will be used")
        elif entry["source"] == "hub" and not re.fullmatch(r"[0-9a-f]{40}", str(entry["revision"])):
            found.notice(f"{model}: revision {entry['revision']!r} is a branch or tag, not a commit: the Hub's files "
                         "may change between runs of this sweep; pin a 40-character commit sha")
        if entry["source"] != "local":
            continue
        if backend != "local":
            found.problem(f"{_where(sweep)}: at models: {model} is read from a path on this machine ({entry['path']}), "
                          f"which a {backend} job cannot read; publish it on the Hub (hub_id and revision) or use "
                          "BACKEND=local")
        elif not Path(entry["path"]).exists():
            found.problem(f"{_where(sweep)}: at models: {model}: path {entry['path']} does not exist")


# --- GPU memory ------------------------------------------------------------------------------------
def memory_gib(entry: dict, *, four_bit: bool, tokens_in_flight: int) -> float:
    """A rough peak: weights (bf16 or 4-bit), activations growing with tokens in flight, CUDA context."""
    params = float(entry.get("params_b") or 0)
    weights = params * (NF4_GIB_PER_B if four_bit else BF16_GIB_PER_B)
    activations = 0.25 * params * tokens_in_flight / 2048
    return weights + activations + CUDA_CONTEXT_GIB


def per_gpu_gib(prices: dict, instance: str) -> float | None:
    spec = prices["instances"].get(instance) or {}
    if not spec.get("gpus") or not spec.get("gpu_memory_gib"):
        return None
    return float(spec["gpu_memory_gib"]) / int(spec["gpus"])


def _bigger(prices: dict, need: float, processing: bool) -> str | None:
    fits = [(spec["on_demand_per_hour"], name) for name, spec in prices["instances"].items()
            if (per_gpu_gib(prices, name) or 0) >= need and (spec.get("processing") or not processing)]
    return min(fits)[1] if fits else None


def gpu_memory(sweep: dict, steps: list[Step], found: Any) -> None:
    """Each model's estimated peak GPU memory against its instance's memory per GPU, with a fix."""
    prices = manifests.load_prices()
    entries = model_entries(sweep)
    for step in steps:
        if not step.gpu or step.job not in ("train", "infer-local"):
            continue
        model = step.model
        entry = entries[model]
        have = per_gpu_gib(prices, step.instance_type)
        if have is None:
            found.problem(f"{step.name}: instance {step.instance_type} has no GPU memory in prices.yaml; "
                          "pick a GPU instance (train.instance_type / infer.instance_type or the model's instance_type)")
            continue
        four_bit = bool(sweep["train"].get("load_in_4bit")) or bool(entry.get("load_in_4bit"))
        if step.kind == "training":
            t = train_settings(sweep, step.hyperparameters)
            tokens = t.cutoff_len * (t.micro_batch_size or t.batch_size)
        else:
            tokens = int(entry.get("context_length") or 2048) * 2
        need = memory_gib(entry, four_bit=four_bit, tokens_in_flight=tokens)
        if need <= have:
            continue
        fixes = []
        if not four_bit:
            fixes.append(f"load_in_4bit: true for {model} (about {memory_gib(entry, four_bit=True, tokens_in_flight=tokens):.0f} GiB)")
        bigger = _bigger(prices, need, processing=step.kind != "training")
        if bigger:
            fixes.append(f"instance_type: {bigger} ({per_gpu_gib(prices, bigger):.0f} GiB per GPU)")
        found.problem(f"{step.name}: {model} needs about {need:.0f} GiB of GPU memory (estimate), {step.instance_type} "
                      f"has {have:.0f} GiB per GPU; set " + (" or ".join(fixes) or "a smaller model"))


# --- SageMaker job specs -----------------------------------------------------------------------------
def sagemaker_specs(sweep: dict, steps: list[Step], run: Any, options: dict, found: Any) -> None:
    """Build every job spec the sagemaker backend would submit and validate it offline."""
    from switchpoint.core.store import S3Store
    from switchpoint.orchestration import sagemaker

    if not isinstance(run, S3Store):
        found.problem(f"the sagemaker backend needs an s3:// store (got {run.uri if run is not None else 'none'}); "
                      "set STORE=s3://bucket/prefix")
        return
    try:
        role = sagemaker.sagemaker_role(sweep, options.get("role_arn"))
    except JobError as err:
        found.problem(str(err))
        return
    for step in steps:
        if step.kind == "local":
            continue
        spec = _spec(step, sweep, run, role, options, found)
        if spec is not None:
            _validate_spec(step, spec, found)


def _spec(step: Step, sweep: dict, run: Any, role: str, options: dict, found: Any) -> dict | None:
    from switchpoint.orchestration import sagemaker

    if step.instance_type == "local":
        found.problem(f"{step.name}: instance type 'local' cannot run on SageMaker (a tiny model is for BACKEND=local)")
        return None
    image = sagemaker.image_uri(step, sweep, options.get("registry"))
    if "/" not in image:
        found.problem(f"{step.name}: image {image!r} is not in a registry; run `make push` and pass --registry "
                      f"(or IMAGE_REGISTRY=...), or set images.{step.image} in the sweep")
        return None
    name = sagemaker.job_name(step, f"sp-{sweep['name']}")
    try:
        if step.kind == "training":
            return sagemaker.training_job_spec(step, run, sweep, image=image, role_arn=role, name=name)
        return sagemaker.processing_job_spec(step, run, sweep, image=image, role_arn=role, name=name)
    except JobError as err:
        found.problem(str(err))
        return None


def _validate_spec(step: Step, spec: dict, found: Any) -> None:
    try:
        import botocore.session
    except ImportError:
        found.problem("checking SageMaker job specs needs botocore: pip install 'switchpoint[aws]'")
        return
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    operation = "CreateTrainingJob" if step.kind == "training" else "CreateProcessingJob"
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model(operation).input_shape
    try:
        validate_parameters(spec, shape)
    except ParamValidationError as err:
        found.problem(f"{step.name}: the {operation} request is invalid: {' '.join(str(err).split())}")
    # botocore checks types, required members and minimums only; SageMaker also refuses values over
    # the service model's maximums and names outside its pattern, so those are checked here.
    over = _over_limits(spec, shape, operation)
    if over:
        found.problem(f"{step.name}: the {operation} request is over SageMaker's limits: {'; '.join(over[:3])}")
    name = spec.get("TrainingJobName") or spec.get("ProcessingJobName") or ""
    if not re.fullmatch(JOB_NAME, name):
        found.problem(f"{step.name}: job name {name!r} does not match SageMaker's pattern {JOB_NAME}")
    hosts = sorted({v for v in _strings(spec) if v.startswith("/") and not v.startswith(CONTAINER_ROOT)})
    if hosts:
        found.problem(f"{step.name}: the job spec carries host paths {hosts}; a SageMaker job cannot read them")


def _over_limits(value: Any, shape: Any, path: str) -> list[str]:
    """Every value of ``value`` above its shape's ``max`` (string and list length, number value)."""
    top = shape.metadata.get("max")
    out = []
    if top is not None:
        size = len(value) if isinstance(value, (str, list, dict)) else value if isinstance(value, (int, float)) else None
        if size is not None and size > top:
            out.append(f"{path} is {size} (at most {top})")
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                out += _over_limits(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            out += _over_limits(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            out += _over_limits(key, shape.key, f"{path} key {key!r}") + _over_limits(item, shape.value, f"{path}.{key}")
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []

