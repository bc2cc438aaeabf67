"""Every config shipped in configs/ loads and validates (PRIME-RL's test_configs pattern)."""

from pathlib import Path

import pytest

from deepretrieval.common.config import load_config
from deepretrieval.common.train_config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"scifact-bm25-cpu.yaml", "pubmed-emulator-cpu.yaml", "geoquery-sql-cpu.yaml", "pubmed-qwen3b-gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_validates(path: Path):
    cfg = load_config(TrainConfig, path)
    assert cfg.max_in_flight_groups >= cfg.actors.groups_per_batch
    assert cfg.run == path.stem
