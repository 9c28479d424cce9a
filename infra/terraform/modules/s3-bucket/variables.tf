variable "bucket" {
  type        = string
  description = "Globally unique bucket name."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "bucket must be 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit."
  }
}

variable "purpose" {
  type        = string
  description = "What the bucket holds; written into its Purpose tag."
}

variable "kms_key_arn" {
  type        = string
  description = "Customer managed KMS key for default encryption; uploads encrypted otherwise are denied."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "access_log_bucket" {
  type        = string
  description = "Name of the bucket that receives this bucket's server access logs."
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept before it expires."

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "infrequent_access_after_days" {
  type        = number
  description = "Days after which current objects move to STANDARD_IA; null keeps them in STANDARD."
  default     = null

  validation {
    condition     = var.infrequent_access_after_days == null ? true : var.infrequent_access_after_days >= 30
    error_message = "infrequent_access_after_days must be null or at least 30 (the S3 minimum for STANDARD_IA)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to the bucket."
  default     = {}
}
