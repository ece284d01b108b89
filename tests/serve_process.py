"""`sam2-service serve` as a real process on 127.0.0.1 for tests: started, waited for, killed or stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures import free_port

REPO = Path(__file__).resolve().parents[1]


class ServeProcess:
    """One server; `args` are serve's flags (host, port and log level are added), `env` extra SAM2_* settings."""

    def __init__(self, log: Path, args: list[str], env: dict[str, str] | None = None, ready_timeout: float = 120):
        self.port = free_port()
        self.log = log
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
        cmd = [sys.executable, "-m", "service.cli", "serve", *map(str, args), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**clean, **(env or {})},
                                         cwd=REPO)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server not ready in {ready_timeout:g} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/track"

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
