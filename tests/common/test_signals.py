"""A library that replaces the SIGSEGV handler when loaded (xgrammar's tvm_ffi) leaves it unchanged
inside `keep_sigsegv_handler`, and changes it without (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
from deepretrieval.common.signals import keep_sigsegv_handler, sigsegv_handler_address
before = sigsegv_handler_address()
{block}
print(before == sigsegv_handler_address())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaction layout is Linux's")
@pytest.mark.parametrize(("block", "kept"), [("with keep_sigsegv_handler():\n    import xgrammar", "True"), ("import xgrammar", "False")])
def test_sigsegv_handler_survives_xgrammar_only_when_kept(block, kept):
    pytest.importorskip("xgrammar")
    out = subprocess.run([sys.executable, "-c", CHECK.format(block=block)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == kept
