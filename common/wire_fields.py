"""Field checks of the wire schemas: each takes (value, dotted field path) and returns the typed
value or raises `SchemaError` naming the field and what was seen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepretrieval.common.errors import SchemaError

TOKEN_DTYPE = np.dtype("<i4")
LOGPROB_DTYPE = np.dtype("<f4")


def seen(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def check_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"field {path!r}: expected str, got {seen(value)}")
    return value


def check_text(value: object, path: str) -> str:
    """A str of generated text, made encodable: lone surrogates (undecodable model bytes) become
    U+FFFD. The token ids stay exact; only the decoded text is repaired for the wire."""
    text = check_str(value, path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def check_opt_str(value: object, path: str) -> str | None:
    return None if value is None else check_str(value, path)


def check_int(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"field {path!r}: expected int, got {seen(value)}")
    return value


def check_float(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"field {path!r}: expected float, got {seen(value)}")
    return float(value)


def check_opt_float(value: object, path: str) -> float | None:
    return None if value is None else check_float(value, path)


def check_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(f"field {path!r}: expected bool, got {seen(value)}")
    return value


def check_str_list(value: object, path: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"field {path!r}: expected list of str, got {seen(value)}")
    return [check_str(v, f"{path}[{i}]") for i, v in enumerate(value)]


def check_str_float_map(value: object, path: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"field {path!r}: expected map str->float, got {seen(value)}")
    return {check_str(k, f"{path}.<key>"): check_float(v, f"{path}.{k}") for k, v in value.items()}


def check_str_map(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"field {path!r}: expected map with str keys, got {seen(value)}")
    for k in value:
        check_str(k, f"{path}.<key>")
    return dict(value)


def check_messages(value: object, path: str) -> list[dict[str, str]]:
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"field {path!r}: expected list of chat messages, got {seen(value)}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise SchemaError(f"field '{path}[{i}]': expected a map with exactly 'role' and 'content', got {seen(m)}")
        out.append({"role": check_str(m["role"], f"{path}[{i}].role"), "content": check_str(m["content"], f"{path}[{i}].content")})
    return out


def check_array(value: object, path: str, dtype: np.dtype, integral: bool) -> np.ndarray:
    """Coerce a sequence / ndarray / packed bytes into a read-only 1-D array of `dtype`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) % dtype.itemsize:
            raise SchemaError(f"field {path!r}: packed {dtype.str} bytes must be a multiple of {dtype.itemsize} long, got {len(raw)} bytes")
        arr = np.frombuffer(raw, dtype=dtype)
    else:
        src = np.asarray(value)
        if src.ndim != 1:
            raise SchemaError(f"field {path!r}: expected a 1-D sequence, got shape {src.shape}")
        if src.size and integral and src.dtype.kind not in "iu":
            raise SchemaError(f"field {path!r}: expected integer token ids, got dtype {src.dtype}")
        if src.size and not integral and src.dtype.kind not in "iuf":
            raise SchemaError(f"field {path!r}: expected float values, got dtype {src.dtype}")
        if integral and src.size and (src.min() < np.iinfo(dtype).min or src.max() > np.iinfo(dtype).max):
            raise SchemaError(f"field {path!r}: token ids must fit int32, got range [{src.min()}, {src.max()}]")
        arr = np.ascontiguousarray(src, dtype=dtype).copy()
    arr.flags.writeable = False
    return arr


def check_token_array(value: object, path: str) -> np.ndarray:
    return check_array(value, path, TOKEN_DTYPE, integral=True)


def check_logprob_array(value: object, path: str) -> np.ndarray:
    return check_array(value, path, LOGPROB_DTYPE, integral=False)


def set_frozen(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses: normalise in __post_init__
