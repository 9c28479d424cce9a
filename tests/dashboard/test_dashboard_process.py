"""`lmforge dashboard` as systemd, Kubernetes or a terminal stops it (issue 21, point 12): a SIGTERM or a
Ctrl-C to the `lmforge` process stops its Streamlit server too, and even a `kill -9` leaves no Streamlit
behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _streamlit_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for child in (task / "children").read_text().split():
                if b"streamlit" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
        except OSError:
            continue
    return found


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_lmforge_dashboard_stops_its_streamlit_server(tmp_path: Path, stop: signal.Signals) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env |= {"LMFORGE_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(PROJECT)}
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "dashboard", "--port", str(port)], cwd=PROJECT,
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    streamlit: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port) and time.monotonic() < deadline and cli.poll() is None:
            time.sleep(0.5)
        assert _healthy(port), log.read_text()[-3000:]
        streamlit = _streamlit_of(cli.pid)
        assert len(streamlit) == 1, streamlit

        os.kill(cli.pid, stop)  # the lmforge process only, as systemd's or a person's `kill` does
        code = cli.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _running(streamlit[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(streamlit[0]), f"Streamlit ({streamlit[0]}) outlived `lmforge dashboard`"
        assert not _healthy(port)
        if stop is not signal.SIGKILL:
            output = log.read_text()
            assert code == 0 and "Traceback" not in output, output[-3000:]
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in streamlit:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
