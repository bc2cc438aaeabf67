"""`deepretrieval warmup` on real components: BM25 over SciFact through the run's rewarder,
grammar-constrained sampling with the transformers engine, SFT, and free-sampling format-ok
measured on held-back train prompts before and after (a real measurement, asserted loosely).

SciFact claims are already strong BM25 queries, so few constrained rewrites beat them; with
`keep_ties` the completions exactly as good as a working claim are kept too (learner/sft.py).
"""

from __future__ import annotations

import json

import pytest

from deepretrieval.common.answer_format import AnswerFormat, parse_answer, render_answer
from deepretrieval.common.answer_grammar import PROSE_EXCLUDED
from deepretrieval.deploy.cli import main


def test_tiny_warmup_keeps_only_completions_at_least_as_good_and_raises_free_sampling_format_ok(tmp_path, data_root, index_root, policy_dir):
    config = tmp_path / "warm.yaml"
    config.write_text(f"""
run: warm
paths: {{data_root: {data_root}, index_dir: {index_root}, runs_dir: {tmp_path / 'runs'}}}
model: {{name_or_path: {policy_dir}}}
tasks:
  - task: sparse
    dataset: scifact
    max_prompts: 24
    eval_split: null
    backend: {{type: bm25, dataset: scifact}}
sampling: {{n: 4, temperature: 0.7, max_new_tokens: 64}}
actors: {{engine: {{type: hf}}}}
transport: {{backlog_bound: 4096}}
warmup: {{prompts: 12, min_kept_per_task: 12, batch_prompts: 6, samples_per_prompt: 4, heldout_prompts: 8,
          max_reasoning_chars: 24, prose_reasoning: true, keep_ties: true, trim_cut_reasoning: true, canonical_answer: true, epochs: 8, batch_seqs: 4, lr: 1.0e-4,
          select_epochs: [4, 8], select_prompts: 4, format_samples: 2, format_samples_before: 1}}
""")
    out = tmp_path / "warmup.json"
    assert main(["warmup", "--config", str(config), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    # Two rounds of 6 prompts: 12 kept completions need every prompt, so the budget ends the draw.
    assert report["prompts"] == 12 and report["rounds"] == 2 and report["heldout_prompts"] == 8 and report["candidates"] == 48
    assert report["unavailable"] == 0
    # The first round is scored while the second samples: the warm-up waits for less scoring than was done.
    assert 0 < report["stages_s"]["score_s"] < report["score_busy_s"]
    assert report["constrained_format_ok"] >= 0.75  # the grammar holds (a few may hit the token limit)
    # At most one per prompt, each at least as good as its (working) claim.
    rows = [json.loads(line) for line in (tmp_path / "runs" / "warm" / "warmup" / "candidates.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["kept"]]
    assert len(rows) == 48 and 1 <= len(kept) == report["kept"] <= 12
    assert len({r["prompt_uid"] for r in kept}) == len(kept)
    assert all(r["status"] == "ok" and r["reward"] >= r["original_reward"] and (r["reward"] > r["original_reward"] or r["original_reward"] > 0)
               for r in kept)
    # The grammar cut a reasoning at its 24-character cap exactly when it is 24 characters long, and
    # a cut completion is kept only when none of its prompt's qualifying completions closed on its own.
    assert all(r["forced_close"] == (len(r["completion"].split("</think>")[0]) >= 24) for r in rows if r["status"] == "ok")
    qualifies = lambda r: r["status"] == "ok" and (r["reward"] > r["original_reward"] or r["reward"] == r["original_reward"] > 0)  # noqa: E731
    for k in kept:
        assert not k["forced_close"] or not any(qualifies(r) and not r["forced_close"] for r in rows if r["prompt_uid"] == k["prompt_uid"])
    assert report["kept_forced_close"] == sum(r["forced_close"] for r in kept)
    # A kept completion cut at the cap is fine-tuned on closed after its last whole sentence (or
    # word): a shorter reasoning, the same answer; nothing else is trimmed.
    fmt = AnswerFormat(key="query")
    for r in rows:
        if r["trimmed"] is None:
            continue
        assert r["kept"] and r["forced_close"]
        before, after = parse_answer(r["completion"], fmt), parse_answer(r["trimmed"], fmt)
        assert after.ok and after.value == before.value and before.reasoning.startswith(after.reasoning.rstrip("."))
        assert after.reasoning.endswith((".", "!", "?")) or before.reasoning[len(after.reasoning):].lstrip(" \t").startswith("\n")
    assert report["kept_trimmed"] == sum(r["trimmed"] is not None for r in rows)
    # Every kept completion is fine-tuned on with its answer block in the canonical layout: its own
    # reasoning (trimmed or not) and query; a completion already canonical is fine-tuned on as sampled.
    for r in kept:
        target = r["sft_text"] or r["completion"]
        reasoning, value = parse_answer(target, fmt).reasoning, parse_answer(r["completion"], fmt).value
        assert target == render_answer(fmt, value, reasoning) and reasoning == parse_answer(r["trimmed"] or r["completion"], fmt).reasoning
    assert all(r["sft_text"] is None for r in rows if not r["kept"])
    assert report["kept_rewritten"] == sum(r["sft_text"] is not None for r in rows)
    # In rewrite mode an answer adds nothing to the search exactly when it copies the claim.
    assert all(r["neutral"] == (parse_answer(r["completion"], fmt).value == r["request"]) for r in rows if r["status"] == "ok")
    assert report["kept_neutral"] == sum(r["neutral"] for r in kept)
    # The prose grammar kept JSON brackets and quotes out of every sampled reasoning.
    assert not any(set(parse_answer(r["completion"], fmt).reasoning) & set(PROSE_EXCLUDED) for r in rows if r["status"] == "ok")
    assert report["sft_steps"] == 8 * -(-report["kept"] // 4)
    assert report["sft_loss_last"] < report["sft_loss_first"]
    assert report["format_ok_after"] > report["format_ok_before"]
    # Every failed draw is counted under its error: 8 held-out prompts, one draw each before
    # (format_samples_before 1), two after (format_samples 2).
    for stage, draws in (("before", 8), ("after", 16)):
        errors = report[f"format_errors_{stage}"]
        assert sum(errors.values()) == round(draws * (1 - report[f"format_ok_{stage}"]))
        assert all(isinstance(kind, str) and kind and n > 0 for kind, n in errors.items())
    # Epoch selection: epochs 4 and 8 measured on 4 further held-out prompts, 2 draws each; the better one (the later on a
    # tie) is the export, and no other epoch's export is left on disk.
    assert report["select_prompts"] == 4
    by_epoch = {int(e): share for e, share in report["format_ok_by_epoch"].items()}
    assert sorted(by_epoch) == [4, 8] and all(share * 8 == round(share * 8) for share in by_epoch.values())
    assert report["selected_epoch"] == (4 if by_epoch[4] > by_epoch[8] else 8)
    assert set(report["format_errors_by_epoch"]) == {"4", "8"} and report["stages_s"]["select_s"] > 0
    policy = tmp_path / "runs" / "warm" / "warmup" / "policy"
    assert (policy / "model.safetensors").is_file() and (policy / "tokenizer.json").is_file()
    assert sorted(p.name for p in policy.parent.iterdir() if p.name.startswith("policy")) == ["policy"]

    # The same candidates fine-tuned on again under other SFT settings, sampling and searching nothing
    # (`--from-candidates`): the filter keeps the same completions, and only the SFT changes.
    replay_out = tmp_path / "replay.json"
    source = tmp_path / "runs" / "warm" / "warmup" / "candidates.jsonl"
    assert main(["warmup", "--config", str(config), "--json", str(replay_out), "--from-candidates", str(source), "--set", "run=replay",
                 "--set", "warmup.canonical_answer=false", "--set", "warmup.epochs=4", "--set", "warmup.select_epochs=[2,4]"]) == 0
    replay = json.loads(replay_out.read_text())
    assert replay["from_candidates"] == str(source) and replay["rounds"] == 0 and replay["score_busy_s"] == 0
    assert "sample_s" not in replay["stages_s"] and "score_s" not in replay["stages_s"]
    assert (replay["prompts"], replay["candidates"], replay["kept"], replay["kept_trimmed"]) == \
        (report["prompts"], report["candidates"], report["kept"], report["kept_trimmed"])
    assert replay["sft_steps"] * 2 == report["sft_steps"] and sorted(replay["format_ok_by_epoch"]) == ["2", "4"]
    replayed = [json.loads(line) for line in (tmp_path / "runs" / "replay" / "warmup" / "candidates.jsonl").read_text().splitlines()]
    same = ("prompt_uid", "completion", "status", "reward", "original_reward", "forced_close", "neutral", "kept", "trimmed")
    assert [{k: r[k] for k in same} for r in replayed] == [{k: r[k] for k in same} for r in rows]
    # Without canonical_answer only the trimmed completions are fine-tuned on as rewritten.
    assert all(r["sft_text"] == r["trimmed"] for r in replayed) and replay["kept_rewritten"] == replay["kept_trimmed"]
    assert (tmp_path / "runs" / "replay" / "warmup" / "policy" / "model.safetensors").is_file()


def test_read_candidates_rebuilds_token_ids_and_names_the_row_it_cannot_use(tmp_path, policy_dir):
    from transformers import AutoTokenizer

    from deepretrieval.common.chat import build_prompt_ids
    from deepretrieval.common.errors import ConfigError
    from deepretrieval.common.wire import Prompt
    from deepretrieval.deploy.warmup import read_candidates

    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    prompts = [Prompt(uid=f"p{i}", task="sparse", dataset="scifact", request=f"claim {i}",
                      messages=[{"role": "user", "content": f"Rewrite claim {i}."}], prefill="<think>", target={}, split="train")
               for i in range(2)]
    ok = "short.</think>\n<answer>\n{\"query\": \"claim one\"}\n</answer>"
    row = {"task": "sparse", "prompt_uid": "p1", "request": "claim 1", "completion": ok, "status": "ok", "reward": 0.5,
           "original_reward": 0.25, "forced_close": False, "neutral": False, "kept": True, "trimmed": None, "sft_text": None}
    path = tmp_path / "candidates.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (row, {**row, "completion": "no tags", "status": "invalid", "reward": -1.0},
                                                       {**row, "prompt_uid": "p0", "original_reward": None, "status": "unavailable",
                                                        "reward": None})) + "\n")
    drawn, candidates, baseline = read_candidates(path, prompts, tok)
    assert [p.uid for p in drawn] == ["p1", "p0"] and baseline == {"p1": 0.25}
    first, broken, unavailable = candidates
    assert list(first.prompt_ids) == build_prompt_ids(tok, prompts[1].messages, "<think>")
    assert list(first.response_ids) == tok(ok, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(first.response_ids, skip_special_tokens=True) == ok and first.format_ok and first.reward == 0.5
    assert not broken.format_ok and broken.response_ids[-1] != tok.eos_token_id and unavailable.reward is None
    assert len({c.uid for c in candidates}) == 3
    for text, match in (("", "holds no candidate"), ("{not json\n", r"candidates.jsonl:1: not a warm-up candidate row"),
                        (json.dumps({**row, "prompt_uid": "p9"}), r":1: prompt 'p9' is not among this run's warm-up train prompts")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            read_candidates(path, prompts, tok)
    with pytest.raises(ConfigError, match="no such file"):
        read_candidates(tmp_path / "missing.jsonl", prompts, tok)
