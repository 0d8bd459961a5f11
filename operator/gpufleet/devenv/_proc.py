"""Child-process helpers shared by the devenv servers: free ports, readiness polling, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on loopback right now (all sockets held open together, so they differ).
    The tiny race with other processes is caught at start-up: a server that cannot bind exits, and
    `wait_until` reports its log."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_until(ready: Callable[[], bool], *, proc: subprocess.Popen[bytes], log: Path, timeout_s: float,
               what: str, interval_s: float = 0.2) -> None:
    """Poll `ready` until true; fail early (with the log) if the process exits, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s:\n{log_tail(log)}")
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen[bytes] | None, *, timeout_s: float, group: bool = False) -> None:
    """SIGTERM the child, wait, then SIGKILL. With `group` (the child was started with
    start_new_session=True, so its process group id is its pid), the SIGKILL also reaches helpers it
    forked (Triton's Python stubs). SIGTERM goes to the child alone: Triton shuts its stubs down
    itself and removes their shared-memory regions; signalling the stubs directly would leak them."""
    if proc is None:
        return

    def kill_group() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            if group:
                kill_group()
            else:
                proc.kill()
            proc.wait(timeout=10)
    if group:
        kill_group()  # a helper that outlived its parent
