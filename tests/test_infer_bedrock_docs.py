"""The infer-bedrock image README's settings table says what the settings model says."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from switchpoint.core.settings import option_name
from switchpoint.infer_bedrock import job as ib
from switchpoint.infer_bedrock.settings import Settings

README = Path(__file__).resolve().parents[1] / "images" / "infer-bedrock" / "README.md"


def readme_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `(--[a-z0-9-]+)` \| ([^|]+) \|", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {option: default.strip().strip("`") for option, default in rows}


def model_default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.is_required():
        return "(required)"
    default = field.get_default()
    return "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)


def test_every_setting_is_in_the_readme_with_the_models_default():
    documented = readme_defaults()
    expected = {option_name(name): model_default(name) for name in Settings.model_fields}
    assert documented == expected


def test_help_shows_the_models_defaults():
    text = " ".join(CliRunner().invoke(ib.command, ["--help"]).output.split())
    for name in ("concurrency", "poll_seconds", "max_retries", "batch_min_records", "job_timeout_hours"):
        assert f"[default: {Settings.model_fields[name].get_default()}]" in text
