variable "name" {
  type        = string
  description = "Prefix of the AWS resources (Cognito pool, certificate tags), e.g. lmforge-prod."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or '-'."
  }
}

variable "service_account" {
  type = object({
    namespace       = string
    service_account = string
    role_arn        = string
  })
  description = "The iam module's database-reader-dashboard entry: the dashboard's namespace and the role that may read the database secret."
}

variable "region" {
  type        = string
  description = "AWS region (Secrets Manager, Cognito)."
}

variable "database" {
  type = object({
    url        = string
    secret_arn = string
  })
  description = "LMFORGE_DATABASE_URL (no password) and the ARN of the RDS-managed secret."
}

variable "lmforge_image" {
  type        = string
  description = "Container image of the lmforge application (it contains the Streamlit dashboard)."

  validation {
    condition     = can(regex("^[^:@]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.lmforge_image)) && !endswith(var.lmforge_image, ":latest")
    error_message = "lmforge_image must name an explicit tag (not latest) or digest."
  }
}

variable "command" {
  type        = list(string)
  description = "Command that starts the dashboard inside lmforge_image, listening on port 8501."
  default     = ["streamlit", "run", "dashboard/app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true"]
}

variable "hostname" {
  type        = string
  description = "Public DNS name of the dashboard, e.g. lmforge.example.com; must lie in the Route 53 zone route53_zone_id."

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,}$", var.hostname))
    error_message = "hostname must be a fully qualified lowercase DNS name."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Public Route 53 hosted zone that validates the certificate and holds the dashboard record."
}

variable "allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the load balancer (office/VPN ranges); every request is also authenticated."

  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_cidrs must list at least one valid CIDR."
  }
}

variable "replicas" {
  type        = number
  description = "Number of dashboard pods."
  default     = 1

  validation {
    condition     = var.replicas >= 1
    error_message = "replicas must be at least 1."
  }
}
