variable "name" {
  type        = string
  description = "Name prefix for every network resource, e.g. lmforge-prod."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "cidr_block" {
  type        = string
  description = "IPv4 CIDR of the VPC; split into one public and one private subnet per availability zone."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 20
    error_message = "cidr_block must be a valid IPv4 CIDR of /20 or larger (room for the private subnets of an EKS cluster)."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones to spread subnets over, named explicitly so the layout never changes when AWS adds a zone (EKS and multi-AZ RDS need at least 2)."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list 2 to 4 distinct zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
  default     = false
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days to keep VPC flow logs in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch retention value of at least one year (365, 400, 545, 731, ...)."
  }
}

variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster that will use the subnets; written into the subnet tags the load balancer controller discovers."
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to every resource."
  default     = {}
}
