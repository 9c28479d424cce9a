"""prefect.yaml against the code and the infrastructure: every entrypoint is a flow, the schedule is the
settings' cron, and the Kubernetes deployments use the pools and job variables that
infra/terraform/modules/orchestration defines."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import hcl2
import yaml
from prefect import Flow

from lmforge_core.config.orchestration import OrchestrationConfig

PROJECT = Path(__file__).resolve().parents[2]
MODULE = PROJECT / "infra" / "terraform" / "modules" / "orchestration" / "main.tf"


def _deployments() -> list[dict]:
    return yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]


def test_every_deployment_names_a_flow_of_flows() -> None:
    names = []
    for deployment in _deployments():
        path, _, attr = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, attr), Flow), deployment["entrypoint"]
        names.append(deployment["name"])
    assert {"nightly", "ingest", "evaluate", "publish", "nightly-k8s", "train-gpu"} <= set(names)


def test_the_nightly_schedule_comes_from_the_settings_and_runs_one_night_at_a_time() -> None:
    nightly = next(d for d in _deployments() if d["name"] == "nightly")
    (schedule,) = nightly["schedules"]
    assert schedule["cron"] == "{{ $LMFORGE_ORCHESTRATION__NIGHTLY_CRON }}"
    assert schedule["timezone"] == "{{ $LMFORGE_ORCHESTRATION__TIMEZONE }}"
    assert OrchestrationConfig().nightly_cron == "0 2 * * *"
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert nightly["work_pool"]["name"] == OrchestrationConfig().work_pool


def test_kubernetes_deployments_use_the_terraform_pools_and_their_job_variables() -> None:
    local = hcl2.loads(MODULE.read_text())["locals"][0]
    pools = set(local["work_pools"])
    placeholders = set(re.findall(r"\{\{ (\w+) \}\}", str(local["job_templates"])))
    remote = [d for d in _deployments() if d["work_pool"]["name"] != OrchestrationConfig().work_pool]
    assert {d["work_pool"]["name"] for d in remote} == {"lmforge-gpu"} and pools >= {"lmforge-gpu", "lmforge-cpu"}
    for deployment in remote:
        variables = deployment["work_pool"]["job_variables"]
        assert set(variables) <= placeholders, set(variables) - placeholders
        assert variables["env"]["LMFORGE_TRAIN__LAUNCHER"] == "deepspeed"
