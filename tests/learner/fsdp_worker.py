"""One rank of the 2-rank FSDP2 check in test_trainer.py; run by torchrun, not collected by pytest.

    python -m torch.distributed.run --nproc_per_node 2 tests/learner/fsdp_worker.py MODEL_DIR SAMPLES_PT CONFIG_JSON OUT_DIR

Each rank loads the tiny model, takes its share of the global batch, runs one `train_step`, then
the ranks export the policy and save a DCP checkpoint together; rank 0 writes the step's metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from deepretrieval.common.learner_config import LearnerConfig
from deepretrieval.learner.sequences import shard_for_rank
from deepretrieval.learner.sharding import init_process_group, rank_and_world
from deepretrieval.learner.trainer import Trainer


def main(model_dir: Path, samples_file: Path, config_file: Path, out_dir: Path) -> None:
    device = torch.device("cpu")
    init_process_group(device)
    rank, world = rank_and_world()
    cfg = LearnerConfig.model_validate_json(config_file.read_text())
    trainer = Trainer.from_pretrained(model_dir, cfg, device=device)
    samples = torch.load(samples_file, weights_only=False)
    metrics = trainer.train_step(shard_for_rank(samples, rank, world))
    trainer.export_safetensors(out_dir / "export")
    trainer.save_checkpoint(out_dir / "ckpt", extra={"ranks": world})
    if rank == 0:
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:5]))
