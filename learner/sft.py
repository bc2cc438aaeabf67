"""The format warm-up's supervised half: rejection filter, SFT samples and the cross-entropy loss.

Rejection-sampling fine-tuning (RFT, the "cold start" of reasoning-RL recipes): of each prompt's
G constrained completions keep at most one, the best, and only if its reward beats the reward the
original request earns when sent as the query. The policy is then fine-tuned on those completions
with plain cross-entropy on the completion tokens (tags included), so it learns to write the
answer format unprompted and to write queries that beat the request.

Shapes: B sequences, T response positions (right-padded).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepretrieval.common.answer_format import AnswerFormat, parse_answer, render_answer
from deepretrieval.common.answer_grammar import THINK_CLOSE
from deepretrieval.learner.sequences import TrainSample

# Where a sentence ends: terminal punctuation followed by whitespace or the end, or a line break.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class Candidate:
    """One scored completion of a warm-up prompt.

    Args:
        prompt_uid: the prompt it answers.
        uid: the completion's rollout uid.
        prompt_ids: [P] the chat-templated prompt (prefill included).
        response_ids: [T] the completion's tokens.
        reward: its reward; None when the backend could not answer (never kept).
        status: the rewarder's verdict ("ok", "invalid", "unavailable"; `Scored.status`).
        forced_close: the sampling grammar ended the reasoning at its length cap: `</think>` was
            the only token left to write, not the model's choice.
        neutral: its answer adds nothing to the search (`QueryComposition.adds_nothing`): as good
            as the request by construction, not by luck.
        completion: the sampled text.
    """

    prompt_uid: str
    uid: str
    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    reward: float | None
    status: str
    forced_close: bool = False
    neutral: bool = False
    completion: str = ""

    @property
    def format_ok(self) -> bool:
        """Whether the completion parsed and was searched (status "ok")."""
        return self.status == "ok"


def _preference(c: Candidate, prefer_natural_close: bool) -> tuple:
    """Sort key of a prompt's eligible candidates: the largest is kept."""
    if not prefer_natural_close:
        return (c.reward,)
    return (not c.forced_close, c.reward, -len(c.response_ids))


def select_best(candidates: Sequence[Candidate], baseline: Mapping[str, float], *, margin: float = 0.0,
                keep_ties: bool = False, neutral_ties: bool = False, prefer_natural_close: bool = False) -> list[Candidate]:
    """The rejection filter: per prompt, the best format-valid completion, if it beats the baseline.

    Args:
        candidates: completions of any number of prompts.
        baseline: prompt uid -> reward of the original request used as the query. A prompt without
            a baseline (its search was unavailable) keeps nothing: "beats the original" is unknown.
        margin: a kept reward must exceed the baseline by more than this.
        keep_ties: also keep a completion whose reward equals a positive baseline (the request
            already works as a query, and the completion is exactly as good): a format example that
            teaches nothing worse than the request. A tie with a baseline <= 0 is never kept.
        neutral_ties: with keep_ties, a tie is kept only when it is `neutral` (it searches the
            request itself). A tie that adds words ties by luck: a word the index lacks, or one
            that moves no relevant document, and fine-tuning on it teaches writing such words.
        prefer_natural_close: which eligible completion is "best". False: the highest reward.
            True: one whose reasoning the model closed itself before one the grammar cut at its
            length cap (`forced_close`), then the highest reward, then the fewest tokens. A cut
            completion teaches `</think>` in mid-sentence, which free sampling then writes anywhere
            (or never); which prompts keep a completion does not change.

    Returns:
        at most one candidate per prompt, in first-seen prompt order; ties go to the first seen.
    """
    best: dict[str, Candidate] = {}
    for c in candidates:
        if not c.format_ok or c.reward is None or c.prompt_uid not in baseline:
            continue
        base = baseline[c.prompt_uid]
        beats = c.reward > base + margin
        ties = keep_ties and base > 0 and c.reward >= base and (c.neutral or not neutral_ties)
        if not (beats or ties):
            continue
        held = best.get(c.prompt_uid)
        if held is None or _preference(c, prefer_natural_close) > _preference(held, prefer_natural_close):
            best[c.prompt_uid] = c
    return list(best.values())


def trim_cut_reasoning(completion: str, fmt: AnswerFormat) -> str | None:
    """A completion whose reasoning was cut at the grammar's cap, closed after its last complete sentence instead.

    The grammar ends a reasoning that reaches `max_reasoning_chars` wherever it is ("…rapid
    grow</think>"); fine-tuned on that, free sampling writes `</think>` in mid-sentence, or never.
    The trimmed text keeps the reasoning up to its last sentence end (".", "!" or "?" before
    whitespace, or a line break); with none, its whole words followed by "." The answer block,
    hence the reward, is unchanged. Used for SFT targets only, whose log-probs never matter.

    Args:
        completion: a format-valid completion (the text after the prompt and prefill).
        fmt: its task's answer format (a format without reasoning has nothing to trim).

    Returns:
        the trimmed completion, or None when there is nothing to trim to (no reasoning, a single
        word, or the reasoning already ends a sentence) or the result would not parse.
    """
    parsed = parse_answer(completion, fmt)
    if not parsed.ok or not parsed.reasoning:  # a format without reasoning parses to None
        return None
    reasoning = parsed.reasoning.rstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(reasoning)]
    if ends and ends[-1] == len(reasoning):
        return None
    if ends:
        head = reasoning[:ends[-1]].rstrip()
    else:
        words = reasoning.rsplit(None, 1)
        if len(words) < 2:
            return None
        head = words[0].rstrip(",;:-") + "."
    if not head.strip():
        return None
    close = completion.index(THINK_CLOSE)
    start = close - len(parsed.reasoning)
    trimmed = completion[:start] + head + completion[close:]
    return trimmed if parse_answer(trimmed, fmt).ok else None


def canonical_answer(completion: str, fmt: AnswerFormat) -> str | None:
    """A format-valid completion with its answer block in the one layout `render_answer` writes.

    Constrained sampling lets the answer's JSON whitespace vary (`<answer>\n\n{\n  "query" : "…"\n}`,
    `{"query":"…"}</answer>`), and each kept completion shows the policy another layout of the
    same answer. The canonical text keeps everything up to `</think>` as sampled (the reasoning)
    and writes the rest as `</think>\n<answer>\n{"query": "…"}\n</answer>`: the same value, so
    the same reward. Used for SFT targets only, whose log-probs never matter.

    Args:
        completion: the text after the prompt and prefill.
        fmt: its task's answer format.

    Returns:
        the canonical completion, or None when the completion does not parse or is canonical already.
    """
    parsed = parse_answer(completion, fmt)
    if not parsed.ok:
        return None
    if fmt.think == "none":
        text = render_answer(fmt, parsed.value)
    else:
        head = completion[:completion.index(THINK_CLOSE)]
        text = head + render_answer(fmt.model_copy(update={"think": "prefill"}), parsed.value)
    if text == completion:
        return None
    return text if parse_answer(text, fmt).value == parsed.value else None


def epoch_order(groups: Sequence[str], rng: random.Random, *, balance: bool = False) -> list[int]:
    """The sample indices of one SFT epoch, shuffled: every sample once, or as many split evenly by group.

    Args:
        groups: each kept sample's group (its task).
        rng: the seeded shuffle.
        balance: give every group the same share of the epoch's len(groups) slots; a group with
            fewer samples than its share repeats them (a fresh shuffle per pass), one with more
            contributes a fresh subset each epoch. Unbalanced, a task with a third of the kept
            completions gets a third of the gradient, however badly it needs the format.

    Returns:
        len(groups) indices into `groups`.
    """
    n = len(groups)
    if not balance or n == 0:
        order = list(range(n))
        rng.shuffle(order)
        return order
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = sorted(members)
    base, extra = divmod(n, len(names))
    order = []
    for rank, name in enumerate(names):
        share = base + (rank < extra)
        picked: list[int] = []
        while len(picked) < share:
            one_pass = list(members[name])
            rng.shuffle(one_pass)
            picked.extend(one_pass)
        order.extend(picked[:share])
    rng.shuffle(order)
    return order


def sft_samples(kept: Sequence[Candidate]) -> list[TrainSample]:
    """Kept completions as `TrainSample`s for `Trainer.sft_step` (advantage and log-probs unused)."""
    out = []
    for c in kept:
        response = np.asarray(c.response_ids, dtype=np.int32)
        out.append(TrainSample(uid=c.uid, group_id=c.prompt_uid, policy_version=0,
                               prompt_ids=np.asarray(c.prompt_ids, dtype=np.int32), response_ids=response,
                               behaviour_logprobs=np.zeros(len(response), np.float32), advantage=0.0,
                               reward=float(c.reward or 0.0), temperature=1.0, restricted=False))
    return out


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, *, denominator: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the response tokens, as this micro-batch's share of the global token mean.

    Args:
        logprobs: [B, T] log π of each response token (temperature 1), 0 at padding.
        mask: [B, T] bool, real response tokens.
        denominator: the number of response tokens in the whole global batch.

    Returns:
        (loss = −Σ logprobs·mask / denominator, {"nll": this micro-batch's mean token NLL, "tokens": its token count}).
    """
    m = mask.to(logprobs.dtype)
    total = -(logprobs * m).sum()
    tokens = float(m.sum())
    return total / denominator.clamp(min=1.0), {"nll": float(total.detach()) / max(tokens, 1.0), "tokens": tokens}
