variable "service_account" {
  type = object({
    namespace       = string
    service_account = string
    role_arn        = string
  })
  description = "The iam module's triton entry: namespace, service account and the IRSA role that may read only the model repository."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", var.service_account.role_arn))
    error_message = "service_account.role_arn must be an IAM role ARN."
  }
}

variable "region" {
  type        = string
  description = "AWS region of the model-repository bucket."
}

variable "model_repository_uri" {
  type        = string
  description = "S3 URI of the Triton model repository, e.g. s3://lmforge-prod-model-repository-123456789012/models."

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.model_repository_uri))
    error_message = "model_repository_uri must be an s3:// URI."
  }
}

variable "image" {
  type        = string
  description = "Official Triton Inference Server image (NGC), pinned to a release tag."
  default     = "nvcr.io/nvidia/tritonserver:25.01-py3"

  validation {
    condition     = can(regex("^nvcr\\.io/nvidia/tritonserver:[0-9]{2}\\.[0-9]{2}-py3$", var.image))
    error_message = "image must be an official release of nvcr.io/nvidia/tritonserver with a YY.MM-py3 tag."
  }
}

variable "models_at_startup" {
  type        = list(string)
  description = "Models loaded when a pod starts (--load-model; \"*\" loads the whole repository). With explicit model control, the publish stage loads and unloads models through the API afterwards."
  default     = ["*"]
}

variable "replicas" {
  type        = number
  description = "Number of Triton pods."
  default     = 1

  validation {
    condition     = var.replicas >= 1
    error_message = "replicas must be at least 1."
  }
}

variable "gpu" {
  type        = bool
  description = "Run Triton on the GPU node group with one GPU per pod (prod); otherwise on CPU nodes."
  default     = false
}

variable "resources" {
  type = object({
    cpu    = string
    memory = string
  })
  description = "CPU and memory requested (and limited) per pod."
  default = {
    cpu    = "2"
    memory = "8Gi"
  }
}

variable "shared_memory_size" {
  type        = string
  description = "Size of /dev/shm; the python backend exchanges tensors through shared memory."
  default     = "1Gi"
}
