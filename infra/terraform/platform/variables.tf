variable "environment" {
  type        = string
  description = "Name of the environment (dev, prod, ...): names every resource (lmforge-<environment>) and tags it."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "AWS region to deploy into."
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones of the VPC, named explicitly (dev: two are enough; prod: three, over which the NAT gateways, the nodes and the database standby spread)."

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones needs at least two zones (EKS and RDS subnet groups require two)."
  }
}

variable "admin_role_arns" {
  type        = list(string)
  description = "IAM roles that administer the EKS cluster (platform team, CI deploy role)."
}

variable "cluster_admin_cidrs" {
  type        = list(string)
  description = "Networks that may reach the Kubernetes API over a public endpoint. Empty (the default) keeps the endpoint private: run the Kubernetes stage from inside the VPC."
  default     = []

  validation {
    condition     = !contains(var.cluster_admin_cidrs, "0.0.0.0/0")
    error_message = "cluster_admin_cidrs must not contain 0.0.0.0/0."
  }
}

variable "private_api_access_cidrs" {
  type        = list(string)
  description = "Networks routed into the VPC (VPN, peered CI runners) that may reach the private Kubernetes API; the VPC itself always may."
  default     = []
}

variable "lmforge_image_tag" {
  type        = string
  description = "Immutable tag of the lmforge application image in the ECR repository this configuration creates (push it before applying the Kubernetes stage)."

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,128}$", var.lmforge_image_tag)) && var.lmforge_image_tag != "latest"
    error_message = "lmforge_image_tag must be an explicit image tag other than latest."
  }
}

variable "dashboard_hostname" {
  type        = string
  description = "Public DNS name of the review dashboard, e.g. lmforge-dev.example.com or lmforge.example.com."
}

variable "route53_zone_id" {
  type        = string
  description = "Public Route 53 hosted zone containing dashboard_hostname."
}

variable "dashboard_allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the dashboard load balancer (office/VPN ranges)."
}

# --- What differs between environments: set in ../environments/<env>/environment.tfvars ----------

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway shared by all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days old object versions are kept in the data buckets before they expire."
}

variable "cpu_node_group" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gb   = number
  })
  description = "General-purpose EKS nodes (Prefect, dashboard, monitoring, CPU stages); see modules/cluster."
}

variable "gpu_node_group" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gb   = number
  })
  description = "GPU EKS nodes (training jobs, Triton on GPU); min_size 0 releases them when idle."
}

variable "database" {
  type = object({
    instance_class           = string
    allocated_storage_gb     = number
    max_allocated_storage_gb = number
    multi_az                 = bool
    backup_retention_days    = number
  })
  description = "Size and redundancy of the RDS PostgreSQL instance (metadata store and Prefect)."
}

variable "monitoring" {
  type = object({
    prometheus_storage_size = string
    prometheus_retention    = string
  })
  description = "Prometheus volume size and how long it keeps samples."
}

variable "triton" {
  type = object({
    gpu      = bool
    replicas = number
  })
  description = "Triton Inference Server: on GPU nodes or CPU, and how many pods."
}

variable "training_gpu_job" {
  type = object({
    gpus   = number
    cpu    = string
    memory = string
  })
  description = "Resources of one training job on the GPU work pool (the Prefect GPU job template)."
}

variable "dashboard_replicas" {
  type        = number
  description = "Number of review-dashboard pods."
}
