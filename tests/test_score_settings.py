"""The score image's README lists exactly the score and report settings, with the models' own defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from switchpoint.cli import main
from switchpoint.report.settings import ReportSettings
from switchpoint.score.settings import Settings as ScoreSettings

README = Path(__file__).resolve().parent.parent / "images" / "score" / "README.md"


def _table(heading: str) -> dict[str, str]:
    """option name (underscored) -> default cell, from the first table after ``heading``."""
    text = README.read_text(encoding="utf-8").split(heading, 1)[1]
    rows = [line for line in text.split("| option |", 1)[1].split("\n\n", 1)[0].splitlines()[2:] if line.startswith("|")]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for key in re.findall(r"`--([a-z0-9-]+)", cells[0]):
            out[key.replace("-", "_")] = cells[1]
    return out


@pytest.mark.parametrize("heading, model, command", [
    ("## Settings (command-line options", ScoreSettings, "score"),
    ("## The report job", ReportSettings, "report"),
])
def test_readme_lists_exactly_the_settings_with_their_defaults(heading, model, command):
    table = _table(heading)
    assert set(table) == set(model.model_fields)
    help_text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    for name, field in model.model_fields.items():
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            assert table[name] == str(field.default), name
            option = "--" + name.replace("_", "-")
            assert re.search(re.escape(option) + r" \S+ .*?\[default: " + re.escape(str(field.default)), help_text), option
