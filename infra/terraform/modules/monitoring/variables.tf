variable "service_account" {
  type = object({
    namespace       = string
    service_account = string
    role_arn        = string
  })
  description = "The iam module's database-reader-monitoring entry: the monitoring namespace and the role that may read the database secret (Grafana's PostgreSQL data source)."
}

variable "region" {
  type        = string
  description = "AWS region of the database secret."
}

variable "database" {
  type = object({
    address    = string
    port       = number
    name       = string
    username   = string
    secret_arn = string
  })
  description = "The database module's endpoint, database name, user and secret ARN, for the training-metrics data source."
}

variable "chart_version" {
  type        = string
  description = "Version of the kube-prometheus-stack chart (https://prometheus-community.github.io/helm-charts)."
  default     = "88.3.0"
}

variable "prometheus_retention" {
  type        = string
  description = "How long Prometheus keeps samples, e.g. 15d."
  default     = "15d"

  validation {
    condition     = can(regex("^[0-9]+[dhw]$", var.prometheus_retention))
    error_message = "prometheus_retention must be a duration such as 15d, 72h or 4w."
  }
}

variable "prometheus_storage_size" {
  type        = string
  description = "Size of Prometheus' persistent volume."
  default     = "50Gi"
}
