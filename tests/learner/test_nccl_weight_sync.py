"""NcclWeightSync end to end: a learner on GPU 0 broadcasts into a vLLM OpenAI server on GPU 1
(its RL routes, `VLLM_SERVER_DEV_MODE=1`), whose greedy output follows the published weights.

Needs two CUDA GPUs and upstream vLLM: NCCL refuses two ranks of one group on the same device.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

PROMPT = "Write a search query about statins and muscle pain:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_gpus() -> None:
    if not torch.cuda.is_available():
        pytest.skip("NCCL weight transfer needs CUDA; torch.cuda.is_available() is False on this machine")
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs (learner on one, vLLM on another; NCCL refuses both on one device), found {torch.cuda.device_count()}")
    try:
        importlib.import_module("vllm.distributed.weight_transfer")
    except ImportError as e:
        pytest.skip(f"vLLM's weight_transfer API is not importable ({e}); install the 'gpu' extra")


@pytest.fixture(scope="module")
def vllm_server(two_gpus: None, policy_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A vLLM OpenAI server on GPU 1 with NCCL weight transfer enabled; stopped by pid."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1", "VLLM_SERVER_DEV_MODE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(policy_dir), "--served-model-name", "policy",
           "--dtype", "bfloat16", "--max-model-len", "512", "--gpu-memory-utilization", "0.3", "--enforce-eager",
           # Cached KV blocks would mix old and new weights in the comparison below.
           "--no-enable-prefix-caching", "--host", "127.0.0.1", "--port", str(port),
           "--weight-transfer-config", json.dumps({"backend": "nccl"})]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"vLLM server not healthy in 600s:\n{log_path.read_text()[-4000:]}"
            time.sleep(1.0)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _greedy(base: str) -> str:
    return _post(f"{base}/v1/completions", {"model": "policy", "prompt": PROMPT, "max_tokens": 12, "temperature": 0})["choices"][0]["text"]


def test_nccl_publish_changes_and_restores_the_served_policy(vllm_server: str, policy_dir: Path):
    from vllm.distributed.weight_transfer import HTTPVLLMWeightSyncClient

    from deepretrieval.common.learner_config import LearnerConfig
    from deepretrieval.learner.base import WeightSync
    from deepretrieval.learner.nccl_weight_sync import NcclRendezvous, NcclWeightSync
    from deepretrieval.learner.trainer import Trainer

    trainer = Trainer.from_pretrained(policy_dir, LearnerConfig(), device="cuda:0")
    original = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    sync = NcclWeightSync(HTTPVLLMWeightSyncClient(vllm_server), NcclRendezvous("127.0.0.1", _free_port(), world_size=2))
    assert isinstance(sync, WeightSync)
    try:
        before = _greedy(vllm_server)
        with torch.no_grad():
            trainer.model.get_input_embeddings().weight.mul_(-1.0)
        first = asyncio.run(sync.publish(1, trainer))
        changed = _greedy(vllm_server)
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                p.copy_(original[n])
        asyncio.run(sync.publish(2, trainer))
        restored = _greedy(vllm_server)
        with urllib.request.urlopen(f"{vllm_server}/weight_info", timeout=10) as r:
            version = json.loads(r.read())["weight_version"]
    finally:
        sync.close()

    # bfloat16 on the wire: 2 bytes per unique (untied) parameter.
    assert first.bytes == 2 * sum(p.numel() for p in trainer.model.parameters())
    assert first.weights_dir is None and first.export_s > 0
    assert changed != before
    assert restored == before
    assert version == "2"
