"""The format warm-up's settings (rejection-sampling fine-tuning before RL). A config module: no torch."""

from __future__ import annotations

from pydantic import Field, model_validator

from deepretrieval.common.config import StrictModel


class WarmupConfig(StrictModel):
    """Rejection-sampling fine-tuning (RFT) before RL: sample constrained, keep what beats the original, SFT.

    The held-out prompts (for `format_ok_before/after`) are train-split prompts never used for
    fine-tuning; both sets are drawn from the shuffled train prompts of every task of the run.
    """

    enabled: bool = Field(False, description="`train` runs the warm-up first (unless the run already has a warm policy) and starts RL from its export.")
    prompts: int = Field(128, ge=1, le=100_000, description="Train prompts sampled for fine-tuning candidates (spread over the run's tasks); with `min_kept_per_task`, the most drawn in all.")
    min_kept_per_task: int | None = Field(None, ge=1, le=100_000, description="Draw prompts in rounds until every task has this many kept completions (or `prompts` are drawn): a task whose requests rarely work keeps few, and draws more. None: one round of `prompts`, whatever each task keeps.")
    samples_per_prompt: int = Field(8, ge=1, le=256, description="Grammar-constrained completions per prompt (G); the best one that beats the original is kept.")
    heldout_prompts: int = Field(48, ge=1, le=10_000, description="Train prompts kept out of fine-tuning, on which free-sampling format-ok is measured before and after.")
    format_samples: int = Field(1, ge=1, le=64, description="Free-sampled completions per held-out prompt behind format_ok_before/after: more draws, less noise (one draw on 32 prompts moves by about 0.06).")
    format_samples_before: int | None = Field(None, ge=1, le=64, description="Draws per held-out prompt behind format_ok_before alone; None: `format_samples`. The untrained model is measured first, and one that never closes its answer runs every draw to the token limit (the costliest draws of the warm-up) for a share known to be near 0 (TASKS.md §7: 0 of 64).")
    margin: float = Field(0.0, ge=0.0, description="A kept completion's reward must exceed the original request's by more than this.")
    keep_ties: bool = Field(False, description="Also keep a completion exactly as good as a request that already works as a query (positive reward): a format example that teaches nothing worse than the request. Never a tie with a failing request.")
    neutral_ties: bool = Field(False, description="With keep_ties, keep a tie only when its answer searches the request itself (a copy; in expand mode with new_terms_only, no word the request lacks). A tie that adds words ties by luck (a word the index lacks, one that moves no relevant document) and teaches writing such words.")
    prefer_natural_close: bool = Field(True, description="Of a prompt's completions that qualify, keep one whose reasoning the model closed itself over one the grammar cut at `max_reasoning_chars`, then the highest reward, then the shortest. False: the highest reward only. A cut completion teaches `</think>` in mid-sentence.")
    trim_cut_reasoning: bool = Field(False, description="A kept completion whose reasoning the grammar cut at `max_reasoning_chars` is fine-tuned on with its reasoning closed after its last complete sentence (its answer, so its reward, unchanged): the SFT set never shows `</think>` in mid-sentence, even where no qualifying completion closed on its own.")
    canonical_answer: bool = Field(False, description="Each kept completion is fine-tuned on with its answer block in the one canonical layout (`</think>\\n<answer>\\n{\"query\": \"...\"}\\n</answer>`; its reasoning and query as sampled, so its reward unchanged): constrained sampling varies the JSON whitespace, and every layout the SFT set shows is one more the policy spreads its probability over.")
    balance_tasks: bool = Field(False, description="Each SFT epoch gives every task the same share of its steps (a task with few kept completions repeats them): the tasks whose requests rarely work keep few completions, yet need the format as much.")
    epochs: int = Field(3, ge=1, le=100, description="Passes over the kept completions.")
    batch_seqs: int = Field(16, ge=1, le=4096, description="Kept completions per SFT optimizer step.")
    lr: float = Field(5.0e-5, gt=0, le=1.0, description="SFT learning rate (AdamW, after the learner's warm-up steps).")
    batch_prompts: int = Field(16, ge=1, le=4096, description="Prompts per generate call (each sampled G times).")
    max_reasoning_chars: int = Field(120, ge=0, le=100_000, description="Reasoning length the constrained sampler allows, so every completion closes well before the token limit.")
    prose_reasoning: bool = Field(False, description="The constrained sampler's reasoning holds no JSON brackets or double quotes (prose only): a kept reasoning that holds an answer-like object or a list of quoted strings teaches free sampling to answer inside the reasoning, or to loop.")
    overlap_scoring: bool = Field(True, description="Score each round of candidates on a background thread while the next round samples: the scores wait on the search APIs' rate limits, not on this CPU. The next round is then drawn before the last one is scored (its prompts count toward their task's target at the keep rate so far), so a draw with `min_kept_per_task` may take one round more than it needed, within `prompts`.")
    cpu_threads_bind: str = Field("all", description="CPU only: cores the warm-up's vLLM engine binds to. The warm-up runs alone, before any actor or learner starts, so by default every core; RL's actors keep `actors.engine.cpu_threads_bind`.")
    seed: int = Field(0, description="Seed of the prompt shuffle and the SFT batch order.")
    select_epochs: list[int] = Field(default_factory=list, description="SFT epochs after which the policy's free-sampling format-ok is measured on `select_prompts` further held-out prompts (never those behind format_ok_after); the best-scoring epoch's policy is exported (the later one on a tie). Empty: the last epoch's policy, unmeasured until format_ok_after. The last listed epoch must be `epochs`.")
    select_prompts: int = Field(32, ge=1, le=10_000, description="Train prompts kept out of fine-tuning and out of format_ok_after, on which `select_epochs` are compared (`format_samples` draws each).")

    @model_validator(mode="after")
    def _select_epochs_end_the_run(self) -> "WarmupConfig":
        chosen = self.select_epochs
        if chosen and (sorted(set(chosen)) != chosen or chosen[0] < 1 or chosen[-1] != self.epochs):
            raise ValueError(f"warmup.select_epochs {chosen} must be increasing epochs from 1 whose last is warmup.epochs ({self.epochs})")
        return self
