"""The artifact store on the local folder and on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmforge_core.artifacts import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreUnavailable,
    InvalidArtifactKey,
)
from lmforge_core.artifacts.factory import store_for_uri
from lmforge_core.artifacts.local import LocalArtifactStore
from lmforge_core.artifacts.s3 import S3ArtifactStore


def test_put_get_roundtrip_records_sha256(artifacts: ArtifactStore, tmp_path: Path) -> None:
    data = b"hello lmforge\n" * 1000
    info = artifacts.put_bytes("datasets/ds-000001/manifest.json", data)
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert artifacts.get_bytes("datasets/ds-000001/manifest.json") == data
    dest = tmp_path / "out" / "m.json"
    assert artifacts.get_file("datasets/ds-000001/manifest.json", dest).sha256 == info.sha256
    assert dest.read_bytes() == data
    assert artifacts.exists("datasets/ds-000001/manifest.json")
    assert not artifacts.exists("datasets/ds-000001/other.json")


def test_put_file_streams_and_overwrite_replaces(artifacts: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with source.open("wb") as handle:
        for _ in range(12):
            handle.write(chunk)
    info = artifacts.put_file("runs/r1/ckpt.bin", source)
    assert info.size == 12 << 20
    with artifacts.open_read("runs/r1/ckpt.bin") as reader:
        digest = hashlib.sha256()
        for block in reader:
            digest.update(block)
    assert digest.hexdigest() == info.sha256
    artifacts.put_bytes("runs/r1/ckpt.bin", b"v2")
    assert artifacts.get_bytes("runs/r1/ckpt.bin") == b"v2"


def test_list_and_delete(artifacts: ArtifactStore) -> None:
    for key in ("a/1.txt", "a/2.txt", "a/b/3.txt", "ab/4.txt"):
        artifacts.put_bytes(key, key.encode())
    assert [i.key for i in artifacts.list("a")] == ["a/1.txt", "a/2.txt", "a/b/3.txt"]
    assert [i.key for i in artifacts.list()] == ["a/1.txt", "a/2.txt", "a/b/3.txt", "ab/4.txt"]
    artifacts.delete("a/2.txt")
    assert not artifacts.exists("a/2.txt")
    with pytest.raises(ArtifactNotFound, match="a/2.txt"):
        artifacts.get_bytes("a/2.txt")
    with pytest.raises(ArtifactNotFound):
        artifacts.delete("a/2.txt")


def test_open_write_is_atomic_and_discarded_on_error(artifacts: ArtifactStore) -> None:
    artifacts.put_bytes("x/obj", b"old")
    with pytest.raises(RuntimeError), artifacts.open_write("x/obj") as handle:
        handle.write(b"new-but-half")
        raise RuntimeError("writer failed")
    assert artifacts.get_bytes("x/obj") == b"old"


@pytest.mark.parametrize(
    "key", ["../escape", "a/../../etc/passwd", "/etc/passwd", "a//b", "./a", "a\\b", "C:/x", "", "a/.lmforge-meta/x"]
)
def test_keys_that_could_escape_are_refused(artifacts: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidArtifactKey):
        artifacts.put_bytes(key, b"x")
    with pytest.raises(InvalidArtifactKey):
        artifacts.exists(key)


def _tamper(artifacts: ArtifactStore, key: str, data: bytes) -> None:
    """Change stored bytes behind the store's back, keeping the recorded sha256."""
    if isinstance(artifacts, LocalArtifactStore):
        (artifacts.root / key).write_bytes(data)
    else:
        assert isinstance(artifacts, S3ArtifactStore)
        recorded = artifacts.info(key).sha256
        artifacts._client.put_object(Bucket=artifacts.bucket, Key=artifacts._object_key(key), Body=data,
                                     Metadata={"sha256": recorded})


def test_corrupted_object_fails_verification(artifacts: ArtifactStore, tmp_path: Path) -> None:
    artifacts.put_bytes("models/v1/model.safetensors", b"A" * 4096)
    _tamper(artifacts, "models/v1/model.safetensors", b"A" * 4095 + b"B")
    with pytest.raises(ArtifactIntegrityError, match="models/v1/model.safetensors"):
        artifacts.get_bytes("models/v1/model.safetensors")
    downloads = tmp_path / "downloads"
    dest = downloads / "model.safetensors"
    with pytest.raises(ArtifactIntegrityError):
        artifacts.get_file("models/v1/model.safetensors", dest)
    assert list(downloads.iterdir()) == []  # no partial download left behind


_WRITER = textwrap.dedent(
    """
    import sys, time
    from lmforge_core.artifacts.factory import store_for_uri
    store = store_for_uri(sys.argv[1])
    with store.open_write("x/obj") as handle:
        handle.write(b"N" * 1_000_000)
        handle.flush()
        print("half-written", flush=True)
        time.sleep(60)
        handle.write(b"never")
    """
)


def test_crash_in_the_middle_of_a_write_keeps_the_old_object(artifacts: ArtifactStore) -> None:
    artifacts.put_bytes("x/obj", b"old object")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, artifacts.uri], stdout=subprocess.PIPE, env=os.environ)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"half-written"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert artifacts.get_bytes("x/obj") == b"old object"
    assert [i.key for i in artifacts.list("x")] == ["x/obj"]
    if isinstance(artifacts, LocalArtifactStore):
        reopened = store_for_uri(artifacts.uri)
        assert isinstance(reopened, LocalArtifactStore)
        assert list((reopened.root / ".lmforge-tmp").iterdir()) == []  # the dead writer's temporary is gone


def test_unknown_bucket_is_named(s3_server) -> None:  # type: ignore[no-untyped-def]
    store = store_for_uri("s3://lmforge-no-such-bucket/prefix")
    with pytest.raises(ArtifactStoreUnavailable, match="bucket 'lmforge-no-such-bucket' does not exist"):
        store.check()
    with pytest.raises(ArtifactStoreUnavailable, match="does not exist"):
        store.get_bytes("a/b")
    with pytest.raises(ArtifactStoreUnavailable, match="does not exist"):
        store.put_bytes("a/b", b"x")


@pytest.fixture
def authenticating_s3(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A moto server process that lets 3 requests through and then enforces IAM credentials."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def test_wrong_credentials_are_named(authenticating_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", authenticating_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    boto3.client("s3").create_bucket(Bucket="authbucket")  # request 1 of the 3 let through
    store = store_for_uri("s3://authbucket/p")
    store.put_bytes("k", b"ok")  # requests 2 and 3 (upload, head): from here on keys are checked
    with pytest.raises(ArtifactStoreUnavailable, match="refused the credentials") as info:
        store.get_bytes("k")
    assert "wrong-secret" not in str(info.value) and "AWS access key" in str(info.value)


def test_large_s3_objects_go_up_in_parts_and_verify(s3_bucket: str, tmp_path: Path) -> None:
    store = S3ArtifactStore(f"s3://{s3_bucket}/p", multipart_threshold=5 * 1024 * 1024)
    source = tmp_path / "shard.bin"
    source.write_bytes(os.urandom(12 * 1024 * 1024))
    info = store.put_file("datasets/ds/train-00000.bin", source)
    head = store._client.head_object(Bucket=s3_bucket, Key="p/datasets/ds/train-00000.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: a multipart upload, not one PUT
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert store.get_file("datasets/ds/train-00000.bin", tmp_path / "back.bin").sha256 == info.sha256


def test_partial_reads_are_verified_and_read_zero_is_harmless(artifacts: ArtifactStore) -> None:
    artifacts.put_bytes("p/obj", b"0123456789")
    with artifacts.open_read("p/obj") as reader:
        assert reader.read(0) == b""
        assert reader.read(10) == b"0123456789"  # the recorded size is reached: checked here
    _tamper(artifacts, "p/obj", b"0123456780")
    with pytest.raises(ArtifactIntegrityError), artifacts.open_read("p/obj") as reader:
        reader.read(10)  # a caller that stops at the recorded size still gets the check


_DIE_BETWEEN_RENAMES = textwrap.dedent(
    """
    import os, signal, sys
    from lmforge_core.artifacts.factory import store_for_uri
    store = store_for_uri(sys.argv[1])
    real_replace, calls = os.replace, []
    def replace_then_die(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:  # the data is in place, its checksum not yet
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace_then_die
    store.put_bytes("x/obj", b"new object")
    """
)


def test_crash_between_data_and_checksum_renames_is_rolled_forward(tmp_path: Path) -> None:
    store = store_for_uri(str(tmp_path / "artifacts"))
    store.put_bytes("x/obj", b"old object")
    writer = subprocess.run([sys.executable, "-c", _DIE_BETWEEN_RENAMES, store.uri], env=os.environ, timeout=60)
    assert writer.returncode == -signal.SIGKILL
    reopened = store_for_uri(store.uri)  # recovery finishes the dead writer's commit
    assert reopened.get_bytes("x/obj") == b"new object"
    assert list((tmp_path / "artifacts" / ".lmforge-tmp").iterdir()) == []


def test_s3_listing_stops_at_the_prefix_boundary(s3_bucket: str, s3_server) -> None:  # type: ignore[no-untyped-def]
    team = store_for_uri(f"s3://{s3_bucket}/team")
    team2 = store_for_uri(f"s3://{s3_bucket}/team2")
    team.put_bytes("a/1", b"1")
    team2.put_bytes("b/2", b"2")
    assert [i.key for i in team.list()] == ["a/1"]
    assert [i.key for i in team2.list()] == ["b/2"]


def test_local_key_clashes_and_long_parts_are_named(tmp_path: Path) -> None:
    store = store_for_uri(str(tmp_path / "artifacts"))
    store.put_bytes("a", b"file")
    with pytest.raises(ArtifactError, match="clashes"):
        store.put_bytes("a/b", b"x")
    assert store.get_bytes("a") == b"file"
    with pytest.raises(InvalidArtifactKey, match="longer than 255"):
        store.put_bytes("x" * 300, b"x")


def test_local_writer_is_a_real_file_for_text_and_parquet_writers(tmp_path: Path) -> None:
    import io

    store = store_for_uri(str(tmp_path / "artifacts"))
    with store.open_write("t/notes.txt") as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8")
        text.write("héllo\n")
        text.flush()
        text.detach()  # hand the file back to the store, which commits it
    assert store.get_bytes("t/notes.txt") == "héllo\n".encode()
