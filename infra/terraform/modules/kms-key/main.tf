data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  account_root   = "arn:${local.partition}:iam::${local.account_id}:root"
  log_groups_arn = "arn:${local.partition}:logs:${data.aws_region.current.name}:${local.account_id}:log-group:*"

  # The account may administer the key and delegate its use through IAM policies; listing the
  # actions (instead of kms:*) keeps the key policy free of wildcard grants.
  admin_actions = [
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey", "kms:DisableKey",
    "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants", "kms:ListKeyPolicies",
    "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:RevokeGrant", "kms:ScheduleKeyDeletion",
    "kms:TagResource", "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
  ]
  use_actions = [
    "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
  ]

  # In a key policy "Resource": "*" means "this key"; it cannot name anything else.
  key_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid       = "AccountAdministersKey"
          Effect    = "Allow"
          Principal = { AWS = local.account_root }
          Action    = local.admin_actions
          Resource  = "*"
        },
        {
          Sid       = "AccountDelegatesUseThroughIam"
          Effect    = "Allow"
          Principal = { AWS = local.account_root }
          Action    = local.use_actions
          Resource  = "*"
        },
      ],
      var.allow_cloudwatch_logs ? [
        {
          Sid       = "CloudWatchLogsUsesKey"
          Effect    = "Allow"
          Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
          Action    = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
          Resource  = "*"
          Condition = {
            ArnLike = { "kms:EncryptionContext:aws:logs:arn" = local.log_groups_arn }
          }
        }
      ] : [],
    )
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
