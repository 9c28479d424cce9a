output "lmforge_database_url" {
  description = "Value for LMFORGE_DATABASE_URL (no password: libpq reads PGPASSWORD)."
  value       = module.database.database_url
}

output "database_secret_arn" {
  description = "Secrets Manager secret (JSON: username, password) that RDS manages; PGPASSWORD comes from its password field."
  value       = module.database.master_user_secret_arn
}

output "lmforge_artifact_uri" {
  description = "Value for LMFORGE_ARTIFACT_URI."
  value       = local.artifact_uri
}

output "triton_url" {
  description = "In-cluster Triton HTTP URL (LMFORGE_TRITON_URL); gRPC is triton_grpc_url."
  value       = module.serving.http_url
}

output "triton_grpc_url" {
  description = "In-cluster Triton gRPC endpoint."
  value       = module.serving.grpc_url
}

output "model_repository_uri" {
  description = "S3 URI of the Triton model repository the publish stage writes to."
  value       = local.model_repository_uri
}

output "raw_data_bucket" {
  description = "Bucket the nightly ingest reads source shards from."
  value       = module.storage.raw_data_bucket
}

output "app_repository_url" {
  description = "ECR repository to push the lmforge image to."
  value       = module.storage.app_repository_url
}

output "prefect_api_url" {
  description = "In-cluster PREFECT_API_URL."
  value       = module.orchestration.prefect_api_url
}

output "dashboard_url" {
  description = "Public URL of the review dashboard."
  value       = module.dashboard.url
}

output "dashboard_user_pool_id" {
  description = "Cognito user pool of the dashboard's reviewers."
  value       = module.dashboard.cognito_user_pool_id
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name <cluster_name>)."
  value       = module.cluster.name
}
