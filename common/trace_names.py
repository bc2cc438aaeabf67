"""The names of our OpenTelemetry spans, span attributes and events: the one place they are spelled.

One sample is one trace: `rl.generate` (actor) is the root, `rl.reward` (rewarder) its child and
`rl.search.<backend>` the reward's child (one per search, cache hits included); the learner's
`rl.train` span lives in its own trace and links to the `rl.generate` span of every sample the
step trained on. Writers (actors, rewarders, learner, emulators) and readers (`trace summary`)
import these constants, so a renamed attribute cannot silently break the analysis.

Which span carries what:

- rl.generate: UID, GROUP_ID, PROMPT_UID, POLICY_VERSION, ENGINE, GEN_TOKENS, GEN_FINISH_REASON.
- rl.reward: UID, GROUP_ID, POLICY_VERSION, QUEUE_WAIT_S, REWARD_STATUS, REWARD, CACHE_HIT,
  SEARCH_RETRIES, TASK_BACKEND.
- rl.search.<backend>: UID and POLICY_VERSION (from baggage), SEARCH_BACKEND,
  SEARCH_INDEX_VERSION, SEARCH_K, CACHE_HIT, SEARCH_RETRIES, RATELIMIT_WAIT_S, SEARCH_BACKOFF_S,
  SEARCH_API_LATENCY_S, HTTP_STATUS and HTTP_STATUSES (HTTP backends), SEARCH_ERROR on failure.
- rl.train: TRAIN_STEP, POLICY_VERSION, TRAIN_SAMPLES, TRAIN_LOSS; each link carries UID.
- emulator server spans (`<METHOD> <path>`, kind SERVER): HTTP_METHOD, URL_PATH, HTTP_STATUS,
  EMULATOR_FAULT.
- serve.rewrite (one `POST /v1/rewrite` of the serving endpoint): SERVE_MODEL, POLICY_VERSION,
  HTTP_STATUS, and SERVE_ERROR for a refused request, else SERVE_TASK, SERVE_N, SERVE_SEARCH,
  SERVE_QUERY_CHARS, SERVE_VALID, SERVE_FALLBACK (+ SERVE_FORMAT_ERROR), SERVE_IDS, SERVE_RESULTS; a search is
  its child `rl.search.<backend>`.
"""

from __future__ import annotations

# Span names: the stage of a sample's life.
GENERATE = "rl.generate"
REWARD_SPAN = "rl.reward"
SEARCH_PREFIX = "rl.search."
TRAIN = "rl.train"


def search_span(backend: str) -> str:
    """The span name of a search on `backend` (e.g. `rl.search.pubmed`)."""
    return f"{SEARCH_PREFIX}{backend}"


def search_backend_of(span_name: str) -> str | None:
    """The backend of a `rl.search.<backend>` span name; None for any other span."""
    return span_name[len(SEARCH_PREFIX):] if span_name.startswith(SEARCH_PREFIX) else None


# The sample (rollout) a span belongs to; also OpenTelemetry baggage keys (prefix "rl.").
BAGGAGE_PREFIX = "rl."
UID = "rl.uid"
GROUP_ID = "rl.group_id"
PROMPT_UID = "rl.prompt_uid"
POLICY_VERSION = "rl.policy_version"

# rl.generate
ENGINE = "rl.engine"
GEN_TOKENS = "gen.tokens"
GEN_FINISH_REASON = "gen.finish_reason"

# rl.reward
QUEUE_WAIT_S = "queue.wait_s"
"""Seconds from the rollout's creation by the actor (just before it is published) to the rewarder
starting to score it: time in the Redis stream plus time waiting for a free scoring slot."""
REWARD_STATUS = "rl.status"
REWARD = "rl.reward"
TASK_BACKEND = "rl.task_backend"

# rl.reward and rl.search.<backend>
CACHE_HIT = "rl.cache_hit"
"""True when the answer came from the result cache (or another call's search in flight)."""
SEARCH_RETRIES = "search.retries"

# rl.search.<backend>
SEARCH_BACKEND = "search.backend"
SEARCH_INDEX_VERSION = "search.index_version"
SEARCH_K = "search.k"
SEARCH_ERROR = "search.error"
"""Why a search failed: `syntax` (the policy's query) or `unavailable` (retry budget spent)."""
RATELIMIT_WAIT_S = "ratelimit.wait_s"
"""Seconds spent in the cluster-wide rate limiter, all attempts together (Retry-After blocks included)."""
SEARCH_BACKOFF_S = "search.backoff_s"
"""Seconds slept between attempts (backoff; Retry-After pauses when there is no limiter)."""
SEARCH_API_LATENCY_S = "search.api_latency_s"
"""Seconds inside the engine's own search call, all attempts together: the API's latency."""
HTTP_STATUS = "http.response.status_code"
"""The last HTTP status the engine answered with (HTTP backends)."""
LEGACY_HTTP_STATUS = "http.status_code"
"""What HTTP_STATUS was called in traces written before it followed the current semantic conventions."""
HTTP_STATUSES = "search.http_statuses"
"""Every attempt's HTTP status, in order (attempts that got no answer are absent)."""

# rl.search.<backend> events
EVENT_RETRY = "retry"
EVENT_RATE_LIMITED = "rate_limited"
EVENT_ATTEMPT = "attempt"
EVENT_ERROR = "error"
EVENT_BACKOFF_S = "backoff_s"
EVENT_RETRY_AFTER_S = "retry_after_s"

# rl.train
TRAIN_STEP = "rl.step"
TRAIN_SAMPLES = "rl.samples"
TRAIN_LOSS = "train.loss"

# Emulator server spans (OpenTelemetry HTTP semantic conventions).
HTTP_METHOD = "http.request.method"
URL_PATH = "url.path"
EMULATOR_FAULT = "emulator.fault"

# The serving endpoint (deploy/serve_app.py).
SERVE_REWRITE = "serve.rewrite"
SERVE_MODEL = "serve.model"
SERVE_TASK = "serve.task"
SERVE_N = "serve.n"
SERVE_SEARCH = "serve.search"
SERVE_QUERY_CHARS = "serve.query_chars"
SERVE_VALID = "serve.valid"
"""How many of the request's n completions followed the answer format."""
SERVE_FALLBACK = "serve.fallback"
"""True when no completion followed the format and the original query was served."""
SERVE_FORMAT_ERROR = "serve.format_error"
SERVE_IDS = "serve.ids"
SERVE_RESULTS = "serve.results"
"""How many of the request's own search results its prompt showed (a task with `feedback`)."""
SERVE_ERROR = "serve.error"
"""The error code of a refused request (invalid_json, query_too_long, ...)."""
