output "namespace" {
  description = "Namespace of Prometheus and Grafana (reach Grafana with kubectl port-forward svc/kube-prometheus-stack-grafana 3000:80)."
  value       = local.namespace
}

output "grafana_admin_secret" {
  description = "Kubernetes Secret (in the monitoring namespace) holding Grafana's admin credentials."
  value       = kubernetes_secret_v1.grafana_admin.metadata[0].name
}

output "dashboards" {
  description = "Grafana dashboards provisioned from ./dashboards."
  value       = sort(keys(kubernetes_config_map_v1.dashboard))
}
