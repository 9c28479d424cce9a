# dev: the whole platform at the smallest useful size. Single NAT gateway, single-AZ database,
# small CPU nodes, GPU nodes only while a training job runs, Triton on CPU.
environment                       = "dev"
single_nat_gateway                = true
noncurrent_version_retention_days = 7

cpu_node_group = {
  instance_types = ["m6i.xlarge"]
  min_size       = 1
  desired_size   = 2
  max_size       = 3
  disk_size_gb   = 50
}

gpu_node_group = {
  instance_types = ["g5.xlarge"]
  min_size       = 0
  desired_size   = 0
  max_size       = 1
  disk_size_gb   = 150
}

database = {
  instance_class           = "db.t4g.medium"
  allocated_storage_gb     = 20
  max_allocated_storage_gb = 100
  multi_az                 = false
  backup_retention_days    = 7
}

monitoring = {
  prometheus_storage_size = "20Gi"
  prometheus_retention    = "15d"
}

triton = {
  gpu      = false
  replicas = 1
}

training_gpu_job = {
  gpus   = 1
  cpu    = "3"
  memory = "12Gi"
}

dashboard_replicas = 1
