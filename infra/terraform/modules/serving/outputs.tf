output "http_url" {
  description = "In-cluster HTTP/REST endpoint of Triton (KServe v2 protocol) for the inference client."
  value       = "http://${local.service}.${local.namespace}.svc.cluster.local:8000"
}

output "grpc_url" {
  description = "In-cluster gRPC endpoint of Triton (host:port)."
  value       = "${local.service}.${local.namespace}.svc.cluster.local:8001"
}

output "metrics_url" {
  description = "In-cluster Prometheus metrics endpoint of Triton."
  value       = "http://${local.service}.${local.namespace}.svc.cluster.local:8002/metrics"
}
