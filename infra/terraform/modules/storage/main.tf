data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
}

module "key" {
  source = "../kms-key"

  alias       = "${var.name}-storage"
  description = "Encrypts the lmforge S3 buckets of ${var.name}."
  tags        = var.tags
}

module "raw_data" {
  source = "../s3-bucket"

  bucket                            = "${var.name}-raw-data-${local.account_id}"
  purpose                           = "source text shards the nightly ingest reads"
  kms_key_arn                       = module.key.key_arn
  access_log_bucket                 = aws_s3_bucket.access_logs.id
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  infrequent_access_after_days      = var.raw_data_infrequent_access_days
  tags                              = var.tags
}

module "artifacts" {
  source = "../s3-bucket"

  bucket                            = "${var.name}-artifacts-${local.account_id}"
  purpose                           = "datasets, tokenizers, checkpoints and reports (LMFORGE_ARTIFACT_URI)"
  kms_key_arn                       = module.key.key_arn
  access_log_bucket                 = aws_s3_bucket.access_logs.id
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  tags                              = var.tags
}

module "model_repository" {
  source = "../s3-bucket"

  bucket                            = "${var.name}-model-repository-${local.account_id}"
  purpose                           = "the Triton model repository the serving deployment loads from"
  kms_key_arn                       = module.key.key_arn
  access_log_bucket                 = aws_s3_bucket.access_logs.id
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  tags                              = var.tags
}

# --- access-log bucket: the target of the three buckets' server access logs -------------------

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would log every log delivery recursively.
  #checkov:skip=CKV_AWS_145:S3 server access log delivery supports only SSE-S3 on the target bucket (SSE-KMS is rejected), so this bucket uses AES256.
  #checkov:skip=CKV_AWS_144:Access logs are audit data kept in-region; replicate them into the organisation's central log archive if one exists.
  #checkov:skip=CKV2_AWS_62:No consumer reacts to log delivery events.
  bucket = "${var.name}-access-logs-${local.account_id}"
  tags   = merge(var.tags, { Purpose = "S3 server access logs of the lmforge buckets" })
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}

    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3ServerAccessLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:s3:::${var.name}-*-${local.account_id}"]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# --- container images of the lmforge application (flows, training jobs, dashboard) -------------

resource "aws_ecr_repository" "app" {
  name                 = "${var.name}/lmforge"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.key.key_arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the newest ${var.image_retention_count} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.image_retention_count
      }
      action = { type = "expire" }
    }]
  })
}
