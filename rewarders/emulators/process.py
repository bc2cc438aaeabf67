"""Run an emulator as a separate process (the `deepretrieval emulate` CLI), for multi-process setups.

    with EmulatorProcess(cfg, paths) as base_url:
        ...   # clients in this and other processes use base_url

The child prints `serving at <base URL>` once listening; `start()` waits for that line and
`stop()` ends exactly that child, by pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO
from types import TracebackType

from deepretrieval.common.config import EmulatorConfig, PathsConfig
from deepretrieval.common.errors import BackendUnavailable

READY_PREFIX = "serving at "
"""Must match deploy/cmd_emulate.py's READY_PREFIX."""


def cli_args(cfg: EmulatorConfig, paths: PathsConfig) -> list[str]:
    """The `deepretrieval emulate ...` arguments equivalent to `cfg`."""
    f = cfg.faults
    args = ["emulate", cfg.api, "--dataset", cfg.dataset, "--host", cfg.host, "--port", str(cfg.port),
            "--data-root", str(paths.data_root), "--index-dir", str(paths.index_dir),
            "--search-threads", str(cfg.search_threads),
            "--latency-ms", str(f.latency_ms), "--latency-jitter-ms", str(f.latency_jitter_ms),
            "--error-5xx-rate", str(f.error_5xx_rate), "--burst-429-rate", str(f.burst_429_rate),
            "--burst-429-len", str(f.burst_429_len), "--retry-after-s", str(f.retry_after_s),
            "--garbage-rate", str(f.garbage_rate), "--hang-rate", str(f.hang_rate), "--hang-s", str(f.hang_s),
            "--fault-seed", str(f.seed), "--log-level", "WARNING"]
    if not cfg.rate_limit:
        args.append("--no-rate-limit")
    for flag, value in (("--rate-limit-rps", cfg.rate_limit_rps), ("--rate-limit-rps-with-key", cfg.rate_limit_rps_with_key),
                        ("--rate-limit-window-s", cfg.rate_limit_window_s)):
        if value is not None:
            args += [flag, str(value)]
    return args


def _pump(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    """Move the child's stdout lines into `lines` (None at EOF), so the pipe never fills."""
    if stream is None:
        lines.put(None)
        return
    for line in stream:
        lines.put(line)
    lines.put(None)


class EmulatorProcess:
    """One emulator in a child process.

    Args:
        cfg: the emulator settings (`port=0` picks a free port).
        paths: data root and index folder.
    """

    def __init__(self, cfg: EmulatorConfig, paths: PathsConfig):
        self.cfg = cfg
        self.paths = paths
        self.base_url: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the child and wait until it listens.

        Returns:
            The base URL it serves.

        Raises:
            BackendUnavailable: it exited or did not get ready within `timeout_s` (stderr tail included).
        """
        cmd = [sys.executable, "-m", "deepretrieval.deploy.cli", *cli_args(self.cfg, self.paths)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=os.environ.copy())
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, lines), name="emulator-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith(READY_PREFIX):
                self.base_url = line[len(READY_PREFIX):].split()[0]
                return self.base_url
        tail = self._stderr_tail()
        self.stop()
        raise BackendUnavailable(f"emulator process did not get ready within {timeout_s:g} s; stderr:\n{tail}")

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the child by pid: SIGTERM, then SIGKILL if it does not exit in time."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout_s)
        self._proc = None
        self._stderr.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
