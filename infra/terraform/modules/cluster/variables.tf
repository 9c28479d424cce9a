variable "name" {
  type        = string
  description = "Name of the EKS cluster and prefix of its companions, e.g. lmforge-prod."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,37}$", var.name))
    error_message = "name must be 3-38 lowercase letters, digits or '-', starting with a letter (IAM role names derive from it)."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane and node groups, e.g. 1.33."
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(3[1-9]|[4-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a Kubernetes minor version 1.31 or later in standard support, e.g. 1.33."
  }
}

variable "vpc_id" {
  type        = string
  description = "VPC of the cluster."
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets for the control plane network interfaces and the node groups."

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must name subnets in at least two availability zones."
  }
}

variable "endpoint_public_access" {
  type        = bool
  description = "Expose the Kubernetes API on a public endpoint as well. Off by default: run Terraform and kubectl from inside the VPC (VPN, bastion, CI runner)."
  default     = false
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the public API endpoint when endpoint_public_access is true."
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "public_access_cidrs must not contain 0.0.0.0/0; list the admin networks."
  }
}

variable "private_api_access_cidrs" {
  type        = list(string)
  description = "Networks inside or routed into the VPC (the VPC itself, VPN, peered CI runners) that may open HTTPS connections to the private API endpoint; authentication still applies."
  default     = []

  validation {
    condition     = alltrue([for c in var.private_api_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "private_api_access_cidrs must be valid CIDRs other than 0.0.0.0/0."
  }
}

variable "admin_role_arns" {
  type        = list(string)
  description = "IAM roles granted cluster-admin through EKS access entries (the platform team's role, the CI deploy role)."

  validation {
    condition     = length(var.admin_role_arns) > 0 && alltrue([for arn in var.admin_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", arn))])
    error_message = "admin_role_arns must list at least one IAM role ARN."
  }
}

variable "cpu_node_group" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gb   = number
  })
  description = "General-purpose nodes: Prefect, the dashboard, monitoring, the nightly flow's CPU stages."

  validation {
    condition     = var.cpu_node_group.min_size >= 1 && var.cpu_node_group.min_size <= var.cpu_node_group.desired_size && var.cpu_node_group.desired_size <= var.cpu_node_group.max_size
    error_message = "cpu_node_group needs 1 <= min_size <= desired_size <= max_size."
  }
}

variable "gpu_node_group" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gb   = number
  })
  description = "NVIDIA GPU nodes for training jobs (and Triton when it runs on GPU); tainted so only pods that ask for a GPU land there. min_size 0 lets the autoscaler release idle GPUs."

  validation {
    condition     = var.gpu_node_group.min_size >= 0 && var.gpu_node_group.min_size <= var.gpu_node_group.desired_size && var.gpu_node_group.desired_size <= var.gpu_node_group.max_size && var.gpu_node_group.max_size >= 1
    error_message = "gpu_node_group needs 0 <= min_size <= desired_size <= max_size and max_size >= 1."
  }

  validation {
    condition     = alltrue([for t in var.gpu_node_group.instance_types : can(regex("^(g[4-6][a-z]*|p[3-5][a-z]*)\\.", t))])
    error_message = "gpu_node_group.instance_types must be NVIDIA GPU instance types (g4dn, g5, g6, p4d, p5, ...)."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep control-plane logs in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value of at least one year."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to every resource."
  default     = {}
}
