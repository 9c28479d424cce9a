locals {
  prefect_api_url = "http://prefect-server.${var.namespaces.prefect}.svc.cluster.local:4200/api"

  training = var.service_accounts["training"]
  flow     = var.service_accounts["flow"]

  # Environment every flow-run container gets; PGPASSWORD comes from the synced secret.
  app_env = [
    { name = "LMFORGE_DATABASE_URL", value = var.database.url },
    { name = "LMFORGE_ARTIFACT_URI", value = var.artifact_uri },
    { name = "LMFORGE_TRITON_URL", value = var.triton_url },
    { name = "AWS_REGION", value = var.region },
    { name = "HOME", value = "/tmp" },
  ]

  # Two work pools: the nightly flow runs on CPU nodes; training runs are submitted to the GPU
  # pool, whose job template asks for GPUs, tolerates the GPU taint and selects the GPU nodes.
  work_pools = {
    lmforge-gpu = {
      service_account = local.training.service_account
      resources = {
        requests = { cpu = var.gpu_job.cpu, memory = var.gpu_job.memory, "nvidia.com/gpu" = tostring(var.gpu_job.gpus) }
        limits   = { cpu = var.gpu_job.cpu, memory = var.gpu_job.memory, "nvidia.com/gpu" = tostring(var.gpu_job.gpus) }
      }
      node_selector = { "lmforge.io/node-pool" = "gpu" }
      tolerations   = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
    }
    lmforge-cpu = {
      service_account = local.flow.service_account
      resources = {
        requests = { cpu = var.cpu_job.cpu, memory = var.cpu_job.memory }
        limits   = { cpu = var.cpu_job.cpu, memory = var.cpu_job.memory }
      }
      node_selector = { "lmforge.io/node-pool" = "cpu" }
      tolerations   = []
    }
  }

  # Prefect Kubernetes worker base job template: job_configuration is rendered per flow run from
  # the variables below ("{{ name }}" placeholders are Prefect's, not Terraform's).
  job_templates = {
    for pool, spec in local.work_pools : pool => {
      job_configuration = {
        command                   = "{{ command }}"
        env                       = "{{ env }}"
        labels                    = "{{ labels }}"
        name                      = "{{ name }}"
        namespace                 = "{{ namespace }}"
        cluster_config            = "{{ cluster_config }}"
        job_watch_timeout_seconds = "{{ job_watch_timeout_seconds }}"
        pod_watch_timeout_seconds = "{{ pod_watch_timeout_seconds }}"
        stream_output             = "{{ stream_output }}"
        job_manifest = {
          apiVersion = "batch/v1"
          kind       = "Job"
          metadata   = { generateName = "{{ name }}-", labels = "{{ labels }}", namespace = "{{ namespace }}" }
          spec = {
            backoffLimit            = 0
            ttlSecondsAfterFinished = "{{ finished_job_ttl }}"
            template = {
              spec = {
                restartPolicy      = "Never"
                serviceAccountName = spec.service_account
                nodeSelector       = spec.node_selector
                tolerations        = spec.tolerations
                securityContext = {
                  runAsNonRoot   = true
                  seccompProfile = { type = "RuntimeDefault" }
                }
                containers = [{
                  name            = "prefect-job"
                  image           = "{{ image }}"
                  imagePullPolicy = "IfNotPresent"
                  args            = "{{ command }}"
                  env             = local.app_env
                  envFrom         = [{ secretRef = { name = module.lmforge_database_credentials.secret_name } }]
                  resources       = spec.resources
                  securityContext = {
                    allowPrivilegeEscalation = false
                    capabilities             = { drop = ["ALL"] }
                  }
                  volumeMounts = [{ name = "tmp", mountPath = "/tmp" }, { name = "shm", mountPath = "/dev/shm" }]
                }]
                volumes = [
                  { name = "tmp", emptyDir = {} },
                  # DeepSpeed/NCCL and data loaders use shared memory beyond the 64 MiB default.
                  { name = "shm", emptyDir = { medium = "Memory" } },
                ]
              }
            }
          }
        }
      }
      variables = {
        type = "object"
        properties = {
          name                      = { type = "string", description = "Name given to the Job." }
          command                   = { type = "string", description = "Command the container runs; Prefect fills it in." }
          env                       = { type = "object", description = "Extra environment variables.", additionalProperties = { type = "string" } }
          labels                    = { type = "object", description = "Labels added to the Job.", additionalProperties = { type = "string" } }
          namespace                 = { type = "string", default = var.namespaces.lmforge, description = "Namespace of the Job." }
          image                     = { type = "string", default = var.lmforge_image, description = "Image of the flow-run container." }
          cluster_config            = { type = "object", description = "Kubernetes cluster config; empty means in-cluster." }
          finished_job_ttl          = { type = "integer", default = 86400, description = "Seconds a finished Job is kept." }
          job_watch_timeout_seconds = { type = "integer", description = "Seconds to watch a Job before giving up; unset waits forever." }
          # A GPU node may first have to be started by the cluster autoscaler.
          pod_watch_timeout_seconds = { type = "integer", default = 900, description = "Seconds to wait for the pod to start." }
          stream_output             = { type = "boolean", default = true, description = "Stream the job's logs to the worker." }
        }
      }
    }
  }
}

resource "kubernetes_namespace_v1" "prefect" {
  metadata {
    name = var.namespaces.prefect
  }
}

resource "kubernetes_namespace_v1" "lmforge" {
  metadata {
    name = var.namespaces.lmforge
  }
}

# --- Prefect server on RDS --------------------------------------------------------------------

module "prefect_database_credentials" {
  source = "../database-credentials"

  namespace          = kubernetes_namespace_v1.prefect.metadata[0].name
  service_account    = var.service_accounts["database-reader-prefect"]
  region             = var.region
  secret_arn         = var.database.secret_arn
  target_secret_name = "prefect-database"
  keys = {
    # Read by the prefect-server chart; the password is URL-escaped into the connection string.
    connection-string = "postgresql+asyncpg://{{ .username }}:{{ .password | urlquery }}@${var.database.address}:${var.database.port}/${var.prefect_database_name}?ssl=require"
    PGPASSWORD        = "{{ .password }}"
  }
}

# Creates the Prefect database on the shared instance once; idempotent, so re-runs are harmless.
resource "kubernetes_job_v1" "create_prefect_database" {
  metadata {
    name      = "create-prefect-database"
    namespace = kubernetes_namespace_v1.prefect.metadata[0].name
  }

  spec {
    # Retries cover the minute External Secrets may need to create the credentials secret.
    backoff_limit = 6

    template {
      metadata {}
      spec {
        restart_policy                  = "Never"
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 70
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name    = "psql"
          image   = "postgres:16.6-alpine"
          command = ["/bin/sh", "-c"]
          args = [
            "psql -tAc \"SELECT 1 FROM pg_database WHERE datname = '${var.prefect_database_name}'\" | grep -q 1 || psql -c 'CREATE DATABASE ${var.prefect_database_name}'",
          ]
          image_pull_policy = "Always"

          env {
            name  = "PGHOST"
            value = var.database.address
          }
          env {
            name  = "PGPORT"
            value = tostring(var.database.port)
          }
          env {
            name  = "PGUSER"
            value = var.database.username
          }
          env {
            name  = "PGDATABASE"
            value = var.database.name
          }
          env {
            name  = "PGSSLMODE"
            value = "require"
          }
          env {
            name = "PGPASSWORD"
            value_from {
              secret_key_ref {
                name = module.prefect_database_credentials.secret_name
                key  = "PGPASSWORD"
              }
            }
          }

          resources {
            requests = { cpu = "50m", memory = "64Mi" }
            limits   = { cpu = "200m", memory = "128Mi" }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  wait_for_completion = true

  timeouts {
    create = "10m"
  }
}

resource "helm_release" "prefect_server" {
  name       = "prefect-server"
  namespace  = kubernetes_namespace_v1.prefect.metadata[0].name
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-server"
  version    = var.prefect_chart_version

  values = [yamlencode({
    server = {
      image = { repository = "prefecthq/prefect", prefectTag = var.prefect_image_tag }
      resources = {
        requests = { cpu = "500m", memory = "1Gi" }
        limits   = { cpu = "1", memory = "2Gi" }
      }
    }
    # External PostgreSQL: no bundled database, connection string from the synced secret.
    postgresql = { enabled = false }
    sqlite     = { enabled = false }
    secret     = { create = false, name = module.prefect_database_credentials.secret_name }
  })]

  depends_on = [kubernetes_job_v1.create_prefect_database]
}

# --- workers and the identities of the flow runs ----------------------------------------------

module "lmforge_database_credentials" {
  source = "../database-credentials"

  namespace          = kubernetes_namespace_v1.lmforge.metadata[0].name
  service_account    = var.service_accounts["database-reader-lmforge"]
  region             = var.region
  secret_arn         = var.database.secret_arn
  target_secret_name = "lmforge-database"
  keys = {
    PGPASSWORD = "{{ .password }}"
  }
}

resource "kubernetes_service_account_v1" "job" {
  for_each = { training = local.training, flow = local.flow }

  metadata {
    name        = each.value.service_account
    namespace   = kubernetes_namespace_v1.lmforge.metadata[0].name
    annotations = { "eks.amazonaws.com/role-arn" = each.value.role_arn }
  }
}

resource "helm_release" "prefect_worker" {
  for_each = local.job_templates

  name       = "prefect-worker-${each.key}"
  namespace  = kubernetes_namespace_v1.lmforge.metadata[0].name
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-worker"
  version    = var.prefect_chart_version

  values = [yamlencode({
    worker = {
      image     = { repository = "prefecthq/prefect", prefectTag = "${var.prefect_image_tag}-kubernetes" }
      apiConfig = "selfHostedServer"
      selfHostedServerApiConfig = {
        apiUrl = local.prefect_api_url
      }
      config = {
        workPool        = each.key
        type            = "kubernetes"
        baseJobTemplate = { configuration = jsonencode(each.value) }
      }
    }
  })]

  depends_on = [helm_release.prefect_server, kubernetes_service_account_v1.job]
}
