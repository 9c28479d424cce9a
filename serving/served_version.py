"""Which version the running Triton serves: what the server reports READY, never what the configs say.

Publishing rewrites the configs' version policy before the server has loaded the new version (and a
failed switch can leave them pointing at a version the server never loaded), so anything choosing "the
served version" asks the server: the newest version of ``generate`` that is READY. While a switch runs,
that is the old version until the new one is loaded, then the new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.tokenizer import TokenizerRef
from serving.client import GENERATE, ServingError
from serving.onnx_files import read_manifest
from serving.triton_config import MODELS, TOKENIZER, ServingOptions
from serving.triton_models.common import load_version_tokenizer

INDEX_TIMEOUT_S = 5.0


class BackendUnavailable(ServingError):
    """Triton cannot be reached, or serves no ready version of the model (HTTP 503 at the endpoint)."""


def ready_versions(index: dict[str, Any], model: str) -> list[int]:
    """The versions of ``model`` that a repository index (Triton's JSON form) reports READY, ascending."""
    return sorted(int(m["version"]) for m in index.get("models", [])
                  if m.get("name") == model and m.get("state") == "READY" and str(m.get("version", "")).isdigit())


def served_by_model(grpc_url: str, timeout: float = INDEX_TIMEOUT_S) -> dict[str, list[int]]:
    """Each lmforge model's READY versions on the server at ``grpc_url`` (BackendUnavailable if unreachable)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=timeout)
    except Exception as exc:
        raise BackendUnavailable(f"Triton at {grpc_url} is unreachable: {exc}") from exc
    finally:
        client.close()
    return {model: ready_versions(index, model) for model in MODELS}


@dataclass(frozen=True)
class ServedVersion:
    """A version Triton serves, with what the endpoint checks a request against before sending it."""

    version: int
    tokenizer: TokenizerRef
    context: int  # the network's context: prompt tokens must be fewer
    max_tokens_limit: int  # the generate model's limit on max_tokens


@dataclass
class ServedVersions:
    """The newest READY version of ``generate`` on the server, its tokenizer and limits read once per version
    (the tokenizer from the local repository folder, the limit from the config Triton loaded)."""

    grpc_url: str
    repository: Path
    _known: dict[int, ServedVersion] = field(default_factory=dict)

    async def current(self) -> ServedVersion:
        import tritonclient.grpc.aio as aioclient

        client = aioclient.InferenceServerClient(self.grpc_url)
        try:
            index = await self._call(client.get_model_repository_index(as_json=True, client_timeout=INDEX_TIMEOUT_S))
            ready = ready_versions(index, GENERATE)
            if not ready:
                raise BackendUnavailable(f"Triton at {self.grpc_url} serves no ready version of {GENERATE}")
            version = ready[-1]
            if version not in self._known:
                config = await self._call(client.get_model_config(GENERATE, str(version), as_json=True,
                                                                  client_timeout=INDEX_TIMEOUT_S))
                self._known[version] = await asyncio.to_thread(self._load, version, config)
            return self._known[version]
        finally:
            await client.close()

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except Exception as exc:
            raise BackendUnavailable(f"Triton at {self.grpc_url} is unreachable or reloading: {exc}") from exc

    def _load(self, version: int, config: dict[str, Any]) -> ServedVersion:
        parameters = config.get("config", config).get("parameters", {})
        limit = int(parameters.get("max_tokens_limit", {}).get("string_value") or ServingOptions.max_tokens_limit)
        context = read_manifest(self.repository / GENERATE / str(version))["model"]["context"]
        return ServedVersion(version, load_version_tokenizer(self.repository / TOKENIZER / str(version)), context,
                             limit)
