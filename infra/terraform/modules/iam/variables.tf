variable "name" {
  type        = string
  description = "Prefix of the IAM role names, e.g. lmforge-prod."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or '-' (role names are limited to 64 characters)."
  }
}

variable "cluster_name" {
  type        = string
  description = "EKS cluster whose node groups the cluster autoscaler may resize."
}

variable "vpc_id" {
  type        = string
  description = "VPC in which the load balancer controller may create security groups."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider (cluster module output)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_issuer" {
  type        = string
  description = "OIDC issuer without https:// (cluster module output); prefix of the sub/aud condition keys."

  validation {
    condition     = !startswith(var.oidc_issuer, "https://")
    error_message = "oidc_issuer must not include the https:// scheme."
  }
}

variable "namespaces" {
  type = object({
    serving    = string
    lmforge    = string
    prefect    = string
    dashboard  = string
    monitoring = string
  })
  description = "Kubernetes namespaces of the workloads; the trust policies name service accounts in them."
  default = {
    serving    = "triton"
    lmforge    = "lmforge"
    prefect    = "prefect"
    dashboard  = "dashboard"
    monitoring = "monitoring"
  }
}

variable "raw_data_bucket_arn" {
  type        = string
  description = "ARN of the raw-data bucket (storage module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.raw_data_bucket_arn))
    error_message = "raw_data_bucket_arn must be an S3 bucket ARN."
  }
}

variable "artifacts_bucket_arn" {
  type        = string
  description = "ARN of the artifact bucket (storage module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.artifacts_bucket_arn))
    error_message = "artifacts_bucket_arn must be an S3 bucket ARN."
  }
}

variable "model_repository_bucket_arn" {
  type        = string
  description = "ARN of the Triton model-repository bucket (storage module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.model_repository_bucket_arn))
    error_message = "model_repository_bucket_arn must be an S3 bucket ARN."
  }
}

variable "storage_kms_key_arn" {
  type        = string
  description = "ARN of the key encrypting the buckets (storage module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.storage_kms_key_arn))
    error_message = "storage_kms_key_arn must be a KMS key ARN."
  }
}

variable "database_secret_arn" {
  type        = string
  description = "ARN of the RDS-managed master secret (database module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.database_secret_arn))
    error_message = "database_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "database_kms_key_arn" {
  type        = string
  description = "ARN of the key encrypting the database secret (database module)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.database_kms_key_arn))
    error_message = "database_kms_key_arn must be a KMS key ARN."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to every role."
  default     = {}
}
