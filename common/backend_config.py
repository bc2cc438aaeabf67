"""Which search backend answers a task: a union keyed on `type` (a config module: no torch/vLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepretrieval.common.config import ApiClientConfig, BM25Config, DenseConfig, EmulatorConfig, StrictModel
from deepretrieval.common.config_pipeline import RateLimitConfig
from deepretrieval.common.sql_config import SqlConfig


class LuceneBackendSpec(StrictModel):
    """Lucene BM25 over a BEIR corpus (pyserini, "flat" index)."""

    type: Literal["bm25"] = "bm25"
    dataset: str = Field(description="Data set name under the data root, or a BEIR-layout folder.")
    bm25: BM25Config = Field(default_factory=BM25Config, description="BM25 parameters.")
    batch_window_ms: float = Field(2.0, ge=0, le=1000, description="Concurrent searches arriving within this window go to Lucene as one multi-threaded batch; 0 searches one at a time.")


class DenseBackendSpec(StrictModel):
    """FAISS over sentence embeddings of a BEIR corpus."""

    type: Literal["dense"] = "dense"
    dataset: str = Field(description="Data set name under the data root, or a BEIR-layout folder.")
    dense: DenseConfig = Field(default_factory=DenseConfig, description="Encoder settings.")


def _check_emulator_api(spec: PubMedBackendSpec | CtgovBackendSpec):
    """A managed emulator must emulate the backend's own API."""
    if spec.emulator is not None and spec.emulator.api != spec.type:
        raise ValueError(f"emulator.api is {spec.emulator.api!r} but this backend is {spec.type!r}")
    return spec


class PubMedBackendSpec(StrictModel):
    """PubMed E-utilities esearch (the real service or `deepretrieval emulate pubmed`)."""

    type: Literal["pubmed"] = "pubmed"
    client: ApiClientConfig = Field(description="Base URL, API key source, timeout.")
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig(limit_per_s=3.0), description="Cluster-wide quota: 3 req/s without an API key, 10 with one.")
    emulator: EmulatorConfig | None = Field(None, description="Start this local emulator for the run (api must be 'pubmed'; port 0 = a free port) and point client.base_url at it; None = use client.base_url as configured.")

    @model_validator(mode="after")
    def _emulator_api(self) -> PubMedBackendSpec:
        return _check_emulator_api(self)


class CtgovBackendSpec(StrictModel):
    """ClinicalTrials.gov API v2 (the real service or `deepretrieval emulate ctgov`)."""

    type: Literal["ctgov"] = "ctgov"
    client: ApiClientConfig = Field(description="Base URL, timeout.")
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig(limit_per_s=50 / 60), description="Cluster-wide quota: about 50 requests per minute per IP.")
    emulator: EmulatorConfig | None = Field(None, description="Start this local emulator for the run (api must be 'ctgov'; port 0 = a free port) and point client.base_url at it; None = use client.base_url as configured.")

    @model_validator(mode="after")
    def _emulator_api(self) -> CtgovBackendSpec:
        return _check_emulator_api(self)


class SqlBackendSpec(StrictModel):
    """Read-only SQLite execution (the sql task)."""

    type: Literal["sql"] = "sql"
    database: Path | None = Field(None, description="SQLite file; None = <data root>/<dataset>/geography.sqlite style lookup by the dataset.")
    dataset: str = Field("geoquery", description="Text-to-SQL data set whose database is used when `database` is None.")
    sql: SqlConfig = Field(default_factory=SqlConfig, description="Timeout and row caps.")


BackendSpec = Annotated[LuceneBackendSpec | DenseBackendSpec | PubMedBackendSpec | CtgovBackendSpec | SqlBackendSpec, Field(discriminator="type")]
"""Any backend, chosen by `type`."""
