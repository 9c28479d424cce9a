resource "helm_release" "this" {
  name      = var.target_secret_name
  namespace = var.namespace
  chart     = "${path.module}/chart"

  values = [yamlencode({
    serviceAccountName = var.service_account.service_account
    roleArn            = var.service_account.role_arn
    region             = var.region
    secretArn          = var.secret_arn
    targetSecretName   = var.target_secret_name
    data               = var.keys
  })]
}
