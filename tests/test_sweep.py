"""End-to-end smoke sweeps: every step, resumable through the store, on a folder and on S3."""

from __future__ import annotations

import json
from pathlib import Path

from switchpoint.core import manifests
from switchpoint.core.store import open_store
from switchpoint.orchestration.sweep import run_sweep

SMOKE_WITH_API = """
name: smokeapi
tasks: [jsquad]
data: {source: bundled, eval_size: 12}
sizes: [0, 2, 4]
seeds: [0]
models: [tiny-gpt-neox]
api_models: [claude-haiku-4.5]
fewshot_local: {enabled: true, shots: [0, 2]}
fewshot_api: {shots: [0, 2], mode: auto}
train: {epochs: 3, batch_size: 2, learning_rate: 0.01, min_steps: 12, lora_r: 8, lora_alpha: 16, lora_dropout: 0.0,
        cutoff_len: 1536, instance_type: local}
infer: {engine: hf, batch_size: 8, instance_type: local}
score: {bootstrap: 1000, instance_type: local}
"""


def _sweep(tmp_path: Path) -> dict:
    path = tmp_path / "smokeapi.yaml"
    path.write_text(SMOKE_WITH_API, encoding="utf-8")
    return manifests.load_sweep(path)


def _no_aws_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _predictions(folder: Path) -> dict[str, list[dict]]:
    """Predictions without the timing field, which differs between runs by nature."""
    out = {}
    for path in sorted(folder.rglob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        out[path.relative_to(folder).as_posix()] = [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]
    return out


def test_smoke_sweep_killed_after_train_resumes_with_identical_results(tmp_path, monkeypatch):
    _no_aws_credentials(monkeypatch, tmp_path)
    sweep, task = _sweep(tmp_path), manifests.load_task("jsquad")

    # An uninterrupted sweep.
    straight = tmp_path / "straight"
    run_sweep(sweep, task, open_store(straight))
    a = straight / "smokeapi" / "jsquad"
    for name in ("results.csv", "transitions.csv", "report.md", "report.html"):
        assert (a / "report" / name).exists(), name
    assert (a / "report" / "_SUCCESS").exists()
    # Without AWS credentials the API arm is skipped with a notice, not an error.
    assert "no AWS credentials" in (a / "report" / "report.md").read_text(encoding="utf-8")

    # The same sweep, killed right after train (infer had started and left a partial file).
    resumed = tmp_path / "resumed"
    store = open_store(resumed)
    run_sweep(sweep, task, store, job="data")
    run_sweep(sweep, task, store, job="train")
    b = resumed / "smokeapi" / "jsquad"
    partial = b / "predictions" / "local" / "tiny-gpt-neox" / "finetune__tiny-gpt-neox__n=0__seed=0.jsonl"
    partial.parent.mkdir(parents=True)
    partial.write_text('{"id": "half a line', encoding="utf-8")
    adapters = sorted((b / "train" / "tiny-gpt-neox").rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in adapters if p.is_file()}
    train_record = (b / "runs" / "train-tiny-gpt-neox.json").read_text()

    records = run_sweep(sweep, task, store)
    assert [r["step"] for r in records] == ["infer-local-tiny-gpt-neox", "infer-bedrock-claude-haiku-4.5", "score", "report"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # train was not redone
    assert (b / "runs" / "train-tiny-gpt-neox.json").read_text() == train_record
    assert _predictions(b / "predictions") == _predictions(a / "predictions")
    assert (b / "scores" / "summary.csv").read_text() == (a / "scores" / "summary.csv").read_text()
    assert (b / "report" / "transitions.csv").read_text() == (a / "report" / "transitions.csv").read_text()

    # Started again once everything is complete, it does nothing.
    assert run_sweep(sweep, task, store) == []


def test_smoke_sweep_through_s3_with_the_bedrock_fake(tmp_path, s3_bucket, bedrock_fake):
    sweep, task = _sweep(tmp_path), manifests.load_task("jsquad")
    store = open_store(f"s3://{s3_bucket}/team")
    run_sweep(sweep, task, store)
    run = store.child("smokeapi", "jsquad")
    for prefix in ("data", "train/tiny-gpt-neox", "predictions/local/tiny-gpt-neox",
                   "predictions/bedrock/claude-haiku-4.5", "scores", "report"):
        assert run.child(prefix).is_complete(), prefix
    metrics = run.read_json("predictions/bedrock/claude-haiku-4.5/bedrock_metrics.json")
    assert metrics["records_ok"] == 12 * 2 and metrics["usd"] > 0
    assert bedrock_fake.submissions == 0  # 12 records per arm: below the batch minimum, so on-demand
    # Every paid answer was saved in the run's store as it came (a killed sweep re-run pays nothing twice).
    assert run.child("state/infer-bedrock/claude-haiku-4.5").list(), "no durable infer-bedrock state in the store"
    summary = run.read_text("scores/summary.csv")
    assert "fewshot-api,claude-haiku-4.5,2,0" in summary
    transitions = run.read_text("report/transitions.csv")
    assert "claude-haiku-4.5" in transitions
    html = run.read_text("report/report.html")
    assert "data:image/png;base64," in html
    assert not (tmp_path / "runs").exists()  # every hand-over went through S3
    # status resolves the sweep as run did (the default API budget it added): every step done, none stale
    from switchpoint.orchestration.status import step_status

    assert {r["step"]: r["state"] for r in step_status(sweep, task, store)} == {
        s: "done" for s in ("data", "train-tiny-gpt-neox", "infer-local-tiny-gpt-neox",
                            "infer-bedrock-claude-haiku-4.5", "score", "report")}


def test_a_users_own_task_runs_the_whole_smoke_sweep(tmp_path):
    """A user's task is a YAML next to a JSONL file; the offline smoke sweep takes it as it is."""
    import random

    rng = random.Random(0)
    colours = ["赤", "青", "緑", "黄"]
    rows = [{"qid": f"q{i}", "q": f"{rng.choice(['りんご', '空', '葉', 'バナナ'])}{i}の色は？", "a": rng.choice(colours)}
            for i in range(60)]
    (tmp_path / "colors.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:44]) + "\n",
                                           encoding="utf-8")
    (tmp_path / "colors_eval.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[44:]) + "\n",
                                                encoding="utf-8")
    task_path = tmp_path / "colors.yaml"
    task_path.write_text("""
name: colors
sources:
  train: {type: file, uri: colors.jsonl, format: jsonl}
  eval: {type: file, uri: colors_eval.jsonl, format: jsonl}
fields: {id: qid, inputs: {question: q}, references: a}
prompt: {instruction: 色を一語で答えてください。, input_template: "質問：{question}"}
generation: {max_new_tokens: 4, stop: ["\\n"]}
metrics: [exact_match, f1]
""", encoding="utf-8")
    store = open_store(tmp_path / "runs")
    task = manifests.load_task(task_path)
    run_sweep(manifests.load_sweep("smoke"), task, store)
    # a user's task file gets its own store folder: its name and a hash of the file
    assert task["store_key"].startswith("colors-")
    report = tmp_path / "runs" / "smoke" / task["store_key"] / "report"
    assert (report / "_SUCCESS").exists()
    transitions = (report / "transitions.csv").read_text(encoding="utf-8")
    assert "exact_match" in transitions and "f1" in transitions
