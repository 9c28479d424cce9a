"""The invariants of issue 5 hold over infra/terraform: no public bucket or database, encryption
everywhere, no wildcard IAM, typed and described variables, consistent module calls, and the
differences between dev and prod that matter."""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest
from tf_invariants import MODULE_RULES, Module, check_module_calls, find_statements, first

ROOT = Path(__file__).resolve().parents[2] / "infra" / "terraform"
MODULE_DIRS = sorted({p.parent for p in ROOT.rglob("*.tf") if ".terraform" not in p.parts})


@pytest.mark.parametrize("rule", MODULE_RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_rule_holds(rule, module_dir: Path, modules: dict[Path, Module]) -> None:
    violations = rule(modules[module_dir])
    assert not violations, "\n".join(map(str, violations))


def test_iam_check_sees_the_policies(modules: dict[Path, Module]) -> None:
    """The wildcard rule reads the real statements (a parse change must not make it see nothing)."""
    counts = {
        name: len(list(find_statements(modules[ROOT / "modules" / name].blocks, name)))
        for name in ("iam", "kms-key", "s3-bucket", "cluster")
    }
    assert counts["iam"] >= 20 and counts["kms-key"] >= 3 and counts["s3-bucket"] >= 4 and counts["cluster"] >= 3, (
        counts
    )


def test_module_calls_match_module_variables(modules: dict[Path, Module]) -> None:
    violations = check_module_calls(modules)
    assert not violations, "\n".join(map(str, violations))


def module_call(modules: dict[Path, Module], name: str) -> dict:
    return dict(modules[ROOT / "platform"].named("module"))[name]


def environment(env: str) -> dict:
    """The values an environment gives the platform (its environment.tfvars)."""
    return hcl2.loads((ROOT / "environments" / env / "environment.tfvars").read_text())


def test_platform_composes_every_module(modules: dict[Path, Module]) -> None:
    called = {Path(body["source"]).name for _, body in modules[ROOT / "platform"].named("module")}
    expected = {
        "network",
        "storage",
        "database",
        "cluster",
        "iam",
        "addons",
        "serving",
        "orchestration",
        "dashboard",
        "monitoring",
    }
    assert expected <= called, f"the platform does not call {sorted(expected - called)}"


def test_platform_passes_the_environment_sizes_to_the_modules(modules: dict[Path, Module]) -> None:
    """What the environment files size is what the modules get (no literal left in a module call)."""
    assert module_call(modules, "database")["multi_az"] == "${var.database.multi_az}"
    assert module_call(modules, "cluster")["gpu_node_group"] == "${var.gpu_node_group}"
    assert module_call(modules, "network")["single_nat_gateway"] == "${var.single_nat_gateway}"
    assert module_call(modules, "serving")["gpu"] == "${var.triton.gpu}"


def test_prod_database_is_multi_az_with_longer_backups() -> None:
    prod, dev = environment("prod")["database"], environment("dev")["database"]
    assert prod["multi_az"] is True
    assert dev["multi_az"] is False
    assert prod["backup_retention_days"] > dev["backup_retention_days"] >= 7


def test_prod_is_sized_above_dev() -> None:
    prod, dev = environment("prod"), environment("dev")
    for group in ("cpu_node_group", "gpu_node_group"):
        assert prod[group]["max_size"] > dev[group]["max_size"], group
    assert dev["gpu_node_group"]["min_size"] == 0, "dev must release its GPU nodes when idle"
    assert prod["single_nat_gateway"] is False
    assert prod["triton"]["gpu"] is True


def test_cluster_endpoint_is_private_by_default(modules: dict[Path, Module]) -> None:
    """The API endpoint turns public only when admin networks are listed, and none are by default."""
    call = module_call(modules, "cluster")
    assert call["endpoint_public_access"] == "${length(var.cluster_admin_cidrs) > 0}"
    assert call["public_access_cidrs"] == "${var.cluster_admin_cidrs}"
    env_variables = dict(modules[ROOT / "platform"].named("variable"))
    assert env_variables["cluster_admin_cidrs"]["default"] == []
    module_variables = dict(modules[ROOT / "modules" / "cluster"].named("variable"))
    assert module_variables["endpoint_public_access"]["default"] is False


def test_database_lives_in_private_subnets_with_deletion_protection(modules: dict[Path, Module]) -> None:
    database = modules[ROOT / "modules" / "database"]
    ((_, instance),) = database.of_type("aws_db_instance")
    assert instance["deletion_protection"] is True
    assert instance["manage_master_user_password"] is True, "the password must be generated into Secrets Manager"
    assert instance["backup_retention_period"] == "${var.backup_retention_days}"
    ((_, subnets),) = database.of_type("aws_db_subnet_group")
    assert subnets["subnet_ids"] == "${var.private_subnet_ids}"
    assert module_call(modules, "database")["private_subnet_ids"] == "${module.network.private_subnet_ids}"


# --- least privilege per workload -----------------------------------------------------------------


def workload_statements(modules: dict[Path, Module]) -> dict[str, list[dict]]:
    """Per workload of the iam module, the statements it is granted, resolved from the locals it
    references (local.storage.<name>, local.read_database_secret, local.<x>_statements)."""
    iam = modules[ROOT / "modules" / "iam"]
    local_values = {k: v for entry in iam.blocks["locals"] for k, v in entry.items()}

    def resolve(reference: str) -> list[dict]:
        if reference.startswith("storage."):
            return [local_values["storage"][reference.removeprefix("storage.")]]
        return local_values[reference]

    return {
        name: [
            statement
            for reference in re.findall(r"local\.([\w.]+)", str(spec["statements"]))
            for statement in resolve(reference)
        ]
        for name, spec in local_values["workloads"].items()
    }


def granted(statements: list[dict], action: str | None = None) -> set[str]:
    """Resources the statements grant (those granting `action`, when given)."""
    return {r for s in statements if action is None or action in s["actions"] for r in s["resources"]}


def test_every_workload_resolves_to_statements(modules: dict[Path, Module]) -> None:
    for name, statements in workload_statements(modules).items():
        assert statements and all("actions" in s and "resources" in s for s in statements), name


def test_triton_reads_only_the_model_repository(modules: dict[Path, Module]) -> None:
    triton = workload_statements(modules)["triton"]
    assert granted(triton) == {
        "${var.model_repository_bucket_arn}",
        "${var.model_repository_bucket_arn}/*",
        "${var.storage_kms_key_arn}",
    }
    assert {a for s in triton for a in s["actions"]} == {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "kms:Decrypt",
    }


def test_training_reads_data_and_writes_only_artifacts(modules: dict[Path, Module]) -> None:
    training = workload_statements(modules)["training"]
    assert granted(training, "s3:PutObject") == {"${var.artifacts_bucket_arn}/*"}
    assert "${var.raw_data_bucket_arn}/*" in granted(training, "s3:GetObject")
    assert not any("model_repository" in r for r in granted(training))


def test_dashboard_reads_only_the_database_secret(modules: dict[Path, Module]) -> None:
    dashboard = workload_statements(modules)["database-reader-dashboard"]
    assert granted(dashboard) == {"${var.database_secret_arn}", "${var.database_kms_key_arn}"}
    assert {a for s in dashboard for a in s["actions"]} == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "kms:Decrypt",
    }


def test_each_role_trusts_one_service_account(modules: dict[Path, Module]) -> None:
    iam = modules[ROOT / "modules" / "iam"]
    ((_, assume),) = [(n, b) for n, b in iam.of_type("aws_iam_policy_document", kind="data") if n == "assume"]
    conditions = {c["variable"]: c for c in first(assume["statement"])["condition"]}
    assert conditions["${var.oidc_issuer}:sub"]["test"] == "StringEquals"
    assert conditions["${var.oidc_issuer}:sub"]["values"] == [
        "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
    ]
    assert conditions["${var.oidc_issuer}:aud"]["values"] == ["sts.amazonaws.com"]
