output "storage_class_name" {
  description = "Default StorageClass (encrypted gp3)."
  value       = kubernetes_storage_class_v1.gp3.metadata[0].name
}

output "external_secrets_release" {
  description = "Release of the External Secrets Operator; modules that create ExternalSecrets depend on it."
  value       = helm_release.external_secrets.name
}

output "ingress_class_name" {
  description = "IngressClass served by the AWS Load Balancer Controller."
  value       = "alb"
}
