output "service_accounts" {
  description = "For each workload: the namespace and service account its IRSA role trusts, and the role ARN to annotate the service account with (eks.amazonaws.com/role-arn)."
  value = {
    for workload, spec in local.workloads : workload => {
      namespace       = spec.namespace
      service_account = spec.service_account
      role_arn        = aws_iam_role.workload[workload].arn
    }
  }
}
