output "url" {
  description = "Public URL of the dashboard (Cognito login, TLS)."
  value       = "https://${var.hostname}"
}

output "cognito_user_pool_id" {
  description = "Cognito user pool of the dashboard's users; invite reviewers with aws cognito-idp admin-create-user."
  value       = aws_cognito_user_pool.this.id
}
