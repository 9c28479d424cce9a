locals {
  namespace = var.service_account.namespace
  service   = "triton"
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = local.namespace
  }
}

# The official Triton image, deployed with the small chart in ./chart (NVIDIA publishes no Helm
# repository for it).
resource "helm_release" "triton" {
  name      = local.service
  namespace = kubernetes_namespace_v1.this.metadata[0].name
  chart     = "${path.module}/chart"

  values = [yamlencode({
    image           = var.image
    replicas        = var.replicas
    modelRepository = var.model_repository_uri
    loadModels      = var.models_at_startup
    region          = var.region
    gpu             = var.gpu
    resources       = var.resources
    sharedMemory    = var.shared_memory_size
    serviceAccount = {
      name    = var.service_account.service_account
      roleArn = var.service_account.role_arn
    }
  })]
}
