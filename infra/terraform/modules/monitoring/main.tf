locals {
  namespace = var.service_account.namespace
  release   = "kube-prometheus-stack"

  # Where the synced database password is mounted in Grafana; the data source reads it with
  # Grafana's $__file{} expander, so it never appears in an environment variable or a values file.
  db_secret_mount = "/etc/grafana/secrets/lmforge-database"
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = local.namespace
  }
}

module "database_credentials" {
  source = "../database-credentials"

  namespace          = kubernetes_namespace_v1.this.metadata[0].name
  service_account    = var.service_account
  region             = var.region
  secret_arn         = var.database.secret_arn
  target_secret_name = "grafana-database"
  keys = {
    password = "{{ .password }}"
  }
}

# Grafana's admin password: generated here, kept only in the (encrypted) state and the Secret.
resource "random_password" "grafana_admin" {
  length  = 32
  special = false
}

resource "kubernetes_secret_v1" "grafana_admin" {
  metadata {
    name      = "grafana-admin"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }

  data = {
    admin-user     = "admin"
    admin-password = random_password.grafana_admin.result
  }
}

# The dashboards live as JSON next to this file; Grafana's sidecar loads every ConfigMap labelled
# grafana_dashboard=1.
resource "kubernetes_config_map_v1" "dashboard" {
  for_each = fileset("${path.module}/dashboards", "*.json")

  metadata {
    name      = "grafana-dashboard-${trimsuffix(each.value, ".json")}"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = { grafana_dashboard = "1" }
  }

  data = {
    (each.value) = file("${path.module}/dashboards/${each.value}")
  }
}

resource "helm_release" "kube_prometheus_stack" {
  name       = local.release
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = var.chart_version

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        retention = var.prometheus_retention
        # Scrape every ServiceMonitor in the cluster (Triton's lives in its own namespace).
        serviceMonitorSelectorNilUsesHelmValues = false
        podMonitorSelectorNilUsesHelmValues     = false
        storageSpec = {
          volumeClaimTemplate = {
            spec = {
              accessModes = ["ReadWriteOnce"]
              resources   = { requests = { storage = var.prometheus_storage_size } }
            }
          }
        }
      }
    }
    grafana = {
      admin = {
        existingSecret = kubernetes_secret_v1.grafana_admin.metadata[0].name
        userKey        = "admin-user"
        passwordKey    = "admin-password"
      }
      persistence = { enabled = true, size = "10Gi" }
      sidecar = {
        dashboards = { enabled = true, label = "grafana_dashboard", labelValue = "1", searchNamespace = local.namespace }
      }
      extraSecretMounts = [{
        name       = "lmforge-database"
        secretName = module.database_credentials.secret_name
        mountPath  = local.db_secret_mount
        readOnly   = true
      }]
      # Training metrics are rows in the metadata store (step_metrics), read with SQL.
      additionalDataSources = [{
        name     = "lmforge-metadata"
        uid      = "lmforge-metadata"
        type     = "grafana-postgresql-datasource"
        url      = "${var.database.address}:${var.database.port}"
        user     = var.database.username
        editable = false
        jsonData = {
          database        = var.database.name
          sslmode         = "require"
          postgresVersion = 1600
          maxOpenConns    = 5
        }
        secureJsonData = { password = "$__file{${local.db_secret_mount}/password}" }
      }]
    }
  })]
}
