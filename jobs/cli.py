"""The ``switchpoint`` command: one subcommand per job, plus orchestration.

Subcommands are imported only when called, so ``switchpoint score --help`` works in the score image
without torch, and ``switchpoint train`` does not import boto3.
"""

from __future__ import annotations

import importlib

import click

# subcommand -> (module, attribute, one-line help shown in `switchpoint --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("switchpoint.data.job", "command", "Prepare eval set, training pool and nested training sets."),
    "train": ("switchpoint.train.job", "command", "LoRA-fine-tune one model on every sweep size and seed (one base load)."),
    "infer-local": ("switchpoint.infer_local.job", "command", "Generate with the base model and every adapter (one base load)."),
    "infer-bedrock": ("switchpoint.infer_bedrock.job", "command", "Few-shot Claude on Bedrock (batch or on-demand) with cost accounting."),
    "score": ("switchpoint.score.job", "command", "Score predictions (JSQuAD EM/F1, XLSum ROUGE) with bootstrap intervals."),
    "report": ("switchpoint.report.job", "command", "Transition points, costs, plots and a recommendation."),
    "run": ("switchpoint.orchestration.sweep", "run_command", "Run one job or a whole sweep on the local, docker or sagemaker backend."),
    "plan": ("switchpoint.orchestration.plan", "plan_command", "Check a sweep before anything is spent; print its jobs, GPU hours, API tokens and dollars."),
    "status": ("switchpoint.orchestration.status", "status_command", "Show which steps of a sweep are done, running, pending or failed."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            missing = getattr(err, "name", None) or str(err)
            extra = {"train": "train", "infer-local": "infer-local", "infer-bedrock": "infer-bedrock",
                     "score": "score", "report": "report"}.get(name, "dev")
            raise click.ClickException(f"'switchpoint {name}' needs a package that is not installed ({missing}); "
                                       f"install it with: pip install 'switchpoint[{extra}]'") from err
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, without importing every job (and torch) for --help.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, _, text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="switchpoint")
def main() -> None:
    """switchpoint: how many labelled examples before a LoRA-fine-tuned open model matches
    few-shot Claude on Bedrock, and when it is cheaper.

    \b
    A sweep runs: data -> train -> infer-local / infer-bedrock -> score -> report.
    Each job reads and writes the SageMaker /opt/ml layout, so the same command runs in a venv,
    in `docker run`, or as a SageMaker job. Usually you run `make sweep TASK=jsquad SWEEP=smoke`.
    """

if __name__ == "__main__":
    main()
