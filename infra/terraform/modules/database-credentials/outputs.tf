output "secret_name" {
  description = "Name of the Kubernetes Secret holding the templated database credentials."
  value       = var.target_secret_name
}
