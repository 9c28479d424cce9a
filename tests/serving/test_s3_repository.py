"""The Triton model repository on S3, on a real moto server: names Triton can read, the order a version
becomes visible in, an upload cut short that never counts, tampering caught; and end to end, a real Triton
server reading the bucket itself serves the published version (greedy equals PyTorch), is switched to the
next one, and rolled back."""

from __future__ import annotations

import boto3
import pytest
from serving_helpers import PROJECT_SOURCE, PROMPTS, greedy_reference, make_workspace, tiny_model, tiny_tokenizer

from lmforge_core.artifacts.s3 import S3ArtifactStore
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from serving.client import LMClient
from serving.onnx_export import export_onnx
from serving.s3_repository import S3Repository, triton_s3_path
from serving.triton_config import MODELS, ServingOptions
from serving.triton_repository import CONFIG_FILES, VERSION_MANIFEST, RepositoryError, stage_version
from serving.triton_server import start_server, stop_server
from tasks.publish.publish import PublishError, model_repository, publish_model, rollback_serving, server_dir

OPTIONS = ServingOptions(project_source=PROJECT_SOURCE)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    tok = tiny_tokenizer()
    return tok, export_onnx(tiny_model(tok.vocab_size), tmp_path_factory.mktemp("s3-export"), tok.encode(PROMPTS[0]))


def stage(export, root, version):
    tok, exported = export
    return stage_version(root, version, exported.directory, tok, {"model_version": f"t:v{version}",
                                                                  "onnx_sha256": exported.sha256})


def test_bucket_and_prefix_names_are_checked(tmp_path):
    for uri, message in [("s3://Not_A_Bucket/models", "names no valid bucket"), ("s3://ab/models", "no valid bucket"),
                         ("s3://-bucket/models", "no valid bucket"), ("s3://good-bucket/team=a/models", "Triton reads only"),
                         ("s3://good-bucket/a//b", "empty")]:
        with pytest.raises(RepositoryError, match=message):
            S3Repository(uri, tmp_path)
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", serving={"repository": "s3://Bad_Bucket/x"}))
    try:
        with pytest.raises(PublishError, match="serving.repository: .*'s3://Bad_Bucket/x' names no valid bucket"):
            model_repository(rt)
    finally:
        rt.metadata.dispose()


def test_triton_is_given_host_and_port_of_an_endpoint_that_is_not_aws():
    assert triton_s3_path("b", "p/q", "https://s3.eu-west-1.amazonaws.com") == "s3://b/p/q"
    assert triton_s3_path("b", "", "http://127.0.0.1:9000") == "s3://http://127.0.0.1:9000/b"
    assert triton_s3_path("b", "p", "https://minio.internal") == "s3://https://minio.internal:443/b/p"


def recording_store(uri):
    """The artifact store's S3 client, with a hook noting the key of every PUT in order."""
    client = boto3.client("s3")
    puts = []
    client.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"]))
    return S3ArtifactStore(uri, client=client), puts


def test_a_version_becomes_visible_only_after_all_its_files(s3_bucket, export, tmp_path):
    store, puts = recording_store(f"s3://{s3_bucket}/repo")
    repository = S3Repository(store.uri, tmp_path / "staging", store=store)
    assert repository.published_versions() == []
    assert repository.publish(stage(export, repository.staging_root, 3), OPTIONS) == [3]
    files = [k for k in puts if not k.endswith((VERSION_MANIFEST, ".pbtxt"))]
    manifests = [k for k in puts if k.endswith(VERSION_MANIFEST)]
    assert puts == files + manifests + [f"repo/{path}" for path in CONFIG_FILES]  # files, manifests, configs
    assert {k.split("/")[1] for k in files} == set(MODELS) and len(manifests) == len(MODELS)
    assert not list((tmp_path / "staging").rglob(".staging-*"))  # the local staging is gone
    assert repository.version_record(3)["onnx_sha256"] == export[1].sha256
    config = store.get_bytes("generate/config.pbtxt").decode()
    assert "specific" in config and "versions: 3" in config
    with pytest.raises(RepositoryError, match="version 3 already exists"):
        repository.publish(stage(export, repository.staging_root, 3), OPTIONS)


def test_an_upload_cut_short_never_counts_and_the_next_publish_replaces_it(s3_bucket, export, tmp_path):
    repository = S3Repository(f"s3://{s3_bucket}/repo", tmp_path / "staging")
    repository.publish(stage(export, repository.staging_root, 1), OPTIONS)
    store = repository.store
    for model in MODELS:  # a writer that died after every folder's manifest but generate_text's
        if model != "generate_text":
            store.put_bytes(f"{model}/2/{VERSION_MANIFEST}", b"{}")
    store.put_bytes("generate_text/2/half-written.bin", b"x")
    assert repository.published_versions() == [1] and repository.version_record(2) is None
    with pytest.raises(RepositoryError, match=r"versions \[2\] are not published"):
        repository.serve_versions([2])
    assert repository.publish(stage(export, repository.staging_root, 2), OPTIONS) == [1, 2]
    assert not store.exists("generate_text/2/half-written.bin")
    repository.serve_versions([1, 2])
    assert "versions: 1\n    versions: 2" in store.get_bytes("lm/config.pbtxt").decode()


def test_a_tampered_object_is_refused_before_it_is_served(s3_bucket, export, tmp_path):
    repository = S3Repository(f"s3://{s3_bucket}/repo", tmp_path / "staging")
    repository.publish(stage(export, repository.staging_root, 1), OPTIONS)
    repository.store.put_bytes("lm/1/model.onnx", b"not the graph")
    with pytest.raises(RepositoryError, match=r"lm/1/model.onnx does not match its recorded sha256"):
        repository.serve_versions([1])


def greedy(client, ws, version, text, n=10):
    ids = ws.tokenizer.encode(text)
    served = client.generate(ids, max_tokens=n, temperature=0.0).tokens
    return served, greedy_reference(ws.models[version], ids, n, ws.tokenizer.eos_id)


@pytest.mark.slow
def test_triton_serves_from_the_bucket_is_switched_and_rolled_back(s3_server, tmp_path):
    uri = f"s3://{s3_server.new_bucket()}/lmforge/triton"
    ws = make_workspace(tmp_path, seeds=(0, 1), repository=uri)
    rt = ws.runtime
    try:
        first = publish_model(rt, "1", actor="test")  # verified in a throw-away Triton on the local staging
        assert (first.repository, first.versions_on_disk, first.served_by) == (uri, [1], None)
        repository = model_repository(rt)
        state = start_server(repository.triton_path, server_dir(rt), load=list(MODELS))
        client = LMClient(state.grpc_url, timeout=60)
        try:
            assert state.repository.startswith("s3://http://127.0.0.1:")  # the server reads the bucket itself
            for text in PROMPTS[:2]:
                served, expected = greedy(client, ws, 1, text)
                assert served == expected
            second = publish_model(rt, "2", actor="test")
            assert second.served_by == state.grpc_url and second.versions_on_disk == [1, 2]
            served, expected = greedy(client, ws, 2, PROMPTS[1])
            assert served == expected and expected != greedy(client, ws, 1, PROMPTS[1])[1]
            again = publish_model(rt, "2", actor="test")
            assert again.reused and again.verification == second.verification
            back = rollback_serving(rt, actor="test", reason="s3 rollback")
            assert (back["triton_version"], back["from_version"]) == (1, 2)
            served, expected = greedy(client, ws, 1, PROMPTS[1])
            assert served == expected
        finally:
            client.close()
            stop_server(server_dir(rt))
        assert repository.published_versions() == [1, 2]
        with rt.metadata.session() as session:
            deployments = repo.list_deployments(session)
            assert [d.triton_version for d in reversed(deployments)] == [1, 2, 1]
            assert {d.repository_uri for d in deployments} == {uri}
    finally:
        rt.metadata.dispose()
