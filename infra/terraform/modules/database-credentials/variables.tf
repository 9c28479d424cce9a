variable "namespace" {
  type        = string
  description = "Namespace that receives the Kubernetes Secret (it must exist)."
}

variable "service_account" {
  type = object({
    namespace       = string
    service_account = string
    role_arn        = string
  })
  description = "The iam module's database-reader entry for this namespace: the service account the SecretStore authenticates as, and its IRSA role."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", var.service_account.role_arn))
    error_message = "service_account.role_arn must be an IAM role ARN."
  }
}

variable "region" {
  type        = string
  description = "AWS region of the Secrets Manager secret."
}

variable "secret_arn" {
  type        = string
  description = "ARN of the RDS-managed master secret (JSON with username and password)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.secret_arn))
    error_message = "secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "target_secret_name" {
  type        = string
  description = "Name of the Kubernetes Secret to create."

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.target_secret_name))
    error_message = "target_secret_name must be a DNS-1123 label."
  }
}

variable "keys" {
  type        = map(string)
  description = "Keys of the Kubernetes Secret mapped to External Secrets templates over .username and .password, e.g. { PGPASSWORD = \"{{ .password }}\" }."

  validation {
    condition     = length(var.keys) > 0
    error_message = "keys must define at least one key."
  }
}
