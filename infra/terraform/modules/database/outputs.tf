output "address" {
  description = "Private DNS name of the database endpoint."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the lmforge metadata database."
  value       = aws_db_instance.this.db_name
}

output "username" {
  description = "Master user name (its password lives only in Secrets Manager)."
  value       = aws_db_instance.this.username
}

output "database_url" {
  description = "LMFORGE_DATABASE_URL without a password; libpq takes the password from PGPASSWORD, filled from master_user_secret_arn."
  value       = "postgresql+psycopg://${aws_db_instance.this.username}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${aws_db_instance.this.db_name}?sslmode=require"
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret (JSON with username and password) that RDS manages and rotates."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "ARN of the key that encrypts the database and its secret; secret readers need kms:Decrypt on it."
  value       = module.key.key_arn
}

output "security_group_id" {
  description = "Security group attached to the database."
  value       = aws_security_group.this.id
}
