"""What the metadata store records as served against what Triton serves, and the repair of a difference.

The store's serving alias is the record of what should serve (every move of it is audited); the running
server is what does. They can part: a switch that failed half-way, a server switched by hand, a store
write lost after a switch. :func:`serving_status` shows both and every difference; :func:`reconcile`
makes the server (or, with none running, the repository's configs) serve the recorded version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lmforge_core.metadata import review_repository as reviews
from lmforge_core.runtime import Runtime
from serving.client import ServingError
from serving.served_version import BackendUnavailable, served_by_model
from serving.triton_config import GENERATE
from serving.triton_repository import RepositoryError
from serving.verify import switch_version
from tasks.publish.publish import PublishError, model_repository, recorded_number, serving_grpc_url


@dataclass
class ServingStatus:
    recorded: int | None  # the Triton version the store's serving alias names (None: nothing recorded)
    server: str | None  # gRPC URL of the server asked (None: none configured or running)
    triton: dict[str, list[int]] | None  # READY versions per model (None: no server, or unreachable)
    differences: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"agree": self.agree}


def _differences(recorded: int | None, triton: dict[str, list[int]] | None) -> list[str]:
    if triton is None:
        return []
    if recorded is None:
        return [f"the store records nothing as served, but Triton serves {m} versions {v}"
                for m, v in triton.items() if v]
    return [f"the store records version {recorded} as served, but Triton's {m} has {v or 'no version'} ready"
            for m, v in triton.items() if v != [recorded]]


def serving_status(runtime: Runtime) -> ServingStatus:
    """The recorded served version, what the server reports ready, and each difference between them."""
    recorded, url = recorded_number(runtime), serving_grpc_url(runtime)
    if url is None:
        return ServingStatus(recorded, None, None)
    try:
        triton = served_by_model(url)
    except BackendUnavailable as exc:
        return ServingStatus(recorded, url, None, [str(exc)])
    return ServingStatus(recorded, url, triton, _differences(recorded, triton))


def reconcile(runtime: Runtime, *, actor: str) -> dict[str, Any]:
    """Make Triton serve what the store records (audited); returns the status before and after."""
    before = serving_status(runtime)
    if before.recorded is None:
        raise PublishError("the store records no served version; publish one with `lmforge serve publish`")
    if before.agree and before.triton is not None:
        return {"before": before.to_dict(), "after": before.to_dict(), "changed": False}
    repository = model_repository(runtime)
    try:
        if before.triton is None:  # no server to ask: the configs serve the recorded version at its next start
            repository.serve_versions([before.recorded])
        else:
            ready = before.triton.get(GENERATE) or []
            old = ready[-1] if ready and ready[-1] in repository.published_versions() else None
            switch_version(repository, before.server, old, before.recorded)  # type: ignore[arg-type]
    except (ServingError, RepositoryError) as exc:
        raise PublishError(f"reconciling to version {before.recorded} failed: {exc}") from exc
    after = serving_status(runtime)
    with runtime.metadata.session() as session:
        reviews.record_audit(session, actor=actor, action="serve.reconcile", target=f"v{before.recorded}",
                             source="publish", details={"before": before.to_dict(), "after": after.to_dict()})
    return {"before": before.to_dict(), "after": after.to_dict(), "changed": True}
