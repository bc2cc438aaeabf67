"""Rollouts with chosen completions, for benchmarks and tests of the scoring side.

They go through exactly the path generated rollouts take (wire, streams, rewarders); only the
completion text is chosen instead of sampled, and token ids are stand-ins of matching length.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from deepretrieval.common.wire import Prompt, Rollout, SamplingParams


def answer_completion(query: str, reasoning: str = "the request names the key terms") -> str:
    """A format-valid completion (after the prefilled <think>) carrying `query`."""
    return f"{reasoning}</think>\n<answer>{json.dumps({'query': query})}</answer>"


def make_rollout(prompt: Prompt, completion: str, *, group_id: str | None = None, index: int = 0, version: int = 0,
                 finish_reason: str = "stop", traceparent: str = "") -> Rollout:
    """A Rollout of `prompt` whose response is `completion` (about one stand-in token per 4 chars)."""
    gid = group_id or uuid.uuid4().hex
    n = max(1, len(completion) // 4)
    return Rollout(uid=f"{gid}-{index}", group_id=gid, prompt_uid=prompt.uid, policy_version=version,
                   prompt_token_ids=np.arange(8, dtype=np.int32), response_token_ids=np.arange(n, dtype=np.int32),
                   logprobs=np.full(n, -0.5, dtype=np.float32), sampling=SamplingParams(1.0, 1.0, 512, False),
                   finish_reason=finish_reason, completion=completion, engine="synthetic", created_at=time.time(),
                   traceparent=traceparent)
