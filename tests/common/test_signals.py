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


def test_sigterm_unwinds_like_ctrl_c_so_cleanup_runs(tmp_path):
    """`kill PID` on a CLI command runs its `finally`/`with` cleanup (no orphaned services)."""
    import signal as _signal
    import subprocess
    import sys as _sys
    import time as _time

    marker = tmp_path / "cleaned"
    code = f"""
import sys, time
from deepretrieval.common.signals import terminate_as_interrupt
try:
    with terminate_as_interrupt():
        print("ready", flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    open({str(marker)!r}, "w").write("yes")
    sys.exit(130)
"""
    proc = subprocess.Popen([_sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    _time.sleep(0.1)
    proc.send_signal(_signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert marker.read_text() == "yes"
