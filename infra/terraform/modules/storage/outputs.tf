output "raw_data_bucket" {
  description = "Name of the bucket holding raw source shards."
  value       = module.raw_data.id
}

output "raw_data_bucket_arn" {
  description = "ARN of the raw-data bucket."
  value       = module.raw_data.arn
}

output "artifacts_bucket" {
  description = "Name of the artifact bucket."
  value       = module.artifacts.id
}

output "artifacts_bucket_arn" {
  description = "ARN of the artifact bucket."
  value       = module.artifacts.arn
}

output "model_repository_bucket" {
  description = "Name of the Triton model-repository bucket."
  value       = module.model_repository.id
}

output "model_repository_bucket_arn" {
  description = "ARN of the Triton model-repository bucket."
  value       = module.model_repository.arn
}

output "access_logs_bucket" {
  description = "Name of the bucket receiving S3 server access logs."
  value       = aws_s3_bucket.access_logs.id
}

output "kms_key_arn" {
  description = "ARN of the customer managed key that encrypts the data buckets; readers need kms:Decrypt on it, writers kms:GenerateDataKey."
  value       = module.key.key_arn
}

output "app_repository_url" {
  description = "ECR repository for the lmforge application image (immutable tags, scanned on push)."
  value       = aws_ecr_repository.app.repository_url
}
