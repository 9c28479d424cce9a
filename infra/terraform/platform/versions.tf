terraform {
  # 1.10+: S3 backend locking with use_lockfile (no DynamoDB table).
  required_version = ">= 1.10, < 2.0"

  # Pessimistic pins on the provider majors these modules are written for; `terraform init`
  # records the exact versions in .terraform.lock.hcl, which is committed.
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.95"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}
