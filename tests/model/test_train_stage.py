"""The training stage end to end on a real workspace (SQLite + local artifact store) and the CLI."""

import json
import socket

import pytest
from helpers import pattern_windows, write_dataset
from typer.testing import CliRunner

from lmforge_core.artifacts import ArtifactIntegrityError
from lmforge_core.fileio import sha256_file
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import RunStatus
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from model.hf_interop import export_hf
from tasks.train.run import TrainingError, resume_training, run_training

TRAIN = {"network": "tiny", "steps": 4, "global_batch": 4, "micro_batch": 4, "checkpoint_every": 2,
         "keep_checkpoints": 2, "threads": 1, "warmup_steps": 1, "rewarm_steps": 1, "lr": 3e-3,
         "metrics_flush_every": 3}


def workspace_with_two_datasets(tmp_path, **train):
    runtime = open_runtime(load_settings(workspace=tmp_path / "ws", train=TRAIN | train))
    staging = tmp_path / "staging"
    for i, (offset, n) in enumerate([(3, 48), (5, 32)], start=1):
        version = f"ds-{i:06d}"
        manifest = write_dataset(staging, version, pattern_windows(n, seed=i, offset=offset))
        keys = [f"datasets/{version}/manifest.json"] + [s["key"] for s in manifest["splits"]["train"]]
        for key in keys:
            runtime.artifacts.put_file(key, staging / key)
        with runtime.metadata.session() as session:
            repo.create_dataset_version(
                session, version=version, manifest_key=keys[0],
                manifest_sha256=sha256_file(staging / keys[0]), tokenizer_id=None,
                train_tokens=manifest["num_tokens"]["train"], validation_tokens=0, documents=n, batch_ids=[])
    return runtime


@pytest.fixture
def rt(tmp_path):
    runtime = workspace_with_two_datasets(tmp_path)
    yield runtime
    runtime.metadata.dispose()


@pytest.mark.slow
def test_two_process_run_is_recorded_from_its_event_stream(tmp_path):
    runtime = workspace_with_two_datasets(tmp_path, micro_batch=2, zero_stage=2)
    seen = []
    result = run_training(runtime, source="scratch", processes=2, progress=seen.append)
    assert [e["step"] for e in seen if e["type"] == "step"] == [1, 2, 3, 4]
    assert next(e for e in seen if e["type"] == "start")["world_size"] == 2
    with runtime.metadata.session() as session:
        run = repo.get_run(session, result.run_id)
        assert run.status == RunStatus.SUCCEEDED and run.config["processes"] == 2
        assert [c.step for c in repo.list_checkpoints(session, run.id)] == [2, 4]
        assert len(repo.step_metrics(session, run.id, "loss")) == 4
    runtime.metadata.dispose()


def test_training_records_run_metrics_checkpoints_and_a_candidate(rt):
    seen = []
    result = run_training(rt, source="production", progress=seen.append)  # no production yet: scratch
    assert result.model_version == "lmforge:v1" and result.status == "succeeded"
    assert [e["step"] for e in seen if e["type"] == "step"] == [1, 2, 3, 4]
    with rt.metadata.session() as session:
        run = repo.get_run(session, result.run_id)
        assert run.status == RunStatus.SUCCEEDED and run.config["source"].startswith("scratch")
        assert run.config["job"]["data"]["replay_versions"] == ["ds-000001"]
        assert run.dataset_version.version == "ds-000002"
        assert 0.2 < run.summary["replay_fraction"] < 0.3
        losses = repo.step_metrics(session, run.id, "loss")
        assert [m.step for m in losses] == [1, 2, 3, 4]
        assert {m.name for m in repo.step_metrics(session, run.id)} >= {"loss", "lr", "grad_norm", "tokens_per_s",
                                                                         "mfu"}
        checkpoints = repo.list_checkpoints(session, run.id)
        assert [c.step for c in checkpoints] == [2, 4]
        for c in checkpoints:
            assert rt.artifacts.info(c.artifact_key).sha256 == c.sha256
            manifest = json.loads(rt.artifacts.get_bytes(c.artifact_key))
            for rel, digest in manifest["files"].items():
                assert rt.artifacts.info(c.artifact_key.rsplit("/", 1)[0] + "/" + rel).sha256 == digest
        candidate = repo.get_alias(session, "lmforge", "candidate")
        assert candidate.label == "lmforge:v1" and candidate.training_run_id == run.id
        assert rt.artifacts.exists(candidate.artifacts["weights"] + "/model.safetensors")
    assert rt.artifacts.exists(f"runs/{result.run_id}/plan.npy")


def test_continual_run_starts_from_production_and_resume_continues_a_run(rt):
    first = run_training(rt, source="scratch")
    with rt.metadata.session() as session:
        v1 = repo.get_model_version(session, "lmforge", 1)
        repo.set_alias(session, name="lmforge", alias="production", model_version_id=v1.id)
    second = run_training(rt, source="production", dataset="ds-000002")
    with rt.metadata.session() as session:
        run = repo.get_run(session, second.run_id)
        v2 = repo.get_model_version(session, "lmforge", 2)
        assert run.base_model_version_id == v1.id and v2.parent_id == v1.id
        assert run.config["job"]["continuing"] and run.config["source"] == "lmforge:v1"

    resumed = resume_training(rt, first.run_id)
    with rt.metadata.session() as session:
        run = repo.get_run(session, resumed.run_id)
        assert run.resumed_from.run_id == first.run_id and run.status == RunStatus.SUCCEEDED
        assert run.summary["step"] == 4


def test_training_continues_an_imported_hugging_face_checkpoint(rt, tmp_path):
    first = run_training(rt, source="scratch")
    with rt.metadata.session() as session:
        prefix = repo.get_model_version(session, "lmforge", 1).artifacts["weights"]
    for name in ("model.safetensors", "config.json"):
        rt.artifacts.get_file(f"{prefix}/{name}", tmp_path / "ours" / name)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    result = run_training(rt, source=str(tmp_path / "hf"))
    with rt.metadata.session() as session:
        run = repo.get_run(session, result.run_id)
        # the checkpoint is registered first (lmforge:v2), and the run continues that version
        assert run.config["source"] == f"lmforge:v2 (imported {(tmp_path / 'hf').resolve()})"
        assert run.config["job"]["continuing"] and run.base_model_version_id == repo.get_model_version(
            session, "lmforge", 2).id
        assert run.summary["step"] == 4 and result.run_id != first.run_id and result.model_version == "lmforge:v3"


def test_resume_from_a_tampered_checkpoint_artifact_fails_naming_the_file(rt):
    result = run_training(rt, source="scratch")
    with rt.metadata.session() as session:
        last = repo.latest_checkpoint(session, repo.get_run(session, result.run_id).id)
        key = last.artifact_key.rsplit("/", 1)[0] + "/rng-rank0.safetensors"
    path = rt.settings.workspace / "artifacts" / key
    if not path.is_file():
        path = next(p for p in rt.settings.workspace.rglob("rng-rank0.safetensors") if key in p.as_posix())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="rng-rank0.safetensors"):
        resume_training(rt, result.run_id)


def last_json(text):
    return json.loads(text[text.rindex('{\n  "'):])


def test_cli_train_export_and_import(rt, tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("LMFORGE_WORKSPACE", str(rt.settings.workspace))
    monkeypatch.setenv("LMFORGE_TRAIN__STEPS", "2")
    monkeypatch.setenv("LMFORGE_TRAIN__THREADS", "1")
    monkeypatch.setenv("LMFORGE_TRAIN__CHECKPOINT_EVERY", "2")
    runner = CliRunner()
    out = runner.invoke(app, ["train", "--from", "scratch", "--json"])
    assert out.exit_code == 0, out.output
    data = last_json(out.stdout)
    assert data["model_version"] == "lmforge:v1" and data["checkpoint_key"].endswith("manifest.json")

    hf_dir = tmp_path / "hf"
    out = runner.invoke(app, ["export-hf", "1", str(hf_dir), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == "llama"
    out = runner.invoke(app, ["import-hf", str(hf_dir), "--json"])
    assert out.exit_code == 0, out.output
    imported = last_json(out.stdout)
    assert imported["model"]["dim"] == 256

    out = runner.invoke(app, ["train", "--from", str(tmp_path / "missing")])
    assert out.exit_code != 0


@pytest.mark.slow
def test_a_hostfile_naming_this_machine_trains_through_the_deepspeed_launcher(tmp_path):
    """DeepSpeed's runner with ``--hostfile`` (one local host: its local path, no ssh or pdsh); the launcher's
    own lines reach the progress stream as ``log`` events, as they reach the flow's logs. The host is named
    as the machine calls itself, so DeepSpeed's world (keyed by the hostfile's name) shows it read the file."""
    host = socket.gethostname()
    (tmp_path / "hostfile").write_text(f"# this machine only\n{host} slots=2\n")
    runtime = workspace_with_two_datasets(tmp_path, micro_batch=2, launcher="deepspeed",
                                          hostfile=str(tmp_path / "hostfile"))
    seen = []
    result = run_training(runtime, source="scratch", processes=2, progress=seen.append)
    assert result.status == "succeeded" and result.model_version == "lmforge:v1"
    assert next(e for e in seen if e["type"] == "start")["world_size"] == 2
    launcher_lines = [e["line"] for e in seen if e["type"] == "log"]
    assert any(f"WORLD INFO DICT: {{'{host}': [0, 1]}}" in line for line in launcher_lines), launcher_lines[:20]
    runtime.metadata.dispose()


def test_a_bad_hostfile_fails_the_run_naming_the_line_before_any_process_starts(tmp_path):
    (tmp_path / "hostfile").write_text("localhost slots=2\nworker-1 slots=two\n")
    runtime = workspace_with_two_datasets(tmp_path, micro_batch=2, launcher="deepspeed",
                                          hostfile=str(tmp_path / "hostfile"))
    with pytest.raises(TrainingError, match=r"hostfile:2: 'worker-1 slots=two' is not 'HOST slots=N'"):
        run_training(runtime, source="scratch", processes=2)
    with runtime.metadata.session() as session:
        (run,) = repo.list_runs(session)
        assert run.status == RunStatus.FAILED and "worker-1 slots=two" in run.error
    assert not list((runtime.settings.workspace / "runs").glob("*/train-*.log"))  # nothing was launched
    runtime.metadata.dispose()


@pytest.mark.slow
def test_a_failing_training_process_is_recorded_with_its_own_error(tmp_path):
    """The child's exception reaches the run record through torchelastic's error file (``@record``)."""
    runtime = workspace_with_two_datasets(tmp_path, micro_batch=2, regularization="l2")
    with pytest.raises(TrainingError, match="ValueError: l2 regularisation needs previous weights") as failure:
        run_training(runtime, source="scratch", processes=2)
    error_files = list((runtime.settings.workspace / "runs").glob("*/error-*.json"))
    assert len(error_files) == 1 and "needs previous weights" in error_files[0].read_text()
    assert "exited with code 1" in str(failure.value)
    with runtime.metadata.session() as session:
        run = repo.list_runs(session)[0]
        assert run.status == RunStatus.FAILED and "needs previous weights" in run.error
    runtime.metadata.dispose()


def test_training_without_any_dataset_names_the_command_that_makes_one(tmp_path):
    from flows.cli import app

    runtime = open_runtime(load_settings(workspace=tmp_path / "ws", train=TRAIN))
    with pytest.raises(TrainingError, match="run `lmforge ingest SOURCE` first"):
        run_training(runtime, source="scratch")
    assert "ingest" in {c.name or c.callback.__name__ for c in app.registered_commands}
    runtime.metadata.dispose()
