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
  description = "Availability zones of the VPC, named explicitly (three: the NAT gateways, the nodes and the database standby spread over them)."
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
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
  description = "Public DNS name of the review dashboard, e.g. lmforge.example.com."
}

variable "route53_zone_id" {
  type        = string
  description = "Public Route 53 hosted zone containing dashboard_hostname."
}

variable "dashboard_allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the dashboard load balancer (office/VPN ranges)."
}
