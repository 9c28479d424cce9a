# lmforge: the whole platform, one configuration for every environment. What differs between
# environments (sizes, zones, redundancy) comes from ../environments/<env>/environment.tfvars; the
# account-specific values from ../environments/<env>/terraform.tfvars (see ../README.md, "Apply").

locals {
  name = "lmforge-${var.environment}"
  tags = {
    Project     = "lmforge"
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  artifact_uri         = "s3://${module.storage.artifacts_bucket}/lmforge"
  model_repository_uri = "s3://${module.storage.model_repository_bucket}/models"
  lmforge_image        = "${module.storage.app_repository_url}:${var.lmforge_image_tag}"
}

module "network" {
  source = "../modules/network"

  name               = local.name
  cluster_name       = local.name
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
}

module "storage" {
  source = "../modules/storage"

  name                              = local.name
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
}

module "cluster" {
  source = "../modules/cluster"

  name               = local.name
  vpc_id             = module.network.vpc_id
  private_subnet_ids = module.network.private_subnet_ids
  admin_role_arns    = var.admin_role_arns

  # Private unless admin networks are listed (e.g. for the first apply, before a runner exists in
  # the VPC); see ../README.md.
  endpoint_public_access   = length(var.cluster_admin_cidrs) > 0
  public_access_cidrs      = var.cluster_admin_cidrs
  private_api_access_cidrs = concat([module.network.vpc_cidr_block], var.private_api_access_cidrs)

  cpu_node_group = var.cpu_node_group
  gpu_node_group = var.gpu_node_group

}

module "database" {
  source = "../modules/database"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  private_subnet_ids         = module.network.private_subnet_ids
  allowed_security_group_ids = [module.cluster.security_group_id]
  instance_class             = var.database.instance_class
  allocated_storage_gb       = var.database.allocated_storage_gb
  max_allocated_storage_gb   = var.database.max_allocated_storage_gb
  multi_az                   = var.database.multi_az
  backup_retention_days      = var.database.backup_retention_days
}

module "iam" {
  source = "../modules/iam"

  name                        = local.name
  cluster_name                = module.cluster.name
  vpc_id                      = module.network.vpc_id
  oidc_provider_arn           = module.cluster.oidc_provider_arn
  oidc_issuer                 = module.cluster.oidc_issuer
  raw_data_bucket_arn         = module.storage.raw_data_bucket_arn
  artifacts_bucket_arn        = module.storage.artifacts_bucket_arn
  model_repository_bucket_arn = module.storage.model_repository_bucket_arn
  storage_kms_key_arn         = module.storage.kms_key_arn
  database_secret_arn         = module.database.master_user_secret_arn
  database_kms_key_arn        = module.database.kms_key_arn
}

# --- Kubernetes stage (second apply, see ../README.md) ---------------------------------------

module "addons" {
  source = "../modules/addons"

  cluster_name       = module.cluster.name
  kubernetes_version = module.cluster.kubernetes_version
  region             = var.region
  vpc_id             = module.network.vpc_id
  service_accounts   = module.iam.service_accounts
}

module "monitoring" {
  source = "../modules/monitoring"

  service_account         = module.iam.service_accounts["database-reader-monitoring"]
  region                  = var.region
  prometheus_storage_size = var.monitoring.prometheus_storage_size
  prometheus_retention    = var.monitoring.prometheus_retention
  database = {
    address    = module.database.address
    port       = module.database.port
    name       = module.database.database_name
    username   = module.database.username
    secret_arn = module.database.master_user_secret_arn
  }

  depends_on = [module.addons]
}

module "serving" {
  source = "../modules/serving"

  service_account      = module.iam.service_accounts["triton"]
  region               = var.region
  model_repository_uri = local.model_repository_uri
  gpu                  = var.triton.gpu
  replicas             = var.triton.replicas

  # Installed after the monitoring CRDs so its ServiceMonitor is created.
  depends_on = [module.monitoring]
}

module "orchestration" {
  source = "../modules/orchestration"

  service_accounts = module.iam.service_accounts
  region           = var.region
  artifact_uri     = local.artifact_uri
  triton_url       = module.serving.http_url
  lmforge_image    = local.lmforge_image
  database = {
    address    = module.database.address
    port       = module.database.port
    name       = module.database.database_name
    username   = module.database.username
    url        = module.database.database_url
    secret_arn = module.database.master_user_secret_arn
  }
  gpu_job          = var.training_gpu_job

  depends_on = [module.addons]
}

module "dashboard" {
  source = "../modules/dashboard"

  name            = local.name
  service_account = module.iam.service_accounts["database-reader-dashboard"]
  region          = var.region
  lmforge_image   = local.lmforge_image
  hostname        = var.dashboard_hostname
  route53_zone_id = var.route53_zone_id
  allowed_cidrs   = var.dashboard_allowed_cidrs
  replicas        = var.dashboard_replicas
  database = {
    url        = module.database.database_url
    secret_arn = module.database.master_user_secret_arn
  }

  depends_on = [module.addons]
}
