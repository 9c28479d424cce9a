output "prefect_api_url" {
  description = "In-cluster PREFECT_API_URL of the Prefect server (reach the UI with kubectl port-forward svc/prefect-server 4200)."
  value       = local.prefect_api_url
}

output "work_pools" {
  description = "Prefect work pools served by the Kubernetes workers: lmforge-cpu (nightly flow) and lmforge-gpu (training, GPU job template)."
  value       = keys(local.job_templates)
}
