"""seeds_up_to_n: the data step draws every seed only up to that N, and every job that reads training
sets (train, infer-local, infer-bedrock) runs exactly the (seed, N) pairs the data folder holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from switchpoint.core import manifests
from switchpoint.data.job import Settings, prepare


@pytest.fixture(scope="module")
def uneven_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uneven")
    prepare(Settings(task="jsquad", sizes=[0, 2, 4, 8], seeds=[0, 1, 2], source="bundled", eval_size=4,
                     seeds_up_to_n=2), out)
    return out


EXPECTED = {(0, 2), (1, 2), (2, 2), (0, 4), (0, 8)}


def test_seeds_at_repeats_seeds_only_up_to_the_limit():
    assert manifests.seeds_at(2, [2, 0, 1], 2) == [2, 0, 1]
    assert manifests.seeds_at(4, [2, 0, 1], 2) == [0]  # the smallest seed, whatever the order
    assert manifests.seeds_at(4096, [0, 1], None) == [0, 1]


def test_train_trains_the_pairs_the_data_folder_holds(uneven_data):
    from switchpoint.train.job import plan
    from switchpoint.train.settings import Settings as TrainSettings

    _, _, sets = plan(TrainSettings(model="tiny-llama"), uneven_data)
    assert set(sets) == EXPECTED


def test_infer_local_runs_the_same_pairs(uneven_data):
    from switchpoint.infer_local.passes import plan_passes
    from switchpoint.infer_local.settings import Settings as InferSettings

    settings = InferSettings(model="tiny-llama", arms=["finetune", "fewshot-local"], shots=[0, 2, 4])
    passes = plan_passes(settings, "tiny-llama", [0, 2, 4, 8], [0, 1, 2], [0, 2, 4], 2)
    adapters = {p.adapter for p in passes if p.adapter}
    assert adapters == EXPECTED
    shots = {p.shots for p in passes if p.shots}
    assert shots == {(0, 2), (1, 2), (2, 2), (0, 4)}


def test_infer_bedrock_asks_only_for_prepared_shots(uneven_data):
    from switchpoint.infer_bedrock.arms import plan_arms
    from switchpoint.infer_bedrock.settings import Settings as BedrockSettings

    api = {**manifests.get_api_model("claude-haiku-4.5"), "name": "claude-haiku-4.5"}
    _, plans, _ = plan_arms(BedrockSettings(api_model="claude-haiku-4.5", shots=[0, 2, 4], seeds=[0, 1, 2]),
                            uneven_data, api)
    assert {(p.arm.seed, p.arm.n) for p in plans} == {(0, 0), (1, 0), (2, 0), (0, 2), (1, 2), (2, 2), (0, 4)}
