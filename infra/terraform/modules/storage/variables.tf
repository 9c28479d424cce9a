variable "name" {
  type        = string
  description = "Name prefix of the buckets, e.g. lmforge-prod; the account ID is appended for global uniqueness."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,24}$", var.name))
    error_message = "name must be 3-25 lowercase letters, digits or '-' (bucket names are limited to 63 characters)."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept before it expires (the window for undoing a bad write)."
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "raw_data_infrequent_access_days" {
  type        = number
  description = "Days after which raw source shards move to STANDARD_IA (they are read once by ingest, then rarely)."
  default     = 30

  validation {
    condition     = var.raw_data_infrequent_access_days >= 30
    error_message = "raw_data_infrequent_access_days must be at least 30 (the S3 minimum for STANDARD_IA transitions)."
  }
}

variable "access_log_retention_days" {
  type        = number
  description = "Days to keep S3 server access logs."
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 90
    error_message = "access_log_retention_days must be at least 90."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to every resource."
  default     = {}
}

variable "image_retention_count" {
  type        = number
  description = "How many lmforge container images the ECR repository keeps."
  default     = 50

  validation {
    condition     = var.image_retention_count >= 5
    error_message = "image_retention_count must be at least 5 (rollbacks need old images)."
  }
}
