"""Wire schemas: exact round trips and loud rejection of anything malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from deepretrieval.common.errors import SchemaError, SchemaVersionError
from deepretrieval.common.wire import Prompt, Rollout, SamplingParams, Scored, decode, decode_as, encode


def make_prompt() -> Prompt:
    return Prompt(uid="p1", task="pubmed_publication", dataset="pubmed", request="statins and liver injury",
                  messages=[{"role": "system", "content": "Write a query."}, {"role": "user", "content": "statins"}],
                  prefill="<think>", target={"pmids": ["123", "456"], "k": 100}, split="train")


def make_rollout(n_response: int = 5) -> Rollout:
    rng = np.random.default_rng(0)
    return Rollout(
        uid="r1", group_id="g1", prompt_uid="p1", policy_version=7,
        prompt_token_ids=[1, 2, 3, 49151],
        response_token_ids=rng.integers(0, 49152, size=n_response),
        # values that do not survive a float64 round trip unless packed as float32 exactly
        logprobs=rng.normal(-1.0, 0.5, size=n_response).astype(np.float32),
        sampling=SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=256, constrained=False),
        finish_reason="stop", completion="<think>x</think><answer>statins AND liver</answer>", engine="vllm",
        created_at=1_790_000_000.123456, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="rojo=00f067aa0ba902b7")


def make_scored(**overrides) -> Scored:
    fields = dict(rollout=make_rollout(), reward=0.42, components={"recall@100": 0.4, "format": 0.02}, status="ok",
                  query="statins AND liver", retrieved_ids=["123", "999"], backend="pubmed", index_version="2026-11-24",
                  latency_s=0.31, retries=1, cache_hit=False, error=None)
    fields.update(overrides)
    return Scored(**fields)


def test_prompt_round_trip():
    prompt = make_prompt()
    assert decode(encode(prompt)) == prompt


def test_rollout_round_trip_is_bit_exact():
    rollout = make_rollout()
    back = decode_as(encode(rollout), Rollout)
    assert back == rollout
    assert back.response_token_ids.dtype == np.dtype("<i4") and back.logprobs.dtype == np.dtype("<f4")
    assert back.logprobs.tobytes() == rollout.logprobs.tobytes()
    assert back.created_at == 1_790_000_000.123456


def test_arrays_travel_as_packed_little_endian_bytes():
    raw = msgpack.unpackb(encode(make_rollout(3)), raw=False)
    assert raw["schema"] == "rollout/1"
    assert raw["prompt_token_ids"] == np.array([1, 2, 3, 49151], dtype="<i4").tobytes()
    assert len(raw["logprobs"]) == 3 * 4


@pytest.mark.parametrize("status,reward", [("ok", 0.5), ("invalid", -1.0), ("unavailable", None)])
def test_scored_round_trip(status, reward):
    scored = make_scored(status=status, reward=reward, error=None if status == "ok" else "boom")
    assert decode(encode(scored)) == scored


def test_empty_response_round_trip():
    rollout = make_rollout(0)
    assert decode(encode(rollout)) == rollout


def test_unknown_schema_version_is_rejected():
    raw = msgpack.unpackb(encode(make_rollout()), raw=False)
    raw["schema"] = "rollout/2"
    with pytest.raises(SchemaVersionError, match="rollout/2"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_missing_schema_key_is_rejected():
    with pytest.raises(SchemaError, match="schema"):
        decode(msgpack.packb({"uid": "x"}))


@pytest.mark.parametrize("field", ["uid", "logprobs", "sampling", "traceparent"])
def test_missing_field_is_named(field):
    raw = msgpack.unpackb(encode(make_rollout()), raw=False)
    del raw[field]
    with pytest.raises(SchemaError, match=rf"missing field\(s\) \['{field}'\]"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_unknown_field_is_rejected():
    raw = msgpack.unpackb(encode(make_prompt()), raw=False)
    raw["extra"] = 1
    with pytest.raises(SchemaError, match="unknown field.*extra"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_wrong_type_names_field_and_value():
    raw = msgpack.unpackb(encode(make_rollout()), raw=False)
    raw["policy_version"] = "seven"
    with pytest.raises(SchemaError, match=r"'policy_version'.*expected int, got str 'seven'"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_nested_wrong_type_names_full_path():
    raw = msgpack.unpackb(encode(make_scored()), raw=False)
    raw["rollout"]["sampling"]["top_p"] = "high"
    with pytest.raises(SchemaError, match=r"'rollout\.sampling\.top_p'"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_array_byte_length_not_multiple_of_itemsize():
    raw = msgpack.unpackb(encode(make_rollout()), raw=False)
    raw["prompt_token_ids"] = raw["prompt_token_ids"][:-1]
    with pytest.raises(SchemaError, match=r"'prompt_token_ids'.*multiple of 4.*15 bytes"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_logprob_count_must_match_response_tokens():
    raw = msgpack.unpackb(encode(make_rollout(5)), raw=False)
    raw["logprobs"] = raw["logprobs"][:-4]
    with pytest.raises(SchemaError, match="4 logprobs for 5 response_token_ids"):
        decode(msgpack.packb(raw, use_bin_type=True))
    with pytest.raises(SchemaError, match="logprobs"):
        Rollout(**{**make_rollout(5).__dict__, "logprobs": np.zeros(3, np.float32)})


@pytest.mark.parametrize("status,reward", [("unavailable", 0.0), ("ok", None), ("invalid", None)])
def test_reward_is_none_iff_unavailable(status, reward):
    with pytest.raises(SchemaError, match="reward must be None exactly when status is 'unavailable'"):
        make_scored(status=status, reward=reward)
    raw = msgpack.unpackb(encode(make_scored()), raw=False)
    raw["status"], raw["reward"] = status, reward
    with pytest.raises(SchemaError, match="reward must be None"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_unknown_status_is_rejected():
    with pytest.raises(SchemaError, match="'status'"):
        make_scored(status="failed")


def test_token_ids_must_be_integers_that_fit_int32():
    base = make_rollout(2).__dict__
    with pytest.raises(SchemaError, match="integer token ids"):
        Rollout(**{**base, "prompt_token_ids": [1.5, 2.0]})
    with pytest.raises(SchemaError, match="fit int32"):
        Rollout(**{**base, "prompt_token_ids": [2**40]})


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"schema": 3})])
def test_garbage_is_a_schema_error(data):
    with pytest.raises(SchemaError):
        decode(data)


def test_decode_as_checks_the_kind():
    with pytest.raises(SchemaError, match="expected a rollout/1 message, got prompt/1"):
        decode_as(encode(make_prompt()), Rollout)


def test_decoded_arrays_are_read_only():
    back = decode_as(encode(make_rollout()), Rollout)
    with pytest.raises(ValueError):
        back.logprobs[0] = 0.0


def test_undecodable_completion_text_is_repaired_not_rejected():
    # A model's bytes that are not UTF-8 arrive as lone surrogates; the wire carries U+FFFD instead,
    # while the token ids stay exact.
    bad = b"\xff\xfe ok".decode("utf-8", "surrogateescape")
    r = make_rollout()
    r2 = Rollout(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "completion": bad})
    back = decode(encode(r2))
    assert back.completion == "\ufffd\ufffd ok"
    assert list(back.response_token_ids) == list(r.response_token_ids)
