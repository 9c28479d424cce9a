"""Invariants of lmforge's Terraform code, checked on HCL parsed by python-hcl2.

No terraform binary exists here, so these checks read the configuration itself. A module is one
directory of ``.tf`` files; each ``check_*`` function takes parsed modules and returns the
violations it finds (empty when the rule holds). The tests run them over ``infra/terraform`` and
over small deliberately-bad snippets, so each rule is shown to catch what it is meant to catch.

Values that Terraform computes (``var.x``, ``module.y.z``) stay strings like ``"${var.x}"``: a
rule that needs a literal treats such a value as not proven, except where noted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

PARSE_OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)
PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}
PUBLIC_ACCESS_FLAGS = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
MODULE_META_ARGUMENTS = {"source", "version", "providers", "depends_on", "for_each", "count"}
READ_ONLY_ACTION = re.compile(r"^[a-z0-9-]+:(Describe|List|Get)[A-Za-z]*$")
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


@dataclass(frozen=True)
class Violation:
    module: str
    where: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.module}: {self.where}: {self.rule}: {self.detail}"


@dataclass
class Module:
    """The merged content of one directory of .tf files."""

    path: Path
    name: str
    blocks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    text: str = ""

    def resources(self, kind: str = "resource") -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(type, name, body) of every resource (or data source with kind="data")."""
        for entry in self.blocks.get(kind, []):
            for rtype, named in entry.items():
                for rname, body in named.items():
                    yield rtype, rname, body

    def of_type(self, rtype: str, kind: str = "resource") -> list[tuple[str, dict[str, Any]]]:
        return [(name, body) for t, name, body in self.resources(kind) if t == rtype]

    def named(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, body) of every variable, output or module block."""
        for entry in self.blocks.get(kind, []):
            yield from entry.items()

    def block_text(self, rtype: str, rname: str) -> str:
        """Source text of one top-level resource block (terraform fmt style: it ends at a '}' in column 0)."""
        match = re.search(
            rf'^resource\s+"{re.escape(rtype)}"\s+"{re.escape(rname)}"\s*{{.*?^}}', self.text, re.M | re.S
        )
        return match.group(0) if match else ""


def parse_text(text: str) -> dict[str, list[dict[str, Any]]]:
    return hcl2.loads(text, serialization_options=PARSE_OPTIONS)


def load_module(path: Path, root: Path | None = None) -> Module:
    """Parse every .tf file of one directory into a Module; a parse error names the file."""
    module = Module(path=path, name=str(path.relative_to(root)) if root else path.name)
    texts = []
    for tf in sorted(path.glob("*.tf")):
        text = tf.read_text()
        texts.append(text)
        try:
            parsed = parse_text(text)
        except Exception as exc:  # hcl2 raises lark errors of several types
            raise ValueError(f"{tf}: does not parse as HCL: {exc}") from exc
        for kind, entries in parsed.items():
            module.blocks.setdefault(kind, []).extend(entries)
    module.text = "\n".join(texts)
    return module


def load_tree(root: Path) -> dict[Path, Module]:
    """Every directory under root that holds .tf files, parsed."""
    dirs = sorted({tf.parent for tf in root.rglob("*.tf") if ".terraform" not in tf.parts})
    return {d: load_module(d, root) for d in dirs}


def is_true(value: Any) -> bool:
    return value is True


def references(value: Any, rtype: str, rname: str) -> bool:
    """Whether a computed value refers to resource rtype.rname (e.g. '${aws_s3_bucket.logs.id}')."""
    return isinstance(value, str) and re.search(rf"\b{re.escape(rtype)}\.{re.escape(rname)}\b", value) is not None


def first(block: Any) -> dict[str, Any]:
    """The body of a nested block (hcl2 gives a list of bodies), or {} when absent."""
    if isinstance(block, list) and block and isinstance(block[0], dict):
        return block[0]
    return block if isinstance(block, dict) else {}


# --- rules -------------------------------------------------------------------------------------


def check_variables(module: Module) -> list[Violation]:
    """Every variable has a type and a non-empty description."""
    found = []
    for name, body in module.named("variable"):
        if "type" not in body:
            found.append(Violation(module.name, f"variable {name}", "variable-typed", "has no type"))
        if not str(body.get("description", "")).strip():
            found.append(Violation(module.name, f"variable {name}", "variable-described", "has no description"))
    return found


def check_no_public_data(module: Module) -> list[Violation]:
    """No bucket or database is reachable from the internet."""
    found = []
    for rtype in ("aws_s3_bucket", "aws_s3_bucket_acl"):
        for name, body in module.of_type(rtype):
            if body.get("acl") in PUBLIC_ACLS:
                found.append(Violation(module.name, f"{rtype}.{name}", "no-public-bucket", f"acl = {body['acl']}"))
    blocks = module.of_type("aws_s3_bucket_public_access_block")
    for name, body in blocks:
        lax = [flag for flag in PUBLIC_ACCESS_FLAGS if not is_true(body.get(flag))]
        if lax:
            found.append(
                Violation(
                    module.name,
                    f"aws_s3_bucket_public_access_block.{name}",
                    "no-public-bucket",
                    f"not set to true: {', '.join(lax)}",
                )
            )
    for name, _ in module.of_type("aws_s3_bucket"):
        if not any(references(body.get("bucket"), "aws_s3_bucket", name) for _, body in blocks):
            found.append(
                Violation(
                    module.name,
                    f"aws_s3_bucket.{name}",
                    "no-public-bucket",
                    "no aws_s3_bucket_public_access_block for this bucket",
                )
            )
    for rtype in ("aws_db_instance", "aws_rds_cluster_instance"):
        for name, body in module.of_type(rtype):
            if body.get("publicly_accessible") is not False:
                found.append(
                    Violation(
                        module.name,
                        f"{rtype}.{name}",
                        "no-public-database",
                        f"publicly_accessible is {body.get('publicly_accessible')!r}, not false",
                    )
                )
    for name, body in module.of_type("aws_eks_cluster"):
        if first(body.get("vpc_config")).get("endpoint_public_access") is True:
            found.append(
                Violation(
                    module.name,
                    f"aws_eks_cluster.{name}",
                    "private-cluster-endpoint",
                    "endpoint_public_access is hard-wired to true",
                )
            )
    return found


def check_encryption(module: Module) -> list[Violation]:
    """Data at rest is encrypted, with a customer managed KMS key wherever AWS supports one."""
    found = []
    sse = module.of_type("aws_s3_bucket_server_side_encryption_configuration")
    for name, _ in module.of_type("aws_s3_bucket"):
        configs = [body for _, body in sse if references(body.get("bucket"), "aws_s3_bucket", name)]
        if not configs:
            found.append(Violation(module.name, f"aws_s3_bucket.{name}", "encrypted", "no server-side encryption"))
            continue
        default = first(first(configs[0].get("rule")).get("apply_server_side_encryption_by_default"))
        algorithm = default.get("sse_algorithm")
        kms_exempt = "checkov:skip=CKV_AWS_145" in module.block_text("aws_s3_bucket", name)
        if algorithm == "aws:kms" and not default.get("kms_master_key_id"):
            found.append(Violation(module.name, f"aws_s3_bucket.{name}", "encrypted", "SSE-KMS without a customer key"))
        elif algorithm != "aws:kms" and not (algorithm == "AES256" and kms_exempt):
            found.append(
                Violation(
                    module.name,
                    f"aws_s3_bucket.{name}",
                    "encrypted",
                    f"sse_algorithm {algorithm!r} (SSE-S3 only for a justified access-log bucket)",
                )
            )
    for name, body in module.of_type("aws_db_instance"):
        if not is_true(body.get("storage_encrypted")) or not body.get("kms_key_id"):
            found.append(
                Violation(
                    module.name,
                    f"aws_db_instance.{name}",
                    "encrypted",
                    "needs storage_encrypted = true and a kms_key_id",
                )
            )
    for name, body in module.of_type("aws_eks_cluster"):
        if "secrets" not in first(body.get("encryption_config")).get("resources", []):
            found.append(
                Violation(module.name, f"aws_eks_cluster.{name}", "encrypted", "secrets not envelope-encrypted")
            )
    for name, body in module.of_type("aws_cloudwatch_log_group"):
        if not body.get("kms_key_id"):
            found.append(Violation(module.name, f"aws_cloudwatch_log_group.{name}", "encrypted", "no kms_key_id"))
    for name, body in module.of_type("aws_launch_template"):
        for mapping in body.get("block_device_mappings", []):
            if not is_true(first(mapping.get("ebs")).get("encrypted")):
                found.append(
                    Violation(module.name, f"aws_launch_template.{name}", "encrypted", "unencrypted EBS volume")
                )
    for name, body in module.of_type("aws_kms_key"):
        if not is_true(body.get("enable_key_rotation")):
            found.append(Violation(module.name, f"aws_kms_key.{name}", "encrypted", "key rotation not enabled"))
    for name, body in module.of_type("aws_ecr_repository"):
        if first(body.get("encryption_configuration")).get("encryption_type") != "KMS":
            found.append(Violation(module.name, f"aws_ecr_repository.{name}", "encrypted", "not KMS-encrypted"))
    for name, body in module.of_type("aws_secretsmanager_secret"):
        if not body.get("kms_key_id"):
            found.append(Violation(module.name, f"aws_secretsmanager_secret.{name}", "encrypted", "no kms_key_id"))
    for name, body in module.of_type("kubernetes_storage_class_v1"):
        if (
            body.get("storage_provisioner") == "ebs.csi.aws.com"
            and body.get("parameters", {}).get("encrypted") != "true"
        ):
            found.append(
                Violation(module.name, f"kubernetes_storage_class_v1.{name}", "encrypted", "EBS volumes unencrypted")
            )
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def find_statements(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in a parsed value: HCL statement blocks and policy objects (Action/Resource)
    in locals or jsonencode'd literals, and JSON policy documents written as strings."""
    if isinstance(node, dict):
        if ("actions" in node or "Action" in node) and (
            "resources" in node or "Resource" in node or "principals" in node or "Principal" in node
        ):
            yield where, node
        for key, value in node.items():
            yield from find_statements(value, f"{where}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from find_statements(item, where)
    elif isinstance(node, str) and "Statement" in node:
        # A literal JSON policy; from a heredoc it arrives with HCL's escapes (\\" for ").
        for text in (node, node.encode().decode("unicode_escape")):
            try:
                document = json.loads(text)
            except ValueError:
                continue
            yield from find_statements(document, where)
            return


def statement_violations(where: str, statement: dict[str, Any]) -> list[str]:
    """Why one IAM statement is too broad; empty when it is scoped."""
    effect = statement.get("effect", statement.get("Effect", "Allow"))
    if effect == "Deny":
        return []
    actions = [a for a in _as_list(statement.get("actions", statement.get("Action", []))) if isinstance(a, str)]
    resources = _as_list(statement.get("resources", statement.get("Resource", [])))
    identity_policy = not ("principals" in statement or "Principal" in statement)
    problems = []
    if "*" in actions:
        problems.append("allows every action ('*')")
    service_wide = [a for a in actions if a.endswith(":*")]
    if service_wide and "*" in resources:
        problems.append(f"allows {', '.join(service_wide)} on every resource")
    if identity_policy and "*" in resources:
        broad = [a for a in actions if not READ_ONLY_ACTION.match(a)]
        if broad:
            problems.append(f"grants {', '.join(broad)} on '*' (only Describe/List/Get may use '*')")
    return problems


def check_iam(module: Module) -> list[Violation]:
    """No wildcard actions, no service-wide actions on every resource, and in identity policies '*'
    resources only for read-only actions that AWS cannot scope."""
    found = []
    for kind, blocks in module.blocks.items():
        for where, statement in find_statements(blocks, kind):
            for problem in statement_violations(where, statement):
                found.append(Violation(module.name, where, "no-wildcard-iam", problem))
    return found


def check_module_calls(modules: dict[Path, Module]) -> list[Violation]:
    """Every local module that is called exists, declares each argument it is given, and is given
    each of its variables that has no default."""
    found = []
    for path, module in modules.items():
        for call, body in module.named("module"):
            source = body.get("source", "")
            if not source.startswith(("./", "../")):
                continue
            target = (path / source).resolve()
            callee = next((m for p, m in modules.items() if p.resolve() == target), None)
            if callee is None:
                found.append(Violation(module.name, f"module.{call}", "module-exists", f"{source} holds no module"))
                continue
            declared = dict(callee.named("variable"))
            given = set(body) - MODULE_META_ARGUMENTS
            for argument in sorted(given - set(declared)):
                found.append(
                    Violation(
                        module.name, f"module.{call}", "module-arguments", f"{source} declares no variable {argument!r}"
                    )
                )
            for variable in sorted(set(declared) - given):
                if "default" not in declared[variable]:
                    found.append(
                        Violation(
                            module.name,
                            f"module.{call}",
                            "module-arguments",
                            f"required variable {variable!r} of {source} is not given",
                        )
                    )
    return found


def check_skips_justified(module: Module) -> list[Violation]:
    """Every checkov skip carries a reason of at least a few words."""
    found = []
    for match in SKIP_COMMENT.finditer(module.text):
        reason = (match.group(2) or "").strip()
        if len(reason.split()) < 5:
            found.append(
                Violation(
                    module.name,
                    f"checkov:skip={match.group(1)}",
                    "skip-justified",
                    f"reason {reason!r} is missing or too short",
                )
            )
    return found


MODULE_RULES = (check_variables, check_no_public_data, check_encryption, check_iam, check_skips_justified)
