variable "namespaces" {
  type = object({
    prefect = string
    lmforge = string
  })
  description = "Namespace of the Prefect server, and namespace of the workers and the flow-run jobs."
  default = {
    prefect = "prefect"
    lmforge = "lmforge"
  }
}

variable "service_accounts" {
  type = map(object({
    namespace       = string
    service_account = string
    role_arn        = string
  }))
  description = "The iam module's service_accounts output; the training, flow, database-reader-prefect and database-reader-lmforge entries are used here."

  validation {
    condition     = alltrue([for k in ["training", "flow", "database-reader-prefect", "database-reader-lmforge"] : contains(keys(var.service_accounts), k)])
    error_message = "service_accounts must contain training, flow, database-reader-prefect and database-reader-lmforge entries."
  }
}

variable "region" {
  type        = string
  description = "AWS region (Secrets Manager, S3)."
}

variable "database" {
  type = object({
    address    = string
    port       = number
    name       = string
    username   = string
    url        = string
    secret_arn = string
  })
  description = "The database module's outputs: endpoint, lmforge database name, user, LMFORGE_DATABASE_URL (no password) and the ARN of the RDS-managed secret."
}

variable "prefect_database_name" {
  type        = string
  description = "Database the Prefect server uses on the same RDS instance (created by a one-off Job)."
  default     = "prefect"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.prefect_database_name))
    error_message = "prefect_database_name must be a lowercase PostgreSQL identifier."
  }
}

variable "artifact_uri" {
  type        = string
  description = "LMFORGE_ARTIFACT_URI for the jobs, e.g. s3://lmforge-prod-artifacts-123456789012/lmforge."

  validation {
    condition     = startswith(var.artifact_uri, "s3://")
    error_message = "artifact_uri must be an s3:// URI."
  }
}

variable "triton_url" {
  type        = string
  description = "In-cluster Triton HTTP URL, given to the jobs as LMFORGE_TRITON_URL."
}

variable "lmforge_image" {
  type        = string
  description = "Container image of the lmforge application (ECR repository URL and an immutable tag) that flow runs execute in."

  validation {
    condition     = can(regex("^[^:@]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.lmforge_image)) && !endswith(var.lmforge_image, ":latest")
    error_message = "lmforge_image must name an explicit tag (not latest) or digest."
  }
}

variable "prefect_image_tag" {
  type        = string
  description = "Tag of the prefecthq/prefect image for the server and workers; keep it on the same minor version as the app's prefect pin (3.8)."
  default     = "3.8.8-python3.11"

  validation {
    condition     = can(regex("^3\\.8\\.[0-9]+-python3\\.[0-9]+$", var.prefect_image_tag))
    error_message = "prefect_image_tag must be a 3.8.x release tag such as 3.8.8-python3.11 (the app pins prefect 3.8)."
  }
}

variable "prefect_chart_version" {
  type        = string
  description = "Version of the prefect-server and prefect-worker Helm charts (https://prefecthq.github.io/prefect-helm)."
  default     = "2025.12.31221620"
}

variable "gpu_job" {
  type = object({
    gpus   = number
    cpu    = string
    memory = string
  })
  description = "Resources of one training job on the GPU work pool (the GPU job template)."
  default = {
    gpus   = 1
    cpu    = "6"
    memory = "24Gi"
  }

  validation {
    condition     = var.gpu_job.gpus >= 1 && var.gpu_job.gpus <= 8
    error_message = "gpu_job.gpus must be between 1 and 8."
  }
}

variable "cpu_job" {
  type = object({
    cpu    = string
    memory = string
  })
  description = "Resources of one nightly-flow run on the CPU work pool."
  default = {
    cpu    = "2"
    memory = "8Gi"
  }
}
