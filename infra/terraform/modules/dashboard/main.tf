locals {
  namespace = var.service_account.namespace
  app       = "dashboard"
  port      = 8501
}

# --- TLS --------------------------------------------------------------------------------------

resource "aws_acm_certificate" "this" {
  domain_name       = var.hostname
  validation_method = "DNS"
  tags              = { Name = "${var.name}-dashboard" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "certificate_validation" {
  for_each = {
    for option in aws_acm_certificate.this.domain_validation_options : option.domain_name => option
  }

  zone_id = var.route53_zone_id
  name    = each.value.resource_record_name
  type    = each.value.resource_record_type
  records = [each.value.resource_record_value]
  ttl     = 300
}

resource "aws_acm_certificate_validation" "this" {
  certificate_arn         = aws_acm_certificate.this.arn
  validation_record_fqdns = [for record in aws_route53_record.certificate_validation : record.fqdn]
}

# --- authentication: the ALB sends every request through a Cognito login ----------------------

resource "aws_cognito_user_pool" "this" {
  name                     = "${var.name}-dashboard"
  deletion_protection      = "ACTIVE"
  mfa_configuration        = "ON"
  auto_verified_attributes = ["email"]
  username_attributes      = ["email"]

  # Reviewers are invited by an administrator; nobody can sign up.
  admin_create_user_config {
    allow_admin_create_user_only = true
  }

  software_token_mfa_configuration {
    enabled = true
  }

  password_policy {
    minimum_length                   = 14
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = true
    temporary_password_validity_days = 3
  }

  user_pool_add_ons {
    advanced_security_mode = "ENFORCED"
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }
}

resource "aws_cognito_user_pool_domain" "this" {
  domain       = "${var.name}-dashboard"
  user_pool_id = aws_cognito_user_pool.this.id
}

resource "aws_cognito_user_pool_client" "alb" {
  name                                 = "${var.name}-dashboard-alb"
  user_pool_id                         = aws_cognito_user_pool.this.id
  generate_secret                      = true
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = ["openid", "email"]
  callback_urls                        = ["https://${var.hostname}/oauth2/idpresponse"]
  supported_identity_providers         = ["COGNITO"]
  prevent_user_existence_errors        = "ENABLED"
}

# --- the app ----------------------------------------------------------------------------------

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = local.namespace
  }
}

module "database_credentials" {
  source = "../database-credentials"

  namespace          = kubernetes_namespace_v1.this.metadata[0].name
  service_account    = var.service_account
  region             = var.region
  secret_arn         = var.database.secret_arn
  target_secret_name = "dashboard-database"
  keys = {
    PGPASSWORD = "{{ .password }}"
  }
}

resource "kubernetes_deployment_v1" "this" {
  metadata {
    name      = local.app
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = { "app.kubernetes.io/name" = local.app }
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = { "app.kubernetes.io/name" = local.app }
    }

    template {
      metadata {
        labels = { "app.kubernetes.io/name" = local.app }
      }

      spec {
        # The dashboard talks to PostgreSQL only; it needs no Kubernetes or AWS API token.
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          #checkov:skip=CKV_K8S_14:The tag comes from var.lmforge_image, whose validation rejects a missing tag and latest; checkov cannot resolve the variable.
          #checkov:skip=CKV_K8S_43:The app image is pinned by an immutable ECR tag (the repository rejects tag overwrites); the variable also accepts a digest.
          #checkov:skip=CKV_K8S_35:The app reads the database password from PGPASSWORD (libpq), synced from Secrets Manager; it is never written to a file or log.
          name              = local.app
          image             = var.lmforge_image
          image_pull_policy = "Always"
          command           = var.command

          port {
            name           = "http"
            container_port = local.port
          }

          env {
            name  = "LMFORGE_DATABASE_URL"
            value = var.database.url
          }
          env {
            name  = "HOME"
            value = "/tmp"
          }
          env {
            name = "PGPASSWORD"
            value_from {
              secret_key_ref {
                name = module.database_credentials.secret_name
                key  = "PGPASSWORD"
              }
            }
          }

          readiness_probe {
            http_get {
              path = "/_stcore/health"
              port = "http"
            }
            period_seconds = 10
          }
          liveness_probe {
            http_get {
              path = "/_stcore/health"
              port = "http"
            }
            initial_delay_seconds = 30
            period_seconds        = 20
          }

          resources {
            requests = { cpu = "250m", memory = "512Mi" }
            limits   = { cpu = "1", memory = "1Gi" }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "this" {
  metadata {
    name      = local.app
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }

  spec {
    type     = "ClusterIP"
    selector = { "app.kubernetes.io/name" = local.app }

    port {
      name        = "http"
      port        = local.port
      target_port = "http"
    }
  }
}

# An internet-facing ALB: HTTPS only (HTTP redirects), TLS 1.2+ with the ACM certificate,
# Cognito login before any request reaches Streamlit, limited to allowed_cidrs.
resource "kubernetes_ingress_v1" "this" {
  metadata {
    name      = local.app
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    annotations = {
      "alb.ingress.kubernetes.io/scheme"           = "internet-facing"
      "alb.ingress.kubernetes.io/target-type"      = "ip"
      "alb.ingress.kubernetes.io/listen-ports"     = jsonencode([{ HTTP = 80 }, { HTTPS = 443 }])
      "alb.ingress.kubernetes.io/ssl-redirect"     = "443"
      "alb.ingress.kubernetes.io/certificate-arn"  = aws_acm_certificate_validation.this.certificate_arn
      "alb.ingress.kubernetes.io/ssl-policy"       = "ELBSecurityPolicy-TLS13-1-2-2021-06"
      "alb.ingress.kubernetes.io/inbound-cidrs"    = join(",", var.allowed_cidrs)
      "alb.ingress.kubernetes.io/healthcheck-path" = "/_stcore/health"
      "alb.ingress.kubernetes.io/load-balancer-attributes" = join(",", [
        "routing.http.drop_invalid_header_fields.enabled=true",
        "idle_timeout.timeout_seconds=3600", # Streamlit keeps a websocket open per session
      ])
      "alb.ingress.kubernetes.io/auth-type" = "cognito"
      "alb.ingress.kubernetes.io/auth-idp-cognito" = jsonencode({
        userPoolARN      = aws_cognito_user_pool.this.arn
        userPoolClientID = aws_cognito_user_pool_client.alb.id
        userPoolDomain   = aws_cognito_user_pool_domain.this.domain
      })
      "alb.ingress.kubernetes.io/auth-on-unauthenticated-request" = "authenticate"
      "alb.ingress.kubernetes.io/auth-scope"                      = "openid email"
      "alb.ingress.kubernetes.io/auth-session-timeout"            = "28800"
    }
  }

  spec {
    ingress_class_name = "alb"

    rule {
      host = var.hostname
      http {
        path {
          path      = "/"
          path_type = "Prefix"
          backend {
            service {
              name = kubernetes_service_v1.this.metadata[0].name
              port {
                name = "http"
              }
            }
          }
        }
      }
    }
  }

  wait_for_load_balancer = true
}

resource "aws_route53_record" "dashboard" {
  zone_id = var.route53_zone_id
  name    = var.hostname
  type    = "CNAME"
  ttl     = 300
  records = [kubernetes_ingress_v1.this.status[0].load_balancer[0].ingress[0].hostname]
}
