data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  account_root   = "arn:${local.partition}:iam::${local.account_id}:root"
  log_groups_arn = "arn:${local.partition}:logs:${data.aws_region.current.name}:${local.account_id}:log-group:*"

  # In a key policy "Resource": "*" means "this key"; it cannot name anything else. The account
  # may administer the key and delegate its use through IAM policies; the actions are listed
  # instead of kms:* so the policy holds no wildcard grant.
  account_statements = [
    {
      Sid       = "AccountAdministersKey"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action = [
        "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey", "kms:DisableKey",
        "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy",
        "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants", "kms:ListKeyPolicies",
        "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:RevokeGrant", "kms:ScheduleKeyDeletion",
        "kms:TagResource", "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
      ]
      Resource = "*"
    },
    {
      Sid       = "AccountDelegatesUseThroughIam"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action = [
        "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
      ]
      Resource = "*"
    },
  ]

  cloudwatch_logs_statement = {
    Sid       = "CloudWatchLogsUsesKey"
    Effect    = "Allow"
    Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
    Action    = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
    Resource  = "*"
    Condition = {
      ArnLike = { "kms:EncryptionContext:aws:logs:arn" = local.log_groups_arn }
    }
  }

  key_policy = {
    Version   = "2012-10-17"
    Statement = var.allow_cloudwatch_logs ? concat(local.account_statements, [local.cloudwatch_logs_statement]) : local.account_statements
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = jsonencode(local.key_policy)
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
