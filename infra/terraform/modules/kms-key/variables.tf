variable "alias" {
  type        = string
  description = "Alias of the key without the alias/ prefix, e.g. lmforge-prod-storage."

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]{1,250}$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias must be 1-250 characters of letters, digits, '/', '_' or '-' and not start with aws/."
  }
}

variable "description" {
  type        = string
  description = "What the key protects; shown in the KMS console."
}

variable "allow_cloudwatch_logs" {
  type        = bool
  description = "Let CloudWatch Logs in this region encrypt this account's log groups with the key (it calls KMS with its own service identity)."
  default     = false
}

variable "deletion_window_in_days" {
  type        = number
  description = "Waiting period before a scheduled key deletion takes effect."
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to the key."
  default     = {}
}
