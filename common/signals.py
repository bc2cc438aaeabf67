"""Keep the process's C-level SIGSEGV handler across imports and runtimes that replace it.

A JVM in the process (pyserini's BM25 via pyjnius) handles SIGSEGV itself: safepoint polls,
stack banging and implicit null checks raise it on purpose. Libraries loaded after the JVM that
install their own crash handler take those signals and kill the process: xgrammar's tvm_ffi
(a backtrace handler installed when the library loads) and Ray (a failure signal handler
installed by `ray.init`; `ray.shutdown` resets SIGSEGV to the default action, i.e. a crash). `keep_sigsegv_handler()` restores whatever handler was there
before the block, so both can share a process with the JVM (they lose only their crash backtraces).
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _SigAction(ctypes.Structure):
    """glibc's `struct sigaction` on Linux."""

    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


def sigsegv_handler_address() -> int | None:
    """The address of the current C-level SIGSEGV handler (None = default); Linux only."""
    saved = _SigAction()
    ctypes.CDLL(None).sigaction(signal.SIGSEGV, None, ctypes.byref(saved))
    return saved.handler


@contextmanager
def keep_sigsegv_handler() -> Iterator[None]:
    """Run the block, then put back the SIGSEGV handler (with its flags and mask) it started with."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None)
    saved = _SigAction()
    libc.sigaction(signal.SIGSEGV, None, ctypes.byref(saved))
    try:
        yield
    finally:
        libc.sigaction(signal.SIGSEGV, ctypes.byref(saved), None)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does.

    `kill PID` (a scheduler, `timeout`, a container stop) then unwinds the same way as Ctrl-C: the
    run checkpoints and every `with` block stops what it started (the private redis-server, managed
    emulators, engines) instead of leaving them orphaned. Outside the main thread it does nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
