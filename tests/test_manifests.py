"""Manifests validate with errors that name the file, the key and what was expected."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import tomllib
from switchpoint.core import manifests
from switchpoint.core.manifests import ManifestError

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_manifest_loads():
    for path in sorted((REPO / "manifests" / "tasks").glob("*.yaml")):
        assert manifests.load_task(path)["name"] == path.stem
    for path in sorted((REPO / "manifests" / "sweeps").glob("*.yaml")):
        sweep = manifests.load_sweep(path)
        assert sweep["name"] == path.stem and sweep["models"]
    assert {"open-calm-1b", "rinna-3.6b-ppo", "rinna-4b-ppo", "elyza-7b", "swallow-13b"} <= set(manifests.load_models())
    assert {"claude-2.1", "claude-instant-1.2"} <= set(manifests.load_api_models())
    assert "ml.g5.2xlarge" in manifests.load_prices()["instances"]


def test_study_sweep_matches_the_reference_study():
    study = manifests.load_sweep("study")
    assert manifests.sweep_sizes(study, "jsquad")[-1] == 4096
    assert manifests.sweep_sizes(study, "xlsum")[-1] == 1024
    # Claude 2.1 and Instant are retired: the study runs the replacements their manifest entries name
    api = manifests.load_api_models()
    replacements = [api[old]["availability"]["replacement"] for old in ("claude-2.1", "claude-instant-1.2")]
    assert study["api_models"] == replacements
    assert study["train"]["lora_r"] == 16 and study["train"]["epochs"] == 3 and study["train"]["cutoff_len"] == 512
    assert study["train"]["batch_size"] == 32 and study["train"]["micro_batch_size"] == 4


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_file_key_and_expected_keys(tmp_path):
    text = (REPO / "manifests" / "sweeps" / "smoke.yaml").read_text().replace("seeds: [0]", "seeds: [0]\nseedz: [1]")
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ManifestError, match=r"bad\.yaml: at \(top level\): unknown key\(s\) 'seedz'; expected one of"):
        manifests.load_sweep(path)


def test_wrong_type_names_the_nested_key(tmp_path):
    text = (REPO / "manifests" / "tasks" / "jsquad.yaml").read_text().replace("max_new_tokens: 32", "max_new_tokens: many")
    path = _write(tmp_path, "jsquad2.yaml", text)
    with pytest.raises(ManifestError, match=r"jsquad2\.yaml: at generation\.max_new_tokens: 'many' is not of type 'integer'"):
        manifests.load_task(path)


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, "t.yaml", "name: t\nsources: {}\n")
    with pytest.raises(ManifestError, match=r"t\.yaml: at \(top level\): 'fields' is required but missing"):
        manifests.load_task(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "name: x\nsizes: [0, 2\nseeds: [0]\n")
    with pytest.raises(ManifestError, match=r"broken\.yaml:\d+: not valid YAML"):
        manifests.load_sweep(path)


def test_unknown_model_in_a_sweep(tmp_path):
    path = _write(tmp_path, "s.yaml", "name: s\nsizes: [0, 2]\nseeds: [0]\nmodels: [gpt-5-local]\n")
    with pytest.raises(ManifestError, match=r"s\.yaml: at models: unknown model 'gpt-5-local'; known: .*tiny-gpt-neox"):
        manifests.load_sweep(path)


def test_unknown_metric_and_template_placeholder(tmp_path):
    base = (REPO / "manifests" / "tasks" / "jsquad.yaml").read_text()
    bad_metric = _write(tmp_path, "m.yaml", base.replace("metrics: [exact_match, f1, f1_mecab]", "metrics: [bleu]"))
    with pytest.raises(ManifestError, match=r"at metrics: unknown metric 'bleu'"):
        manifests.load_task(bad_metric)
    bad_field = _write(tmp_path, "f.yaml", base.replace("質問：{question}", "質問：{query}"))
    with pytest.raises(ManifestError, match=r"at prompt.input_template: placeholder\(s\) \['query'\]"):
        manifests.load_task(bad_field)


def test_unknown_model_and_api_model_lookups():
    with pytest.raises(ManifestError, match="unknown model 'nope'"):
        manifests.get_model("nope")
    with pytest.raises(ManifestError, match="unknown API model 'nope'"):
        manifests.get_api_model("nope")


def test_every_api_price_has_a_date_and_source():
    for entry in manifests.load_api_models().values():
        assert entry["price_date"] and entry["price_source"]
        assert entry["input_per_mtok"] > 0 and entry["output_per_mtok"] > 0


def test_core_install_does_not_pull_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert "torch" not in core and "transformers" not in core and "boto3" not in core
    extras = project["optional-dependencies"]
    for name in ("train", "infer-local", "infer-bedrock", "score", "report", "dev"):
        assert name in extras
    assert not any("torch" in dep for dep in extras["score"] + extras["infer-bedrock"])


def test_a_wheel_carries_the_manifests_and_bundled_data(tmp_path):
    """Installed from a wheel (as in an image), the package must still find its manifests."""
    pytest.importorskip("build")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("switchpoint-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("switchpoint/manifests/models.yaml", "switchpoint/manifests/tasks/jsquad.yaml",
                   "switchpoint/manifests/sweeps/smoke.yaml", "switchpoint/manifests/data/jsquad/train.json",
                   "switchpoint/manifests/data/jsquad/LICENSE", "switchpoint/manifests/data/xlsum/eval.jsonl",
                   "switchpoint/cli.py"):
        assert needed in names, needed
    # The installed layout finds manifests next to the package.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = subprocess.run([sys.executable, "-c", "import switchpoint.core.manifests as m; print(m.manifest_dir()); m.load_sweep('smoke')"],
                           capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(target / "switchpoint" / "manifests")
