"""FilesystemWeightSync against a real redis-server: versions are announced, reload exactly, are
pruned to `keep`, reach an actor engine, and a failed export leaves nothing behind. The NCCL path
runs only on a machine with two GPUs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.common.streams import redis_client
from deepretrieval.learner.base import PublishablePolicy, WeightSync
from deepretrieval.learner.trainer import Trainer
from deepretrieval.learner.weight_sync import FilesystemWeightSync, published_versions, versions_to_prune

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


@pytest.fixture(scope="module")
def tiny_policy_dir(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random 2-layer Llama with the default policy's tokenizer (so an engine can decode)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(policy_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-tokenized-llama")
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        if (policy_dir / name).is_file():
            shutil.copy2(policy_dir / name, path / name)
    return path


@pytest.fixture
def trainer(tiny_policy_dir: Path) -> Trainer:
    return Trainer.from_pretrained(tiny_policy_dir, LearnerConfig())


@pytest.fixture
async def coordinator(redis_url: str):
    client = redis_client(redis_url)
    yield Coordinator(client, "ws")
    await client.aclose()


def _perturb(trainer: Trainer, seed: int) -> None:
    """Add noise to every parameter, as a (large) optimizer step would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _greedy_ids(engine, tokenizer_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    from deepretrieval.actors.base import GenerationRequest
    from deepretrieval.common.sampling import SamplingConfig

    ids = AutoTokenizer.from_pretrained(tokenizer_dir)("statins and muscle pain", add_special_tokens=False)["input_ids"]
    [[sample]] = engine.generate([GenerationRequest(list(ids))], SamplingConfig(n=1, temperature=0.0, max_new_tokens=8, stop=[]))
    return sample.token_ids


def test_the_trainer_and_the_sync_satisfy_the_protocols(trainer: Trainer, tmp_path: Path, coordinator: Coordinator):
    assert isinstance(trainer, PublishablePolicy)
    assert isinstance(FilesystemWeightSync(tmp_path, coordinator), WeightSync)


async def test_published_versions_are_announced_and_reload_to_the_exported_weights(trainer: Trainer, tmp_path: Path,
                                                                                   coordinator: Coordinator):
    from transformers import AutoModelForCausalLM

    sync = FilesystemWeightSync(tmp_path / "weights", coordinator, keep=3)
    assert await coordinator.latest() is None
    first = await sync.publish(1, trainer)
    _perturb(trainer, seed=1)
    second = await sync.publish(2, trainer)

    latest = await coordinator.latest()
    assert (latest.version, latest.weights_dir) == (2, tmp_path / "weights" / "v000002")
    assert (second.weights_dir, second.announced, first.announced) == (latest.weights_dir, True, True)
    assert second.bytes == (latest.weights_dir / "model.safetensors").stat().st_size > 0
    assert second.export_s > 0 and second.announce_s > 0
    reloaded = AutoModelForCausalLM.from_pretrained(latest.weights_dir, dtype=torch.float32)
    live = trainer.model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, live[name]), name
    assert all((latest.weights_dir / f).is_file() for f in ("config.json", "tokenizer.json", "chat_template.jinja"))
    # Version 1 is still the unperturbed model, byte for byte a different file.
    older = AutoModelForCausalLM.from_pretrained(first.weights_dir, dtype=torch.float32)
    assert not torch.equal(older.model.embed_tokens.weight, reloaded.model.embed_tokens.weight)


async def test_pruning_keeps_the_newest_keep_versions_and_never_an_unannounced_newer_one(trainer: Trainer, tmp_path: Path,
                                                                                         coordinator: Coordinator):
    root = tmp_path / "weights"
    sync = FilesystemWeightSync(root, coordinator, keep=2)
    pruned: list[Path] = []
    for v in (1, 2, 3, 4):
        pruned += (await sync.publish(v, trainer)).pruned
    assert published_versions(root) == [3, 4]
    assert pruned == [root / "v000001", root / "v000002"]

    # A version on disk newer than the announced one (e.g. written by a learner that crashed before
    # announcing) and a crashed process's partial folder.
    shutil.copytree(root / "v000004", root / "v000009")
    (root / ".v000010.partial-999999").mkdir()
    publication = await sync.publish(5, trainer)
    assert published_versions(root) == [4, 5, 9]
    assert sorted(p.name for p in root.iterdir()) == ["v000004", "v000005", "v000009"]
    assert root / "v000003" in publication.pruned


def test_retention_rule_by_hand():
    # keep=2, announced 5: of the announced-or-older [1, 3, 5] keep the newest two (3, 5);
    # 7 is newer than the announcement and stays.
    assert versions_to_prune([1, 3, 5, 7], announced=5, keep=2) == [1]
    # The announced version and the newest on disk are kept even with keep=1.
    assert versions_to_prune([1, 2, 3], announced=2, keep=1) == [1]
    assert versions_to_prune([], announced=0, keep=1) == []


async def test_an_actor_engine_loads_the_announced_version_and_its_output_follows(trainer: Trainer, tiny_policy_dir: Path,
                                                                                  tmp_path: Path, coordinator: Coordinator):
    from deepretrieval.actors.hf_engine import HFEngine

    engine = HFEngine(tiny_policy_dir)
    before = _greedy_ids(engine, tiny_policy_dir)
    sync = FilesystemWeightSync(tmp_path / "weights", coordinator)
    _perturb(trainer, seed=2)
    await sync.publish(1, trainer)

    latest = await coordinator.latest()
    engine.load_weights(latest.weights_dir, latest.version)
    after = _greedy_ids(engine, tiny_policy_dir)
    fresh = HFEngine(latest.weights_dir)
    assert engine.policy_version == 1
    assert after == _greedy_ids(fresh, tiny_policy_dir)
    assert after != before
    engine.close()
    fresh.close()


class _CrashingPolicy:
    """A policy whose export writes part of a checkpoint into its folder, then fails (disk full)."""

    def __init__(self, trainer: Trainer):
        self.rank = 0
        self.model = trainer.model

    def export_safetensors(self, out_dir: Path, *, dtype: torch.dtype | None = None) -> Path:
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"\0" * 1024)
        raise OSError(28, "No space left on device")


async def test_a_crash_mid_export_leaves_no_folder_and_announces_nothing(trainer: Trainer, tmp_path: Path,
                                                                         coordinator: Coordinator):
    root = tmp_path / "weights"
    sync = FilesystemWeightSync(root, coordinator)
    await sync.publish(1, trainer)
    with pytest.raises(OSError, match="No space left"):
        await sync.publish(2, _CrashingPolicy(trainer))
    assert sorted(p.name for p in root.iterdir()) == ["v000001"]
    assert (await coordinator.latest()).version == 1
    # The version is still free: a retry publishes it.
    retry = await sync.publish(2, trainer)
    assert (retry.announced, published_versions(root)) == (True, [1, 2])


async def test_a_resumed_learner_republishing_a_version_replaces_the_old_folder(trainer: Trainer, tmp_path: Path,
                                                                               coordinator: Coordinator):
    from safetensors.torch import load_file

    root = tmp_path / "weights"
    sync = FilesystemWeightSync(root, coordinator)
    for v in (1, 2, 3):
        await sync.publish(v, trainer)
    # The learner crashed after publishing 3 and resumes from its checkpoint at version 2.
    _perturb(trainer, seed=3)
    republished = await sync.publish(2, trainer)
    assert sorted(p.name for p in root.iterdir()) == ["v000001", "v000002", "v000003"]
    on_disk = load_file(str(root / "v000002" / "model.safetensors"))
    assert torch.equal(on_disk["model.embed_tokens.weight"], trainer.model.model.embed_tokens.weight)
    # The Coordinator never moves its announcement back: the result says so.
    assert (republished.announced, (await coordinator.latest()).version) == (False, 3)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        FilesystemWeightSync(tmp_path, coordinator, keep=0)


def test_nccl_sync_refuses_to_start_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: this checks the CPU refusal")
    from deepretrieval.common.errors import ConfigError
    from deepretrieval.learner.nccl_weight_sync import NcclRendezvous, NcclWeightSync

    with pytest.raises(ConfigError, match="needs CUDA"):
        NcclWeightSync(client=object(), rendezvous=NcclRendezvous("127.0.0.1", 29555, 2))  # type: ignore[arg-type]

