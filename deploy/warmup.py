"""`deepretrieval warmup`: rejection-sampling fine-tuning (RFT) of the policy before RL.

TASKS.md §7: the default 135M model never writes the answer format by free sampling, so every RL
reward would be the format penalty and GRPO would get no gradient. The warm-up fixes that:

1. set `heldout_prompts` train prompts aside (never fine-tuned on);
2. free-sample the held-out prompts at the task temperature: `format_ok_before`;
3. draw train prompts (deploy/warmup_draw.py: `prompts` in one round, or, with
   `min_kept_per_task`, in rounds until every task has that many kept completions), and sample G
   grammar-constrained completions per prompt (actors' engine, answer regex; with
   `prose_reasoning`, no JSON brackets or quotes in the reasoning);
4. score them, and each request sent as is, with the run's rewarder (same backends, cache, rate
   limiter, retries and `rl.reward` / `rl.search.*` spans as training); with `overlap_scoring`, a
   round is scored on a background thread while the next round samples;
5. keep per prompt the best completion that beats its original request (learner/sft.py; with
   `keep_ties`, also one exactly as good as a request that already works as a query; with
   `prefer_natural_close`, "best" puts reasoning the model closed itself before reasoning the
   grammar cut at its length cap; with `trim_cut_reasoning`, a kept reasoning the grammar cut is
   closed after its last complete sentence; with `canonical_answer`, its answer block is written
   in the canonical layout);
6. fine-tune on them with the learner's Trainer (`sft_step`: cross-entropy on completion tokens,
   tags included) and export the policy as a Hugging Face folder (with `select_epochs`, the epoch
   whose free-sampling format-ok is best on `select_prompts` further held-out prompts);
7. load it into the engine and free-sample the held-out prompts again: `format_ok_after`.

It lives in deploy/, the composition root, because it drives all three of actors/, rewarders/ and
learner/ (which never import each other).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepretrieval.actors.rewrite import parse_rewrite
from deepretrieval.common.answer_format import parse_answer
from deepretrieval.common.stopwatch import Stopwatch
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.common.warmup_config import WarmupConfig
from deepretrieval.common.wire import Prompt, Rollout
from deepretrieval.deploy.rollout_scoring import original_rollouts, sample_rollouts, score_rollouts, task_specs
from deepretrieval.deploy.warmup_draw import PromptDraw, run_rounds

log = logging.getLogger(__name__)

REPORT_NAME = "warmup.json"
CANDIDATES_NAME = "candidates.jsonl"


def warm_policy_dir(cfg: TrainConfig) -> Path:
    """Where a run's warmed-up policy is exported."""
    return cfg.run_dir / "warmup" / "policy"


def warm_policy_ready(cfg: TrainConfig) -> bool:
    """Whether the run already has a complete warm-up (its report is written last)."""
    d = warm_policy_dir(cfg)
    return (d / "config.json").is_file() and (d.parent / REPORT_NAME).is_file()


def split_prompts(prompts: Sequence[Prompt], n_heldout: int, seed: int, n_select: int = 0) -> tuple[list[Prompt], list[Prompt], list[Prompt]]:
    """The fine-tuning pool (in draw order), the held-out prompts and the epoch-selection prompts.

    A seeded shuffle: the held-out prompts come first and the selection prompts last, so adding
    epoch selection (`n_select` > 0) leaves the held-out set and the pool's draw order as they were.
    """
    order = list(prompts)
    random.Random(seed).shuffle(order)
    end = len(order) - n_select
    return order[n_heldout:end], order[:n_heldout], order[end:]


def format_ok_share(engine, tokenizer, prompts: Sequence[Prompt], cfg: TrainConfig, samples: int = 1) -> tuple[float, dict[str, int]]:
    """Share of free-sampled completions (task temperature, no grammar) that carry a query: `samples` per held-out prompt.

    A completion counts when it parses and its query has something to search (`parse_rewrite`,
    as evaluation and serving read it): a well-formed `{"query": "..."}` does not.

    Returns:
        (the share, how many completions failed with each error: "truncated", "missing_tag", ...).
    """
    specs = task_specs(cfg)
    rollouts = sample_rollouts(engine, tokenizer, prompts, cfg.sampling.model_copy(update={"n": samples}), batch_prompts=cfg.warmup.batch_prompts)
    by_uid = {p.uid: p for p in prompts}
    rewrites = [parse_rewrite(r.completion, specs[by_uid[r.prompt_uid].task]) for r in rollouts]
    errors = Counter(rw.error for rw in rewrites if rw.query is None)
    return sum(rw.query is not None for rw in rewrites) / max(1, len(rollouts)), dict(errors.most_common())


def _constrained_rollouts(engine, tokenizer, prompts: Sequence[Prompt], cfg: TrainConfig, wcfg: WarmupConfig) -> list[Rollout]:
    from deepretrieval.common.answer_grammar import answer_regex

    regexes = {name: answer_regex(spec.answer, max_reasoning_chars=wcfg.max_reasoning_chars, prose_reasoning=wcfg.prose_reasoning)
               for name, spec in task_specs(cfg).items()}
    params = cfg.sampling.model_copy(update={"n": wcfg.samples_per_prompt})
    return sample_rollouts(engine, tokenizer, prompts, params, regexes=regexes, batch_prompts=wcfg.batch_prompts)


def closed_at_cap(completion: str, fmt, max_reasoning_chars: int) -> bool:
    """Whether a constrained completion's reasoning ran to the grammar's length cap (its `</think>` was forced)."""
    reasoning = parse_answer(completion, fmt).reasoning
    return reasoning is not None and len(reasoning) >= max_reasoning_chars


def write_candidates(path: Path, prompts: Sequence[Prompt], candidates: Sequence, baseline: dict[str, float],
                     kept: Sequence, trimmed: dict[str, str], targets: dict[str, str]) -> dict:
    """Every scored constrained completion as a JSON line (task, request, completion, status, reward, original's
    reward, forced close, neutral, kept, its trimmed text if any, and the text fine-tuned on instead of the
    completion, if any). `read_candidates` reads it back.

    Returns:
        per task: prompts, candidates, format-valid candidates, prompts kept.
    """
    by_uid = {p.uid: p for p in prompts}
    kept_uids = {c.uid for c in kept}
    per_task: dict[str, dict[str, int]] = {}
    for p in prompts:
        per_task.setdefault(p.task, {"prompts": 0, "candidates": 0, "format_ok": 0, "kept": 0})["prompts"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for c in candidates:
            p = by_uid[c.prompt_uid]
            row = per_task[p.task]
            row["candidates"] += 1
            row["format_ok"] += c.format_ok
            row["kept"] += c.uid in kept_uids
            f.write(json.dumps({"task": p.task, "prompt_uid": p.uid, "request": p.request, "completion": c.completion,
                                "status": c.status, "reward": c.reward, "original_reward": baseline.get(p.uid),
                                "forced_close": c.forced_close, "neutral": c.neutral, "kept": c.uid in kept_uids,
                                "trimmed": trimmed.get(c.uid), "sft_text": targets.get(c.uid)}) + "\n")
    return per_task


def read_candidates(path: Path, prompts: Sequence[Prompt], tokenizer) -> tuple[list[Prompt], list, dict[str, float]]:
    """A finished warm-up's scored completions (`write_candidates`), to fine-tune on again without
    sampling or searching anything (`deepretrieval warmup --from-candidates`).

    Token ids are not stored: a prompt is re-built from the run's prompt files (by uid), a completion
    re-tokenised, and a format-valid one ends with EOS, as its sample did (the grammar's end allows
    only EOS). Forced close and neutral are as recorded: they depend on the sampling's reasoning cap
    and query composition, not on the replay's.

    Args:
        path: a `candidates.jsonl`.
        prompts: the run's warm-up train prompts (held-out ones removed); each row's `prompt_uid` must be one of them.
        tokenizer: the policy's tokenizer.

    Returns:
        (the prompts drawn, in first-seen order; their candidates; prompt uid -> the original request's reward).

    Raises:
        ConfigError: the file is missing or empty, a row is malformed, or names a prompt the run does not have.
    """
    from deepretrieval.common.chat import build_prompt_ids
    from deepretrieval.common.errors import ConfigError
    from deepretrieval.learner.sft import Candidate

    if not path.is_file():
        raise ConfigError(f"--from-candidates {path}: no such file (a warm-up writes runs/<run>/warmup/{CANDIDATES_NAME})")
    by_uid = {p.uid: p for p in prompts}
    drawn: dict[str, Prompt] = {}
    prompt_ids: dict[str, list[int]] = {}
    candidates, baseline = [], {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            uid, completion, status, reward = row["prompt_uid"], row["completion"], row["status"], row["reward"]
            original, forced_close, neutral = row["original_reward"], bool(row["forced_close"]), bool(row["neutral"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{n}: not a warm-up candidate row ({type(e).__name__}: {e})") from e
        if uid not in by_uid:
            raise ConfigError(f"{path}:{n}: prompt {uid!r} is not among this run's warm-up train prompts (another run's candidates, "
                              "other tasks, or a different warmup.seed / heldout_prompts / select_prompts put it in a held-out set)")
        if uid not in drawn:
            drawn[uid] = prompt = by_uid[uid]
            prompt_ids[uid] = build_prompt_ids(tokenizer, prompt.messages, prompt.prefill)
        if original is not None:
            baseline[uid] = float(original)
        response = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if status == "ok":
            response.append(tokenizer.eos_token_id)
        candidates.append(Candidate(prompt_uid=uid, uid=f"{uid}/{n}", prompt_ids=prompt_ids[uid], response_ids=response,
                                    reward=None if reward is None else float(reward), status=status,
                                    forced_close=forced_close, neutral=neutral, completion=completion))
    if not candidates:
        raise ConfigError(f"--from-candidates {path}: the file holds no candidate")
    return list(drawn.values()), candidates, baseline


def keep_best(candidates: Sequence, baseline: dict[str, float], wcfg: WarmupConfig) -> list:
    """The rejection filter (`learner.sft.select_best`) with the warm-up config's settings."""
    from deepretrieval.learner.sft import select_best

    return select_best(candidates, baseline, margin=wcfg.margin, keep_ties=wcfg.keep_ties, neutral_ties=wcfg.neutral_ties,
                       prefer_natural_close=wcfg.prefer_natural_close)


class _RoundScorer:
    """Scores the warm-up's rounds on one background thread, so a round's search calls (paced by the
    backends' rate limits, not by this CPU) wait while the next round samples (`warmup.overlap_scoring`).

    One round is scored at a time, in draw order; `busy_s` is the scoring's own time, overlapped or not.
    """

    def __init__(self, cfg: TrainConfig):
        from concurrent.futures import ThreadPoolExecutor

        self._cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warmup-score")
        self.busy_s = 0.0

    def _score(self, rollouts: list[Rollout]) -> list:
        mark = time.perf_counter()
        try:
            return asyncio.run(score_rollouts(self._cfg, rollouts))
        finally:
            self.busy_s += time.perf_counter() - mark

    def submit(self, rollouts: list[Rollout]):
        return self._pool.submit(self._score, rollouts)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _sample_and_select(engine, tokenizer, draw, cfg: TrainConfig, wcfg: WarmupConfig, clock: Stopwatch) -> tuple:
    """The draw's rounds: sample constrained, score with the originals, re-run the rejection filter, report kept per task.

    With `overlap_scoring`, round r is scored while round r+1 samples (drawn before r is recorded:
    deploy/warmup_draw.py); `score_s` is then only the time spent waiting for scores.

    Returns:
        (candidates, baseline: prompt uid -> the original's reward, kept, unavailable scores,
        seconds the scoring itself took).
    """
    from deepretrieval.learner.sft import Candidate

    specs = task_specs(cfg)
    candidates: list[Candidate] = []
    baseline: dict[str, float] = {}
    kept: list[Candidate] = []
    prompt_of: dict[str, Prompt] = {}
    unavailable = 0

    def settle(pending: tuple) -> None:
        nonlocal unavailable
        n_originals, future = pending
        with clock.stage("score_s"):
            round_scored = future.result()
        unavailable += sum(s.status == "unavailable" for s in round_scored)
        baseline.update({s.rollout.prompt_uid: s.reward for s in round_scored[:n_originals] if s.reward is not None})
        fresh: list[Candidate] = []
        for s in round_scored[n_originals:]:
            prompt = prompt_of[s.rollout.prompt_uid]
            spec = specs[prompt.task]
            fresh.append(Candidate(prompt_uid=s.rollout.prompt_uid, uid=s.rollout.uid, prompt_ids=s.rollout.prompt_token_ids,
                                   response_ids=s.rollout.response_token_ids, reward=s.reward, status=s.status,
                                   forced_close=closed_at_cap(s.rollout.completion, spec.answer, wcfg.max_reasoning_chars),
                                   neutral=s.status == "ok" and spec.query.adds_nothing(prompt.request, s.query),
                                   completion=s.rollout.completion))
        candidates.extend(fresh)
        # Each prompt is drawn in one round only, so the filter needs only this round's candidates.
        kept.extend(keep_best(fresh, baseline, wcfg))
        kept_by_task = Counter(prompt_of[c.prompt_uid].task for c in kept)
        draw.record(kept_by_task)
        log.info("warm-up round %d scored: %d prompts drawn, kept per task %s", draw.rounds - draw.unrecorded_rounds,
                 len(draw.drawn), dict(kept_by_task))

    def submit(batch: list[Prompt]) -> tuple:
        prompt_of.update({p.uid: p for p in batch})
        with clock.stage("sample_s"):
            rollouts = _constrained_rollouts(engine, tokenizer, batch, cfg, wcfg)
        originals = original_rollouts(batch, tokenizer, cfg)
        return len(originals), scorer.submit(originals + rollouts)

    scorer = _RoundScorer(cfg)
    try:
        run_rounds(draw, submit, settle, overlap=wcfg.overlap_scoring)
    finally:
        scorer.close()
    return candidates, baseline, kept, unavailable, scorer.busy_s


def rewrite_kept(kept: Sequence, task_of: dict[str, str], cfg: TrainConfig, wcfg: WarmupConfig,
                 tokenizer) -> tuple[list, dict[str, str], dict[str, str]]:
    """Kept completions as fine-tuned on (learner/sft.py): with `trim_cut_reasoning`, a reasoning the
    grammar cut at its cap is closed after its last complete sentence; with `canonical_answer`, the
    answer block is written in the canonical layout. The answer's value, so the reward, never changes.

    A rewritten text is re-tokenised; the special tokens that ended the sampled response (EOS)
    still end it, so SFT still teaches the model to stop.

    Returns:
        (the kept candidates, rewritten ones re-tokenised; kept uid -> trimmed completion;
        kept uid -> the text fine-tuned on, for every rewritten one).
    """
    from dataclasses import replace

    from deepretrieval.learner.sft import canonical_answer, trim_cut_reasoning

    specs = task_specs(cfg)
    special = set(tokenizer.all_special_ids)
    out, trimmed, targets = [], {}, {}
    for c in kept:
        fmt = specs[task_of[c.prompt_uid]].answer
        text = c.completion
        cut = trim_cut_reasoning(text, fmt) if wcfg.trim_cut_reasoning and c.forced_close else None
        if cut is not None:
            trimmed[c.uid] = text = cut
        if wcfg.canonical_answer:
            text = canonical_answer(text, fmt) or text
        if text == c.completion:
            out.append(c)
            continue
        end = len(c.response_ids)
        while end and c.response_ids[end - 1] in special:
            end -= 1
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + list(c.response_ids[end:])
        out.append(replace(c, response_ids=ids))  # still marked forced_close when the sample was cut
        targets[c.uid] = text
    return out, trimmed, targets


def _fine_tune(model_dir: Path, kept: list, task_of: dict[str, str], cfg: TrainConfig, wcfg: WarmupConfig, out_dir: Path,
               after_epoch: Callable[[int, Any], None] | None = None) -> dict:
    """SFT on the kept completions (task_of: prompt uid -> task) with the learner's Trainer; exports to `out_dir`.

    `after_epoch(epoch, trainer)` runs after each epoch (1-based); with it, the caller exports.
    """
    from deepretrieval.learner.sft import epoch_order, sft_samples
    from deepretrieval.learner.trainer import Trainer

    lcfg = cfg.learner.model_copy(update={"optim": cfg.learner.optim.model_copy(update={"lr": wcfg.lr}),
                                          "loss": cfg.learner.loss.model_copy(update={"kl_coef": 0.0})})
    trainer = Trainer.from_pretrained(model_dir, lcfg)
    samples = sft_samples(kept)
    groups = [task_of[c.prompt_uid] for c in kept]
    rng = random.Random(wcfg.seed)
    losses: list[float] = []
    for epoch in range(1, wcfg.epochs + 1):
        order = [samples[i] for i in epoch_order(groups, rng, balance=wcfg.balance_tasks)]
        for start in range(0, len(order), wcfg.batch_seqs):
            m = trainer.sft_step(order[start:start + wcfg.batch_seqs])
            losses.append(m["loss"])
            log.info("warm-up SFT step %d: nll %.4f", trainer.step, m["loss"])
        if after_epoch is not None:
            after_epoch(epoch, trainer)
    if after_epoch is None:
        trainer.export_safetensors(out_dir)
    return {"sft_steps": trainer.step, "sft_loss_first": losses[0] if losses else None, "sft_loss_last": losses[-1] if losses else None}


class EpochSelection:
    """`warmup.select_epochs`: after each listed SFT epoch, export the policy, load it into the engine
    and measure its free-sampling format-ok on the selection prompts; the best export ends in `out_dir`
    (a later epoch wins a tie). One export is kept on disk besides the best, so at most two."""

    def __init__(self, engine, tokenizer, prompts: Sequence[Prompt], cfg: TrainConfig, wcfg: WarmupConfig, out_dir: Path):
        self.engine, self.tokenizer, self.prompts, self.cfg, self.wcfg, self.out_dir = engine, tokenizer, prompts, cfg, wcfg, out_dir
        self.by_epoch: dict[int, float] = {}
        self.errors_by_epoch: dict[int, dict[str, int]] = {}
        self.best: int | None = None
        self.seconds = 0.0

    def __call__(self, epoch: int, trainer) -> None:
        if epoch not in self.wcfg.select_epochs:
            return
        mark = time.perf_counter()
        candidate = self.out_dir.with_name(f"{self.out_dir.name}.epoch-{epoch}")
        trainer.export_safetensors(candidate)
        self.engine.load_weights(candidate, epoch)
        share, errors = format_ok_share(self.engine, self.tokenizer, self.prompts, self.cfg, self.wcfg.format_samples)
        self.by_epoch[epoch], self.errors_by_epoch[epoch] = share, errors
        log.info("warm-up: epoch %d free-sampling format ok %.3f on %d selection prompts (failures: %s)", epoch, share,
                 len(self.prompts), errors or "none")
        if self.best is None or share >= self.by_epoch[self.best]:
            shutil.rmtree(self.out_dir, ignore_errors=True)
            candidate.rename(self.out_dir)
            self.best = epoch
        else:
            shutil.rmtree(candidate)
        self.seconds += time.perf_counter() - mark

    def report(self) -> dict:
        return {"selected_epoch": self.best, "format_ok_by_epoch": self.by_epoch, "format_errors_by_epoch": self.errors_by_epoch}


def run_warmup(cfg: TrainConfig, wcfg: WarmupConfig | None = None, from_candidates: Path | None = None) -> dict:
    """Run the warm-up for a prepared run (`launcher.prepare_run`, a Redis URL in `cfg.transport`).

    With `from_candidates` (a `candidates.jsonl` of an earlier warm-up of the same prompts), nothing is
    sampled or searched: its scored completions go through the rejection filter and SFT of this
    config (`keep_ties`, `canonical_answer`, `epochs`, `lr`, ...), so SFT settings can be compared on
    the same candidates, or retried without spending the search APIs' quota again.

    Returns:
        the report, also written to runs/<run>/warmup/warmup.json: format_ok_before,
        format_ok_after (and format_errors_before/_after: failed completions per error), kept,
        candidates, prompts, sft_steps, seconds (and per-stage seconds).
    """
    from transformers import AutoTokenizer

    from deepretrieval.actors.engines import make_engine
    from deepretrieval.common.engine_config import on_cores
    from deepretrieval.common.hardware import describe_cpu
    from deepretrieval.common.model_fetch import resolve_model
    from deepretrieval.common.prompt_book import PromptBook
    from deepretrieval.deploy.workers import prompt_files

    wcfg = wcfg or cfg.warmup
    t0 = time.perf_counter()
    clock = Stopwatch()
    model_dir = Path(resolve_model(cfg.model.name_or_path, cfg.paths.models_dir))
    out_dir = warm_policy_dir(cfg)
    pool, held, select = split_prompts(list(PromptBook.from_files(prompt_files(cfg))), wcfg.heldout_prompts, wcfg.seed,
                                       wcfg.select_prompts if wcfg.select_epochs else 0)
    engine = make_engine(model_dir, on_cores(cfg.actors.engine, wcfg.cpu_threads_bind), cfg.model.dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        with clock.stage("format_before_s"):
            before, before_errors = format_ok_share(engine, tokenizer, held, cfg, wcfg.format_samples_before or wcfg.format_samples)
        log.info("warm-up: free-sampling format ok before %.3f on %d held-out prompts", before, len(held))

        if from_candidates is None:
            draw = PromptDraw(pool, budget=wcfg.prompts, min_kept_per_task=wcfg.min_kept_per_task, batch=wcfg.batch_prompts)
            candidates, baseline, kept, unavailable, score_busy_s = _sample_and_select(engine, tokenizer, draw, cfg, wcfg, clock)
            train, rounds = draw.drawn, draw.rounds
        else:
            train, candidates, baseline = read_candidates(from_candidates, pool, tokenizer)
            kept = keep_best(candidates, baseline, wcfg)
            unavailable, score_busy_s, rounds = sum(c.status == "unavailable" for c in candidates), 0.0, 0
        task_of = {p.uid: p.task for p in train}
        kept, trimmed, targets = rewrite_kept(kept, task_of, cfg, wcfg, tokenizer)
        per_task = write_candidates(out_dir.parent / CANDIDATES_NAME, train, candidates, baseline, kept, trimmed, targets)
        log.info("warm-up: kept %d of %d prompts (%d candidates, %d trimmed, %d rewritten)", len(kept), len(train), len(candidates),
                 len(trimmed), len(targets))

        mark = time.perf_counter()
        selection = EpochSelection(engine, tokenizer, select, cfg, wcfg, out_dir) if wcfg.select_epochs else None
        sft = _fine_tune(model_dir, kept, task_of, cfg, wcfg, out_dir, selection) if kept else {"sft_steps": 0}
        if not kept:
            log.warning("warm-up: no completion beat its original request; the policy is exported unchanged")
            shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
        elif selection is not None:
            sft.update(selection.report())
            clock.add("select_s", selection.seconds)
        clock.add("sft_s", time.perf_counter() - mark - clock.seconds.get("select_s", 0.0))

        with clock.stage("format_after_s"):
            engine.load_weights(out_dir, wcfg.epochs + 1)
            after, after_errors = format_ok_share(engine, tokenizer, held, cfg, wcfg.format_samples)
    finally:
        engine.close()
    constrained_ok = sum(c.format_ok for c in candidates) / max(1, len(candidates))
    report = {"format_ok_before": before, "format_ok_after": after,
              "format_errors_before": before_errors, "format_errors_after": after_errors, "kept": len(kept),
              "kept_beating": sum(c.reward > baseline[c.prompt_uid] + wcfg.margin for c in kept),
              "kept_forced_close": sum(c.forced_close for c in kept), "kept_neutral": sum(c.neutral for c in kept), "kept_trimmed": len(trimmed), "kept_rewritten": len(targets), "prompts": len(train), "rounds": rounds,
              "heldout_prompts": len(held), "select_prompts": len(select), "candidates": len(candidates), "constrained_format_ok": constrained_ok,
              "baseline_reward_mean": sum(baseline.values()) / max(1, len(baseline)),
              "kept_reward_mean": sum(c.reward for c in kept) / max(1, len(kept)),
              "per_task": per_task, "unavailable": unavailable,
              **sft, "seconds": time.perf_counter() - t0, "stages_s": clock.seconds, "score_busy_s": score_busy_s, "policy": str(out_dir),
              "base_model": str(model_dir), "cpu": describe_cpu(), "config": wcfg.model_dump(),
              "from_candidates": None if from_candidates is None else str(from_candidates)}
    (out_dir.parent / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str))
    log.info("warm-up: format ok %.3f -> %.3f (failures after: %s), %d kept, %.0f s", before, after, after_errors or "none",
             len(kept), report["seconds"])
    return report
