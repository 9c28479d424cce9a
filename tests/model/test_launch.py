"""The training launcher's hostfile: parsed and checked before any process starts, and the DeepSpeed command
line built from it, read back by DeepSpeed's own argument parser and hostfile reader.

Only a one-host hostfile of this machine can train here (tests/model/test_train_stage.py runs one); a
multi-host run needs pdsh and passwordless ssh to every host, so its command line is what is checked."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from deepspeed.launcher.runner import _parse_hostfile, parse_args
from pydantic import ValidationError

from lmforge_core.config.train import TrainConfig
from model.launch import HostfileError, command, read_hostfile, world_size


def hostfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def deepspeed_args(argv: list[str]):  # type: ignore[no-untyped-def]
    """The launcher's arguments as DeepSpeed's runner parses them (argv after ``python -m MODULE``)."""
    assert argv[1:3] == ["-m", "deepspeed.launcher.runner"]
    return parse_args(argv[3:])


def test_a_hostfile_is_read_in_order_and_deepspeed_reads_it_the_same(tmp_path: Path) -> None:
    text = "# the training nodes\nworker-0 slots=8\n\n  worker-1   slots=4  # spare GPU in maintenance\n"
    path = hostfile(tmp_path, text)
    assert list(read_hostfile(path).items()) == [("worker-0", 8), ("worker-1", 4)]
    assert dict(_parse_hostfile(text.splitlines())) == read_hostfile(path)
    assert world_size(4, path) == 8 and world_size(3) == 3


@pytest.mark.parametrize(("text", "message"), [
    ("worker-0 slots=8\nworker-1 slots = 4\n", r"hostfile:2: 'worker-1 slots = 4' is not 'HOST slots=N'"),
    ("worker-0\n", r"hostfile:1: 'worker-0' is not 'HOST slots=N'"),
    ("worker-0 slots=0\n", r"hostfile:1: host worker-0 has 0 slots"),
    ("worker-0 slots=2\n# again\nworker-0 slots=4\n", r"hostfile:3: host worker-0 is listed twice"),
    ("# nobody yet\n\n", r"names no host"),
])
def test_a_bad_hostfile_line_is_named_with_its_number(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(HostfileError, match=message):
        read_hostfile(hostfile(tmp_path, text))


def test_a_missing_hostfile_or_too_few_slots_is_refused_before_any_launch(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match=r"hostfile .*/nowhere does not exist \(train.hostfile\)"):
        command(tmp_path / "job.json", 2, "deepspeed", tmp_path / "nowhere")
    path = hostfile(tmp_path, "worker-0 slots=8\nworker-1 slots=2\n")
    with pytest.raises(HostfileError, match=r"4 processes per host do not fit the slots of worker-1 \(slots=2\)"):
        command(tmp_path / "job.json", 4, "deepspeed", path)
    with pytest.raises(ValueError, match="a hostfile needs the deepspeed launcher, not 'torchrun'"):
        command(tmp_path / "job.json", 2, "torchrun", path)


def test_the_settings_refuse_a_hostfile_for_torchrun() -> None:
    with pytest.raises(ValidationError, match="only the deepspeed launcher reads a hostfile"):
        TrainConfig(hostfile="/etc/lmforge/hostfile", launcher="torchrun")
    assert TrainConfig(hostfile="/etc/lmforge/hostfile", launcher="deepspeed").hostfile == "/etc/lmforge/hostfile"


def test_several_hosts_run_through_deepspeeds_multi_node_runner(tmp_path: Path) -> None:
    path = hostfile(tmp_path, "worker-0 slots=8\nworker-1 slots=8\n")
    argv = command(tmp_path / "job.json", 8, "deepspeed", path)
    args = deepspeed_args(argv)
    assert (args.hostfile, args.num_nodes, args.num_gpus) == (str(path), 2, 8)
    # the master address is worker-0's, which DeepSpeed asks over ssh; its ssh check stays on.
    assert args.master_addr == "" and not args.no_ssh_check and not args.force_multi
    assert (args.module, args.user_script, args.user_args) == (True, "model.launch", [str(tmp_path / "job.json")])


def test_one_remote_host_is_not_started_on_this_machine(tmp_path: Path) -> None:
    argv = command(tmp_path / "job.json", 4, "deepspeed", hostfile(tmp_path, "gpu-node-7 slots=4\n"))
    args = deepspeed_args(argv)
    assert args.force_multi and args.num_nodes == 1 and args.master_addr == ""


@pytest.mark.parametrize("host", ["localhost", socket.gethostname()])
def test_one_local_host_takes_deepspeeds_local_path_without_ssh(tmp_path: Path, host: str) -> None:
    argv = command(tmp_path / "job.json", 2, "deepspeed", hostfile(tmp_path, f"{host} slots=2\n"))
    args = deepspeed_args(argv)
    assert (args.num_nodes, args.num_gpus, args.master_addr) == (1, 2, "127.0.0.1")
    assert args.no_ssh_check and not args.force_multi
