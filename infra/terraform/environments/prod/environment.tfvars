# prod: three zones with a NAT gateway each, a multi-AZ database with 30 days of backups, larger
# CPU and GPU node groups, Triton on GPUs with two replicas.
environment                       = "prod"
single_nat_gateway                = false
noncurrent_version_retention_days = 30

cpu_node_group = {
  instance_types = ["m6i.2xlarge"]
  min_size       = 3
  desired_size   = 3
  max_size       = 6
  disk_size_gb   = 100
}

gpu_node_group = {
  instance_types = ["g5.12xlarge"]
  min_size       = 1
  desired_size   = 1
  max_size       = 3
  disk_size_gb   = 300
}

database = {
  instance_class           = "db.r7g.large"
  allocated_storage_gb     = 100
  max_allocated_storage_gb = 1000
  multi_az                 = true
  backup_retention_days    = 30
}

monitoring = {
  prometheus_storage_size = "100Gi"
  prometheus_retention    = "30d"
}

triton = {
  gpu      = true
  replicas = 2
}

training_gpu_job = {
  gpus   = 4
  cpu    = "36"
  memory = "150Gi"
}

dashboard_replicas = 2
