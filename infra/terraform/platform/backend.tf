# Remote state in S3 with native S3 locking. The settings live in backend.hcl (copy
# backend.hcl.example) and are passed with `terraform init -backend-config=backend.hcl`.
terraform {
  backend "s3" {}
}
