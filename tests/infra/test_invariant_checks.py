"""The invariant checks catch what they are meant to: each rule is run on a deliberately bad
snippet (it must report it) and on the corrected snippet (it must not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_invariants import (
    Module,
    check_encryption,
    check_iam,
    check_module_calls,
    check_no_public_data,
    check_skips_justified,
    check_variables,
    load_module,
    load_tree,
)


def module_from(tmp_path: Path, text: str, name: str = "snippet") -> Module:
    directory = tmp_path / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.tf").write_text(text)
    return load_module(directory)


def rules_hit(violations) -> list[str]:
    return sorted(f"{v.where}: {v.rule}" for v in violations)


BAD_VARIABLES = """
variable "untyped" {
  description = "Has a description but no type."
}
variable "undescribed" {
  type = string
}
"""
GOOD_VARIABLES = """
variable "typed" {
  type        = string
  description = "Both."
}
"""


def test_untyped_and_undescribed_variables_are_reported(tmp_path: Path) -> None:
    assert rules_hit(check_variables(module_from(tmp_path, BAD_VARIABLES))) == [
        "variable undescribed: variable-described",
        "variable untyped: variable-typed",
    ]
    assert check_variables(module_from(tmp_path, GOOD_VARIABLES, "good")) == []


PUBLIC_BUCKET = """
resource "aws_s3_bucket" "data" {
  bucket = "lmforge-data"
}
resource "aws_s3_bucket_acl" "data" {
  bucket = aws_s3_bucket.data.id
  acl    = "public-read"
}
resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = false
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = var.restrict
}
resource "aws_s3_bucket" "unguarded" {
  bucket = "lmforge-other"
}
resource "aws_db_instance" "db" {
  publicly_accessible = true
}
resource "aws_eks_cluster" "this" {
  vpc_config {
    endpoint_public_access = true
  }
}
"""
PRIVATE_BUCKET = """
resource "aws_s3_bucket" "data" {
  bucket = "lmforge-data"
}
resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}
resource "aws_db_instance" "db" {
  publicly_accessible = false
}
resource "aws_eks_cluster" "this" {
  vpc_config {
    endpoint_public_access = var.endpoint_public_access
  }
}
"""


def test_public_buckets_databases_and_endpoints_are_reported(tmp_path: Path) -> None:
    hits = rules_hit(check_no_public_data(module_from(tmp_path, PUBLIC_BUCKET)))
    assert hits == [
        "aws_db_instance.db: no-public-database",
        "aws_eks_cluster.this: private-cluster-endpoint",
        "aws_s3_bucket.unguarded: no-public-bucket",
        "aws_s3_bucket_acl.data: no-public-bucket",
        "aws_s3_bucket_public_access_block.data: no-public-bucket",
    ]
    lax = next(
        v
        for v in check_no_public_data(module_from(tmp_path, PUBLIC_BUCKET, "again"))
        if v.where == "aws_s3_bucket_public_access_block.data"
    )
    assert "block_public_acls" in lax.detail and "restrict_public_buckets" in lax.detail
    assert check_no_public_data(module_from(tmp_path, PRIVATE_BUCKET, "good")) == []


UNENCRYPTED = """
resource "aws_s3_bucket" "plain" {
  bucket = "lmforge-plain"
}
resource "aws_s3_bucket" "sse_s3" {
  bucket = "lmforge-sse-s3"
}
resource "aws_s3_bucket_server_side_encryption_configuration" "sse_s3" {
  bucket = aws_s3_bucket.sse_s3.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}
resource "aws_db_instance" "db" {
  storage_encrypted = false
}
resource "aws_eks_cluster" "this" {
  name = "c"
}
resource "aws_cloudwatch_log_group" "logs" {
  name = "l"
}
resource "aws_launch_template" "node" {
  block_device_mappings {
    ebs {
      encrypted = false
    }
  }
}
resource "aws_kms_key" "key" {
  enable_key_rotation = false
}
"""
ENCRYPTED = """
resource "aws_s3_bucket" "data" {
  bucket = "lmforge-data"
}
resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.key.arn
    }
  }
}
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_145:S3 server access log delivery cannot write to SSE-KMS buckets at all.
  bucket = "lmforge-logs"
}
resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}
resource "aws_db_instance" "db" {
  storage_encrypted = true
  kms_key_id        = aws_kms_key.key.arn
}
resource "aws_eks_cluster" "this" {
  encryption_config {
    resources = ["secrets"]
  }
}
resource "aws_cloudwatch_log_group" "logs" {
  kms_key_id = aws_kms_key.key.arn
}
resource "aws_launch_template" "node" {
  block_device_mappings {
    ebs {
      encrypted = true
    }
  }
}
resource "aws_kms_key" "key" {
  enable_key_rotation = true
}
"""


def test_unencrypted_resources_are_reported(tmp_path: Path) -> None:
    assert rules_hit(check_encryption(module_from(tmp_path, UNENCRYPTED))) == [
        "aws_cloudwatch_log_group.logs: encrypted",
        "aws_db_instance.db: encrypted",
        "aws_eks_cluster.this: encrypted",
        "aws_kms_key.key: encrypted",
        "aws_launch_template.node: encrypted",
        "aws_s3_bucket.plain: encrypted",
        "aws_s3_bucket.sse_s3: encrypted",
    ]
    assert check_encryption(module_from(tmp_path, ENCRYPTED, "good")) == []


WILDCARD_IAM = """
data "aws_iam_policy_document" "admin" {
  statement {
    actions   = ["*"]
    resources = ["*"]
  }
}
data "aws_iam_policy_document" "all_of_s3" {
  statement {
    actions   = ["s3:*"]
    resources = ["*"]
  }
}
locals {
  unscoped_write = {
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["s3:PutObject"], Resource = "*" }]
  }
}
resource "aws_iam_policy" "inline_json" {
  policy = <<-EOT
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
  EOT
}
"""
SCOPED_IAM = """
data "aws_iam_policy_document" "read_models" {
  statement {
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.models.arn}/*"]
  }
  statement {
    actions   = ["ec2:DescribeSubnets"]
    resources = ["*"]
  }
  statement {
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = ["*"]
  }
}
locals {
  key_policy = {
    Statement = [{ Effect = "Allow", Principal = { AWS = "arn:aws:iam::123456789012:root" }, Action = ["kms:Decrypt"], Resource = "*" }]
  }
}
"""


def test_wildcard_iam_is_reported(tmp_path: Path) -> None:
    violations = check_iam(module_from(tmp_path, WILDCARD_IAM))
    details = sorted(v.detail for v in violations)
    assert details == [
        "allows every action ('*')",
        "allows every action ('*')",
        "allows s3:* on every resource",
        "grants * on '*' (only Describe/List/Get may use '*')",
        "grants * on '*' (only Describe/List/Get may use '*')",
        "grants s3:* on '*' (only Describe/List/Get may use '*')",
        "grants s3:PutObject on '*' (only Describe/List/Get may use '*')",
    ]
    assert check_iam(module_from(tmp_path, SCOPED_IAM, "good")) == []


def test_module_calls_are_checked_against_the_called_module(tmp_path: Path) -> None:
    (tmp_path / "modules" / "bucket").mkdir(parents=True)
    (tmp_path / "modules" / "bucket" / "variables.tf").write_text(
        'variable "name" {\n  type = string\n  description = "d"\n}\n'
        'variable "tags" {\n  type = map(string)\n  description = "d"\n  default = {}\n}\n'
    )
    env = tmp_path / "environments" / "dev"
    env.mkdir(parents=True)
    (env / "main.tf").write_text(
        'module "ok" {\n  source = "../../modules/bucket"\n  name = "a"\n}\n'
        'module "typo" {\n  source = "../../modules/bucket"\n  nmae = "a"\n}\n'
        'module "gone" {\n  source = "../../modules/missing"\n}\n'
        'module "registry" {\n  source = "terraform-aws-modules/vpc/aws"\n}\n'
    )
    hits = sorted(str(v) for v in check_module_calls(load_tree(tmp_path)))
    assert hits == [
        "environments/dev: module.gone: module-exists: ../../modules/missing holds no module",
        "environments/dev: module.typo: module-arguments: ../../modules/bucket declares no variable 'nmae'",
        "environments/dev: module.typo: module-arguments: required variable 'name' of ../../modules/bucket is not given",
    ]


def test_unjustified_checkov_skips_are_reported(tmp_path: Path) -> None:
    module = module_from(
        tmp_path,
        """
resource "aws_s3_bucket" "a" {
  #checkov:skip=CKV_AWS_18
  #checkov:skip=CKV_AWS_144:not needed
  #checkov:skip=CKV2_AWS_62:No consumer reacts to object events in this design.
  bucket = "a"
}
""",
    )
    assert rules_hit(check_skips_justified(module)) == [
        "checkov:skip=CKV_AWS_144: skip-justified",
        "checkov:skip=CKV_AWS_18: skip-justified",
    ]


def test_a_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.tf").write_text('resource "aws_s3_bucket" "a" {\n  bucket = \n')
    with pytest.raises(ValueError, match=r"broken/main\.tf: does not parse as HCL"):
        load_module(broken)
