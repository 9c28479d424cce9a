"""Process entry point and launcher commands for training subprocesses.

``python -m model.launch SPEC`` trains as a world of one; under ``torchrun --nproc_per_node N`` or the
``deepspeed`` launcher every process runs the same entry with its rank in the environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from model.engine import free_port, init_single_process


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


def spawn(spec_path: Path, processes: int, launcher: str, log_path: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start training in a new process group (so it can be stopped as a whole), output to ``log_path``.

    The child gets a fresh rendezvous: this process may itself be a world of one listening on its port.
    """
    child_env = dict(os.environ if env is None else env)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        child_env.pop(key, None)
    log = open(log_path, "ab")
    return subprocess.Popen(command(spec_path, processes, launcher), stdout=log, stderr=subprocess.STDOUT,
                            env=child_env, start_new_session=True)


def main(argv: list[str] | None = None) -> None:
    from model.train_loop import RunSpec, train

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path, help="run spec JSON written by the orchestrator")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    init_single_process()
    train(RunSpec.load(args.spec))


if __name__ == "__main__":
    main()
