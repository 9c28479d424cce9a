output "name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "certificate_authority_data" {
  description = "Base64 CA bundle of the API server, for the kubernetes and helm providers."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "security_group_id" {
  description = "Cluster security group EKS attaches to the control plane and the managed nodes; the database admits it."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for IRSA."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "OIDC issuer host and path (no https://), the prefix of the IRSA condition keys."
  value       = replace(aws_iam_openid_connect_provider.this.url, "https://", "")
}

output "node_group_names" {
  description = "Managed node group names by pool (cpu, gpu)."
  value       = { for pool, group in aws_eks_node_group.this : pool => group.node_group_name }
}

output "kubernetes_version" {
  description = "Kubernetes minor version of the control plane."
  value       = aws_eks_cluster.this.version
}
