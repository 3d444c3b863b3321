"""Shared by the benchmarks: real architectures' shapes for GPU runs, and writing results."""

import json
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Shapes of real architectures (from their published config.json files); weights are random,
# since speed needs no trained weights and a GPU machine may have no Hub access.
GPU_CONFIGS = {
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                               rope_theta=500000.0, tie_word_embeddings=True),
                 ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "gpt-neox-1b": ("gpt_neox", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                     num_attention_heads=8, vocab_size=50304, max_position_embeddings=2048,
                                     rotary_pct=0.25, tie_word_embeddings=False),
                    ["query_key_value"]),
}


def save_results(name: str, section: str, figures: dict) -> None:
    """Merge one section into bench/results/<name>.json."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[section] = figures
    path.write_text(json.dumps(existing, indent=2) + "\n")


def print_ratio(what: str, before_label: str, before_s: float, after_label: str, after_s: float,
                target: str | None = None) -> float:
    """Print one before/after pair measured in the same process, and return before/after (the speed-up).

    Every benchmark states its ratios through this line, so `make bench` shows them all alike.
    """
    ratio = before_s / after_s if after_s > 0 else float("inf")
    goal = f"  (target {target})" if target else ""
    print(f"RATIO {what}: {before_label} {before_s:.3f} s -> {after_label} {after_s:.3f} s = {ratio:.2f}x{goal}")
    return ratio
