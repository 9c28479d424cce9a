"""Every .tf file parses, every module and local chart is complete, the one platform configuration pins its
versions and keeps state remotely, and every environment is only variable files over it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import hcl2
import pytest
import yaml
from tf_invariants import Module

ROOT = Path(__file__).resolve().parents[2] / "infra" / "terraform"
TF_FILES = sorted(p for p in ROOT.rglob("*.tf") if ".terraform" not in p.parts)
MODULE_DIRS = sorted(p for p in (ROOT / "modules").iterdir() if p.is_dir())
PLATFORM = ROOT / "platform"
ENVIRONMENTS = ("dev", "prod")
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "README.md")
PROVIDERS = ("aws", "helm", "kubernetes", "random", "tls")


def test_the_configuration_is_there() -> None:
    assert len(TF_FILES) > 40 and len(MODULE_DIRS) >= 9


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_file_parses_with_python_hcl2(path: Path) -> None:
    with path.open() as handle:
        parsed = hcl2.load(handle)
    assert parsed, f"{path} parsed to nothing"


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda p: p.name)
def test_module_has_its_files(module_dir: Path) -> None:
    missing = [name for name in MODULE_FILES if not (module_dir / name).is_file()]
    assert not missing, f"{module_dir.name} lacks {', '.join(missing)}"
    readme = (module_dir / "README.md").read_text()
    assert readme.startswith(f"# {module_dir.name}"), f"{module_dir.name}/README.md must start with its title"


def test_platform_pins_terraform_and_providers() -> None:
    versions = hcl2.loads((PLATFORM / "versions.tf").read_text())
    terraform = versions["terraform"][0]
    assert re.fullmatch(r'">= 1\.1\d, < 2\.0"', terraform["required_version"]), terraform["required_version"]
    providers = terraform["required_providers"][0]
    for name in PROVIDERS:
        version = providers[name]["version"]
        assert re.fullmatch(r'"~> \d+\.\d+"', version), f"provider {name} is not pinned (~> X.Y): {version}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_keeps_state_in_s3_with_locking(env: str) -> None:
    env_dir = ROOT / "environments" / env
    backend = hcl2.loads((PLATFORM / "backend.tf").read_text())["terraform"][0]["backend"][0]
    assert list(backend) == ['"s3"'], "the platform must keep its state in the S3 backend"
    example = hcl2.loads((env_dir / "backend.hcl.example").read_text())
    assert example["use_lockfile"] is True and example["encrypt"] is True
    assert f"lmforge/{env}/" in example["key"]


def test_platform_outputs_what_the_app_needs(modules: dict[Path, Module]) -> None:
    outputs = dict(modules[PLATFORM].named("output"))
    for name in ("lmforge_database_url", "database_secret_arn", "lmforge_artifact_uri", "triton_url"):
        assert name in outputs, f"the platform does not output {name}"
    assert "postgresql+psycopg://" in (ROOT / "modules" / "database" / "outputs.tf").read_text()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_is_variable_files_only_and_sets_every_environment_variable(env: str,
                                                                              modules: dict[Path, Module]) -> None:
    """No module call is written per environment: an environment folder holds variable files, and its
    environment.tfvars sets exactly the platform variables that have no default and are not account-specific."""
    env_dir = ROOT / "environments" / env
    assert not list(env_dir.glob("*.tf")), f"{env} holds Terraform code; environments are variable files only"
    values = {k: v for k, v in hcl2.loads((env_dir / "environment.tfvars").read_text()).items() if not k.startswith("__")}
    account = {k for k in hcl2.loads((env_dir / "terraform.tfvars.example").read_text()) if not k.startswith("__")}
    variables = dict(modules[PLATFORM].named("variable"))
    required = {name for name, body in variables.items() if "default" not in body}
    assert set(values) | set(account) <= set(variables), f"{env} sets undeclared variables"
    assert required <= set(values) | set(account), f"{env} leaves {sorted(required - set(values) - set(account))} unset"
    assert values["environment"].strip('"') == env


def test_no_output_carries_a_password(modules: dict[Path, Module]) -> None:
    for module in modules.values():
        for name, body in module.named("output"):
            value = str(body.get("value", ""))
            assert not re.search(r"random_password\.|\.password\b|\.result\b", value), (
                f"{module.name}: output {name} exposes a secret value: {value}"
            )


DASHBOARDS = ROOT / "modules" / "monitoring" / "dashboards"
RECORDING = ROOT.parents[1] / "tasks" / "train" / "recording.py"


def recorded_step_metrics() -> set[str]:
    """STEP_METRICS of the training stage: the metric names written to step_metrics."""
    for node in ast.walk(ast.parse(RECORDING.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STEP_METRICS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{RECORDING} defines no STEP_METRICS")


def test_grafana_dashboards_are_valid_json_with_the_expected_metrics() -> None:
    triton = json.loads((DASHBOARDS / "triton.json").read_text())
    training = json.loads((DASHBOARDS / "training.json").read_text())
    triton_queries = " ".join(t["expr"] for p in triton["panels"] for t in p["targets"])
    for metric in (
        "nv_inference_request_success",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
    ):
        assert metric in triton_queries, f"Triton dashboard does not chart {metric}"
    training_sql = " ".join(t["rawSql"] for p in training["panels"] for t in p["targets"])
    charted = set(re.findall(r"m\.name = '(\w+)'", training_sql))
    assert {"loss", "tokens_per_s", "mfu"} <= charted
    assert charted <= recorded_step_metrics(), "the training dashboard charts a metric the training loop never records"
    assert len({triton["uid"], training["uid"]}) == 2


LOCAL_CHARTS = sorted(p.parent for p in ROOT.rglob("Chart.yaml"))


@pytest.mark.parametrize("chart", LOCAL_CHARTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_chart_templates_use_declared_values(chart: Path) -> None:
    """Every .Values.<key> a template reads is declared (and documented) in the chart's values.yaml."""
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2" and metadata["version"]
    declared = set(yaml.safe_load((chart / "values.yaml").read_text()))
    used = {
        key for tpl in (chart / "templates").glob("*.yaml") for key in re.findall(r"\.Values\.(\w+)", tpl.read_text())
    }
    assert used, f"{chart} templates read no values"
    assert used <= declared, f"{chart.name}: templates read undeclared values {sorted(used - declared)}"
