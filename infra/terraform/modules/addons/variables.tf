variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster (cluster module output)."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the cluster; the cluster autoscaler image must match it."

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as 1.33."
  }
}

variable "region" {
  type        = string
  description = "AWS region of the cluster; passed to the controllers so they need no instance metadata."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the cluster; passed to the load balancer controller so it needs no instance metadata."
}

variable "service_accounts" {
  type = map(object({
    namespace       = string
    service_account = string
    role_arn        = string
  }))
  description = "The iam module's service_accounts output; the cluster-autoscaler and aws-load-balancer-controller entries are used here."

  validation {
    condition     = alltrue([for k in ["cluster-autoscaler", "aws-load-balancer-controller"] : contains(keys(var.service_accounts), k)])
    error_message = "service_accounts must contain cluster-autoscaler and aws-load-balancer-controller entries."
  }
}

variable "chart_versions" {
  type = object({
    aws_load_balancer_controller = string
    cluster_autoscaler           = string
    external_secrets             = string
    nvidia_device_plugin         = string
  })
  description = "Pinned Helm chart versions of the add-ons; upgrade deliberately, one at a time."
  default = {
    aws_load_balancer_controller = "1.13.0"
    cluster_autoscaler           = "9.53.0"
    external_secrets             = "0.15.0"
    nvidia_device_plugin         = "0.17.1"
  }
}
