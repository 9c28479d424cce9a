"""A real Triton Inference Server on this machine, from the ``nvidia-pytriton`` wheel's bundled binary.

The recipe (ENVIRONMENT.md): the python backend gets its stub for this Python copied into a scratch
``backends/python``; ``LD_LIBRARY_PATH`` puts this interpreter's own ``lib`` first (else the stub loads
the system libpython against our standard library and outputs come back empty), then the wheel's
libraries; ``PATH`` starts with this venv's ``bin``, because the stub runs the first ``python3`` on PATH
(and ignores PYTHONPATH). Logs go to a file in the workspace; the metrics port serves Prometheus text.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmforge_core.processes import pid_alive

STATE_FILE = "server.json"


class TritonServerError(RuntimeError):
    """The server could not be started, is not running, or did not become ready."""


@dataclass
class ServerState:
    pid: int
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: str
    log_file: str
    model_control: str
    started_at: float

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise TritonServerError("nvidia-pytriton is not installed: pip install -e '.[triton]'") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backends(scratch: Path) -> Path:
    """``scratch/backends`` with the python backend and the stub built for this Python version."""
    root = pytriton_root()
    stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"the pytriton wheel has no python-backend stub for Python {sys.version_info[:2]}")
    backends = scratch / "backends"
    target = backends / "python"
    if not (target / stub.name).is_file():
        shutil.copytree(root / "backends" / "python", target, dirs_exist_ok=True)
        shutil.copy2(stub, target / stub.name)
    return backends


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(Path(sys.base_prefix) / "lib"), str(pytriton_root().parent.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # the stub ignores it; the models import the project path in their config
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http URL built here)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def is_ready(state: ServerState) -> bool:
    return _get(f"http://{state.http_url}/v2/health/ready")[0] == 200



def _log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _command(repository: str, backends: Path, state: ServerState, load: list[str]) -> list[str]:
    cmd = [str(pytriton_root() / "bin" / "tritonserver"), f"--model-repository={repository}",
           f"--backend-directory={backends}", f"--http-port={state.http_port}", f"--grpc-port={state.grpc_port}",
           f"--metrics-port={state.metrics_port}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
           f"--model-control-mode={state.model_control}", "--strict-readiness=true", "--log-verbose=0",
           "--exit-timeout-secs=10"]
    return cmd + [f"--load-model={name}" for name in load]


def _repository_location(repository: Path | str) -> str:
    """A local folder (made absolute, checked) or a cloud path Triton reads itself (``s3://...``)."""
    if str(repository).startswith("s3://"):
        return str(repository)
    folder = Path(repository).absolute()
    if not folder.is_dir():
        raise TritonServerError(f"model repository {folder} does not exist; publish a model first")
    return str(folder)


def start_server(repository: Path | str, run_dir: Path, *, model_control: str = "explicit",
                 load: list[str] | None = None, ports: tuple[int, int, int] | None = None,
                 ready_timeout: float = 120.0) -> ServerState:
    """Start ``tritonserver`` on ``repository`` (a folder, or an ``s3://`` path as
    ``serving.s3_repository.S3Repository.triton_path`` gives it, read with the AWS credentials of this
    environment) and wait until it is ready; state and log under ``run_dir``."""
    repository, run_dir = _repository_location(repository), Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    backends = prepare_backends(run_dir)
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    log_file = run_dir / f"tritonserver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    state = ServerState(0, http, grpc, metrics, repository, str(log_file), model_control, time.time())
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(_command(repository, backends, state, load or []), stdout=log,
                                stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True)
    state.pid = proc.pid
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TritonServerError(f"tritonserver exited with {proc.returncode}; log {log_file}:\n{_log_tail(str(log_file))}")
        if is_ready(state):
            (run_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
            return state
        time.sleep(0.3)
    stop_pid(proc.pid)
    raise TritonServerError(f"tritonserver not ready after {ready_timeout:.0f}s; log {log_file}:\n{_log_tail(str(log_file))}")


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the server we started (by its pid), SIGKILL after ``timeout``; then end what is left of its
    process group (the server runs in a session of its own): python-backend stubs can outlive a killed
    server (one ignored SIGTERM for 10 minutes, holding 384 MB), so they are killed with it."""
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not _exited(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _exited(pid, 5.0)
    reap_group(pid)


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``pid`` to end (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child (started by another `lmforge triton up`)
            if not pid_alive(pid):
                return True
        time.sleep(0.2)
    return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def reap_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process left in group ``pgid`` (the server's, named by its pid) and wait until none lives."""
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    left = group_members(pgid)
    if left:
        raise TritonServerError(f"processes {left} of the Triton server's group {pgid} survived SIGKILL")


def read_state(run_dir: Path) -> ServerState | None:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    return ServerState(**json.loads(path.read_text()))


def stop_server(run_dir: Path) -> ServerState | None:
    state = read_state(run_dir)
    if state is not None:
        stop_pid(state.pid)
        (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
    return state


def server_status(run_dir: Path) -> dict[str, Any]:
    """Whether the recorded server runs and is ready, its ports, log, models and a metrics sample."""
    state = read_state(run_dir)
    if state is None:
        return {"running": False, "reason": f"no server recorded in {run_dir}"}
    data: dict[str, Any] = asdict(state) | {"running": pid_alive(state.pid), "ready": is_ready(state)}
    if data["ready"]:
        code, body = _get(f"http://127.0.0.1:{state.metrics_port}/metrics")
        data["metrics_ok"] = code == 200 and b"nv_inference_request_success" in body
        code, body = urllib_post_json(f"http://{state.http_url}/v2/repository/index", {})
        data["models"] = json.loads(body) if code == 200 else []
    return data


def urllib_post_json(url: str, payload: dict[str, Any], timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
