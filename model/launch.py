"""Process entry point and launcher commands for training subprocesses.

``python -m model.launch JOB`` trains as a world of one; under ``torchrun --nproc_per_node N`` or the
``deepspeed`` launcher every process runs the same entry with its rank in the environment. With a DeepSpeed
hostfile the launcher starts the processes on every host it names (pdsh over ssh; the run folder must be on
a filesystem every host shares). The entry is
torchelastic's ``@record``-ed: a failing process writes its error (type, message, traceback) as JSON to
``TORCHELASTIC_ERROR_FILE``; torchrun copies the first failure's file to its own, which :func:`spawn` sets, so
the caller reads the cause from there (:func:`read_error_file`) instead of searching the log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from model.engine import free_port, init_single_process, shutdown_distributed

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


class HostfileError(ValueError):
    """The hostfile is missing or has a line that is not ``HOST slots=N``; the message names file and line."""


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()})


def read_hostfile(path: str | Path) -> dict[str, int]:
    """The hosts of a DeepSpeed (MPI-style) hostfile and their slots, in file order: one ``HOST slots=N`` a
    line, blank lines and ``#`` comments ignored. Read here, not left to DeepSpeed: its launcher trains on
    this machine alone when the file is missing (a warning only) and names no line in its errors."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise HostfileError(f"hostfile {file} does not exist (train.hostfile)")
    hosts: dict[str, int] = {}
    for number, raw in enumerate(file.read_text(errors="replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(\S+)\s+slots=(\d+)", line)
        if match is None:
            raise HostfileError(f"{file}:{number}: {line!r} is not 'HOST slots=N' (e.g. 'worker-1 slots=8')")
        host, slots = match.group(1), int(match.group(2))
        if slots < 1:
            raise HostfileError(f"{file}:{number}: host {host} has {slots} slots; a host needs at least 1")
        if host in hosts:
            raise HostfileError(f"{file}:{number}: host {host} is listed twice")
        hosts[host] = slots
    if not hosts:
        raise HostfileError(f"hostfile {file} names no host (one 'HOST slots=N' a line)")
    return hosts


def _fitting_hosts(hostfile: str | Path, processes: int) -> dict[str, int]:
    hosts = read_hostfile(hostfile)
    short = {host: slots for host, slots in hosts.items() if slots < processes}
    if short:
        raise HostfileError(f"{processes} processes per host do not fit the slots of "
                            + ", ".join(f"{h} (slots={n})" for h, n in short.items()) + f" in {hostfile}")
    return hosts


def world_size(processes: int, hostfile: str | Path | None = None) -> int:
    """Processes of the whole run: ``processes`` on this machine, or ``processes`` on every hostfile host
    (each must have that many slots)."""
    return processes if hostfile is None else processes * len(_fitting_hosts(hostfile, processes))


def _deepspeed_hosts(hostfile: str | Path, processes: int) -> list[str]:
    """DeepSpeed's arguments for a hostfile run: every host, ``processes`` on each. A single local host takes
    DeepSpeed's local path (no ssh, no pdsh); a single remote host is forced through the multi-node runner
    (DeepSpeed would otherwise start it here); several hosts find the master address through ssh."""
    hosts = _fitting_hosts(hostfile, processes)
    args = ["--hostfile", str(Path(hostfile).expanduser()), "--num_nodes", str(len(hosts)),
            "--num_gpus", str(processes)]
    if len(hosts) == 1 and next(iter(hosts)) in LOCAL_HOSTS:
        return [*args, "--master_addr", "127.0.0.1", "--no_ssh_check"]
    return args + (["--force_multi"] if len(hosts) == 1 else [])


def command(spec_path: Path, processes: int, launcher: str = "torchrun",
            hostfile: str | Path | None = None) -> list[str]:
    """argv that trains ``spec_path`` on ``processes`` local processes, or on ``processes`` per host of a
    DeepSpeed ``hostfile``."""
    port = str(free_port())
    if hostfile is not None:
        if launcher != "deepspeed":
            raise ValueError(f"a hostfile needs the deepspeed launcher, not {launcher!r}")
        return [sys.executable, "-m", "deepspeed.launcher.runner", *_deepspeed_hosts(hostfile, processes),
                "--master_port", port, "--module", "model.launch", str(spec_path)]
    if processes == 1:
        return [sys.executable, "-m", "model.launch", str(spec_path)]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
                str(processes), "--master_addr", "127.0.0.1", "--master_port", port,
                "-m", "model.launch", str(spec_path)]
    if launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", port, "--module", "model.launch", str(spec_path)]
    raise ValueError(f"unknown launcher {launcher!r}: use torchrun or deepspeed")


def spawn(job_path: Path, processes: int, launcher: str, log_path: Path, error_file: Path | None = None,
          env: dict[str, str] | None = None, hostfile: str | Path | None = None) -> subprocess.Popen:
    """Start training in a new process group (so it can be stopped as a whole), output to ``log_path``,
    the first failure's error to ``error_file`` (see :func:`read_error_file`).

    The child gets a fresh rendezvous: this process may itself be a world of one listening on its port.
    """
    argv = command(job_path, processes, launcher, hostfile)  # a bad hostfile fails here, before any process
    child_env = dict(os.environ if env is None else env)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", ERROR_FILE_ENV):
        child_env.pop(key, None)
    if error_file is not None:
        error_file.unlink(missing_ok=True)
        child_env[ERROR_FILE_ENV] = str(error_file)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)


def read_error_file(error_file: Path) -> str | None:
    """``"ExceptionType: message"`` of the failed process, from its torchelastic error file; None when it
    wrote none (killed by a signal, or it died before the entry point ran)."""
    try:
        data = json.loads(error_file.read_text())
    except (OSError, ValueError):
        return None
    message = data.get("message")
    if isinstance(message, dict):
        message = message.get("message")
    return str(message) if message else None


@record
def main(argv: list[str] | None = None) -> None:
    from model.job import JobConfig
    from model.train_loop import train

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job", type=Path, help="job configuration JSON written by the orchestrator")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    init_single_process()
    train(JobConfig.load(args.job))
    shutdown_distributed()  # only after a finished run: a failed rank must not wait in a barrier for the others


if __name__ == "__main__":
    main()
