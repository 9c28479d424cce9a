locals {
  lbc = var.service_accounts["aws-load-balancer-controller"]
  cas = var.service_accounts["cluster-autoscaler"]

  gpu_node_selector = { "lmforge.io/node-pool" = "gpu" }
  gpu_toleration    = { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }
}

# Encrypted gp3 volumes by default (EKS 1.30+ marks no StorageClass as default); used by the
# Prometheus and Grafana volumes.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name        = "gp3-encrypted"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
  }

  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Delete"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

resource "helm_release" "aws_load_balancer_controller" {
  name       = "aws-load-balancer-controller"
  namespace  = local.lbc.namespace
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = var.chart_versions.aws_load_balancer_controller

  values = [yamlencode({
    clusterName  = var.cluster_name
    region       = var.region
    vpcId        = var.vpc_id
    replicaCount = 2
    # The IAM role grants no WAF or Shield actions; the controller must not try them.
    enableShield = false
    enableWaf    = false
    enableWafv2  = false
    serviceAccount = {
      create      = true
      name        = local.lbc.service_account
      annotations = { "eks.amazonaws.com/role-arn" = local.lbc.role_arn }
    }
  })]
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  namespace  = local.cas.namespace
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.chart_versions.cluster_autoscaler

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region
    image         = { tag = "v${var.kubernetes_version}.0" }
    autoDiscovery = { clusterName = var.cluster_name }
    extraArgs = {
      expander                      = "least-waste"
      balance-similar-node-groups   = true
      skip-nodes-with-local-storage = false
      # GPU nodes are expensive: release them soon after the last training job ends.
      scale-down-unneeded-time = "10m"
    }
    rbac = {
      serviceAccount = {
        create      = true
        name        = local.cas.service_account
        annotations = { "eks.amazonaws.com/role-arn" = local.cas.role_arn }
      }
    }
  })]
}

resource "kubernetes_namespace_v1" "external_secrets" {
  metadata {
    name = "external-secrets"
  }
}

# The operator itself needs no AWS permissions: each namespace's SecretStore authenticates with
# its own IRSA role (database-credentials module).
resource "helm_release" "external_secrets" {
  name       = "external-secrets"
  namespace  = kubernetes_namespace_v1.external_secrets.metadata[0].name
  repository = "https://charts.external-secrets.io"
  chart      = "external-secrets"
  version    = var.chart_versions.external_secrets

  values = [yamlencode({
    installCRDs = true
  })]
}

# Advertises nvidia.com/gpu on the GPU nodes (the AL2023 NVIDIA AMI ships the driver).
resource "helm_release" "nvidia_device_plugin" {
  name       = "nvidia-device-plugin"
  namespace  = "kube-system"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.chart_versions.nvidia_device_plugin

  values = [yamlencode({
    nodeSelector = local.gpu_node_selector
    tolerations  = [local.gpu_toleration]
  })]
}
