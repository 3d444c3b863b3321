"""The arms of a run (N shots x seed x variant), their requests, mode and cost estimate; no AWS."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import click
from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.datafolder import (
    data_info,
    load_task_from_data,
    read_eval_set,
    read_train_set,
)
from switchpoint.core.predictions import Arm
from switchpoint.core.pricing import token_usd
from switchpoint.core.prompts import variant_spec
from switchpoint.infer_bedrock.context import NAME
from switchpoint.infer_bedrock.requests import (
    ArmPlan,
    build_arm_requests,
    context_guard,
    max_output_tokens,
)
from switchpoint.infer_bedrock.settings import Settings, arm_mode


def resolve_model_id(settings: Settings, api_model: dict) -> str:
    """``--model-id``, else the manifest's inference profile (newer Claude needs one), else its model id."""
    return settings.model_id or api_model.get("inference_profile") or api_model["bedrock_model_id"]


def resolve_region(settings: Settings, api_model: dict, model_id: str) -> str | None:
    if settings.region:
        return settings.region
    arn = re.match(r"arn:aws[^:]*:bedrock:([a-z0-9-]+):", model_id)
    return arn.group(1) if arn else api_model.get("region")


def variants_of(settings: Settings) -> list[str | None]:
    if not settings.variants:
        return [None]
    variants = [None if v.lower() in ("none", "null", "-") else v for v in settings.variants]
    if len(set(variants)) != len(variants):
        raise JobError(f"--variants {','.join(settings.variants)}: names the plain layout (none/null/-) twice")
    return variants


def shots_and_seeds(settings: Settings, data_dir: Path) -> tuple[list[int], list[int]]:
    """The shots and seeds asked for, else the data folder's; each must have been prepared."""
    info = data_info(data_dir)
    shots = settings.shots if settings.shots is not None else list(info["sizes"])
    seeds = settings.seeds if settings.seeds is not None else list(info["seeds"])
    if not shots or not seeds:
        raise JobError(f"no arms to run: shots {shots}, seeds {seeds}; give --shots and --seeds")
    for option, asked, prepared in (("--shots", shots, info["sizes"]), ("--seeds", seeds, info["seeds"])):
        missing = [v for v in asked if v not in prepared and not (option == "--shots" and v == 0)]
        if missing:
            raise JobError(f"{option} {','.join(map(str, missing))}: not prepared in the data folder {data_dir} "
                           f"(it has {', '.join(map(str, prepared))}); re-run the data step with them")
    return [int(n) for n in shots], [int(s) for s in seeds]


def plan_arms(settings: Settings, data_dir: Path, api_model: dict) -> tuple[dict, list[ArmPlan], int]:
    """The task, one ArmPlan per (variant, seed, N) with its requests, mode, estimate or skip reason."""
    task = load_task_from_data(data_dir)
    shots, seeds = shots_and_seeds(settings, data_dir)
    eval_set = read_eval_set(data_dir)
    if not eval_set:
        raise JobError(f"{Path(data_dir) / 'eval.jsonl'}: no eval examples; re-run the data step")
    for lineno, example in enumerate(eval_set, start=1):
        if not isinstance(example, dict) or not isinstance(example.get("id"), (str, int)):
            raise JobError(f"{Path(data_dir) / 'eval.jsonl'}: example {lineno} has no 'id'; re-run the data step")
    variants = variants_of(settings)
    for variant in variants:
        variant_spec(task, variant)  # unknown variant -> JobError naming the known ones
    max_tokens = max_output_tokens(task, api_model)
    plans: list[ArmPlan] = []
    info = data_info(data_dir)  # above seeds_up_to_n only the smallest prepared seed has shots
    train_sets: dict[tuple[int, int], list[dict]] = {}
    for variant in variants:
        for seed in seeds:
            for n in (k for k in shots if seed in manifests.seeds_at(k, info["seeds"], info.get("seeds_up_to_n"))):
                arm = Arm("fewshot-api", api_model["name"], n, seed, variant)
                if (seed, n) not in train_sets:  # the same shots serve every variant: read them once
                    train_sets[seed, n] = read_train_set(data_dir, seed, n)
                requests = build_arm_requests(task, arm, len(plans), eval_set, train_sets[seed, n], max_tokens)
                plan = ArmPlan(arm, requests)
                plan.skipped = context_guard(requests, max_tokens, api_model, n)
                plan.mode, _ = arm_mode(api_model, settings, len(requests))
                plan.est_input_tokens = sum(r.est_input_tokens for r in requests)
                plan.est_output_tokens = sum(r.est_output_tokens for r in requests)
                plan.est_usd = token_usd(plan.est_input_tokens, plan.est_output_tokens, api_model,
                                         batch=plan.mode == "batch")
                plans.append(plan)
    return task, plans, max_tokens


def print_plan(plans: Sequence[ArmPlan], api_model: dict, model_id: str) -> float:
    """Per arm: mode, records, estimated tokens and dollars (ceilings: see estimate_tokens); returns the total."""
    click.echo(f"{NAME} plan: {api_model['name']} ({model_id}), prices of {api_model['price_date']}, "
               f"batch discount {float(api_model['batch_discount']):.0%}; estimates are upper bounds")
    click.echo(f"  {'arm':<52} {'mode':<9} {'records':>7} {'est. in tok':>12} {'est. out tok':>12} {'est. USD':>10}")
    total = 0.0
    for plan in plans:
        if plan.skipped:
            click.echo(f"  {plan.arm.label:<52} skipped: {plan.skipped}")
            continue
        total += plan.est_usd
        click.echo(f"  {plan.arm.label:<52} {plan.mode:<9} {len(plan.requests):>7} {plan.est_input_tokens:>12} "
                   f"{plan.est_output_tokens:>12} {plan.est_usd:>10.4f}")
    live = [p for p in plans if not p.skipped]
    click.echo(f"  {'total':<52} {'':<9} {sum(len(p.requests) for p in live):>7} "
               f"{sum(p.est_input_tokens for p in live):>12} {sum(p.est_output_tokens for p in live):>12} {total:>10.4f}")
    return total
