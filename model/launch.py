"""Process entry point and launcher commands for training subprocesses.

``python -m model.launch JOB`` trains as a world of one; under ``torchrun --nproc_per_node N`` or the
``deepspeed`` launcher every process runs the same entry with its rank in the environment. The entry is
torchelastic's ``@record``-ed: a failing process writes its error (type, message, traceback) as JSON to
``TORCHELASTIC_ERROR_FILE``; torchrun copies the first failure's file to its own, which :func:`spawn` sets, so
the caller reads the cause from there (:func:`read_error_file`) instead of searching the log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from model.engine import free_port, init_single_process

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


def command(spec_path: Path, processes: int, launcher: str = "torchrun") -> list[str]:
    """argv that trains ``spec_path`` on ``processes`` local processes."""
    port = str(free_port())
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
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start training in a new process group (so it can be stopped as a whole), output to ``log_path``,
    the first failure's error to ``error_file`` (see :func:`read_error_file`).

    The child gets a fresh rendezvous: this process may itself be a world of one listening on its port.
    """
    child_env = dict(os.environ if env is None else env)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", ERROR_FILE_ENV):
        child_env.pop(key, None)
    if error_file is not None:
        error_file.unlink(missing_ok=True)
        child_env[ERROR_FILE_ENV] = str(error_file)
    with open(log_path, "ab") as log:
        return subprocess.Popen(command(job_path, processes, launcher), stdout=log, stderr=subprocess.STDOUT,
                                env=child_env, start_new_session=True)


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


if __name__ == "__main__":
    main()
