data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  arn_prefix = "arn:${local.partition}"

  # Statements the workloads combine. Object actions name "<bucket-arn>/*", listing names the
  # bucket ARN, key actions name the key ARN.
  storage = {
    list_raw_data = {
      sid       = "ListRawData"
      actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
      resources = [var.raw_data_bucket_arn]
      condition = null
    }
    read_raw_data = {
      sid       = "ReadRawData"
      actions   = ["s3:GetObject"]
      resources = ["${var.raw_data_bucket_arn}/*"]
      condition = null
    }
    list_artifacts = {
      sid       = "ListArtifacts"
      actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
      resources = [var.artifacts_bucket_arn]
      condition = null
    }
    read_write_artifacts = {
      sid       = "ReadWriteArtifacts"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = ["${var.artifacts_bucket_arn}/*"]
      condition = null
    }
    list_model_repository = {
      sid       = "ListModelRepository"
      actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
      resources = [var.model_repository_bucket_arn]
      condition = null
    }
    read_model_repository = {
      sid       = "ReadModelRepository"
      actions   = ["s3:GetObject"]
      resources = ["${var.model_repository_bucket_arn}/*"]
      condition = null
    }
    read_write_model_repository = {
      sid       = "ReadWriteModelRepository"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = ["${var.model_repository_bucket_arn}/*"]
      condition = null
    }
    decrypt = {
      sid       = "DecryptObjects"
      actions   = ["kms:Decrypt"]
      resources = [var.storage_kms_key_arn]
      condition = null
    }
    encrypt_decrypt = {
      sid       = "EncryptDecryptObjects"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.storage_kms_key_arn]
      condition = null
    }
  }

  read_database_secret = [
    {
      sid       = "ReadDatabaseSecret"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      resources = [var.database_secret_arn]
      condition = null
    },
    {
      sid       = "DecryptDatabaseSecret"
      actions   = ["kms:Decrypt"]
      resources = [var.database_kms_key_arn]
      condition = { test = "StringEquals", variable = "kms:ViaService", values = ["secretsmanager.${local.region}.amazonaws.com"] }
    },
  ]

  # One role per workload, each trusted by exactly one Kubernetes service account.
  workloads = {
    # Triton loads models from the model repository and nothing else.
    triton = {
      namespace       = var.namespaces.serving
      service_account = "triton"
      statements      = [local.storage.list_model_repository, local.storage.read_model_repository, local.storage.decrypt]
    }
    # Training jobs (GPU work pool) read data and read/write artifacts (datasets in, checkpoints out).
    training = {
      namespace       = var.namespaces.lmforge
      service_account = "lmforge-training"
      statements = [
        local.storage.list_raw_data, local.storage.read_raw_data, local.storage.list_artifacts, local.storage.read_write_artifacts,
        local.storage.encrypt_decrypt,
      ]
    }
    # The nightly flow (CPU work pool) also publishes exported models into the Triton repository.
    flow = {
      namespace       = var.namespaces.lmforge
      service_account = "lmforge-flow"
      statements = [
        local.storage.list_raw_data, local.storage.read_raw_data, local.storage.list_artifacts, local.storage.read_write_artifacts,
        local.storage.list_model_repository, local.storage.read_write_model_repository, local.storage.encrypt_decrypt,
      ]
    }
    # The database password reaches pods through External Secrets; each namespace that needs it
    # has its own reader role: the dashboard and Grafana read the database, Prefect runs on it,
    # the lmforge jobs record their runs in it.
    database-reader-dashboard = {
      namespace       = var.namespaces.dashboard
      service_account = "database-credentials"
      statements      = local.read_database_secret
    }
    database-reader-lmforge = {
      namespace       = var.namespaces.lmforge
      service_account = "database-credentials"
      statements      = local.read_database_secret
    }
    database-reader-prefect = {
      namespace       = var.namespaces.prefect
      service_account = "database-credentials"
      statements      = local.read_database_secret
    }
    database-reader-monitoring = {
      namespace       = var.namespaces.monitoring
      service_account = "database-credentials"
      statements      = local.read_database_secret
    }
    cluster-autoscaler = {
      namespace       = "kube-system"
      service_account = "cluster-autoscaler"
      statements      = local.cluster_autoscaler_statements
    }
    aws-load-balancer-controller = {
      namespace       = "kube-system"
      service_account = "aws-load-balancer-controller"
      statements      = local.load_balancer_controller_statements
    }
  }

  # The autoscaler may resize only this cluster's node groups (tagged by EKS), and read
  # descriptions, which AWS does not scope to resources.
  cluster_autoscaler_statements = [
    {
      sid = "DescribeScalingState"
      actions = [
        "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
        "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
      ]
      resources = ["*"]
      condition = null
    },
    {
      sid       = "ResizeOwnNodeGroups"
      actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
      resources = ["${local.arn_prefix}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/eks-*"]
      condition = { test = "StringEquals", variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}", values = ["owned"] }
    },
    {
      sid       = "DescribeOwnNodeGroups"
      actions   = ["eks:DescribeNodegroup"]
      resources = ["${local.arn_prefix}:eks:${local.region}:${local.account_id}:nodegroup/${var.cluster_name}/*/*"]
      condition = null
    },
  ]

  elb_arn = "${local.arn_prefix}:elasticloadbalancing:${local.region}:${local.account_id}"
  sg_arn  = "${local.arn_prefix}:ec2:${local.region}:${local.account_id}:security-group/*"

  # What the AWS Load Balancer Controller needs to run internet-facing ALBs for Ingresses
  # (WAF and Shield integrations are switched off in the addons module). Mutations are limited
  # to this account and region, and to load balancers and security groups the controller tagged.
  load_balancer_controller_statements = [
    {
      sid = "DescribeNetworkAndLoadBalancers"
      actions = [
        "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
        "ec2:DescribeCoipPools", "ec2:DescribeInstances", "ec2:DescribeInternetGateways",
        "ec2:DescribeIpamPools", "ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeTags",
        "ec2:DescribeVpcPeeringConnections", "ec2:DescribeVpcs", "ec2:GetCoipPoolUsage",
        "ec2:GetSecurityGroupsForVpc",
        "elasticloadbalancing:DescribeCapacityReservation", "elasticloadbalancing:DescribeListenerAttributes",
        "elasticloadbalancing:DescribeListenerCertificates", "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeSSLPolicies",
        "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeTrustStores",
        "acm:DescribeCertificate", "acm:ListCertificates",
      ]
      resources = ["*"]
      condition = null
    },
    {
      sid       = "ReadCognitoClientForAuthentication"
      actions   = ["cognito-idp:DescribeUserPoolClient"]
      resources = ["${local.arn_prefix}:cognito-idp:${local.region}:${local.account_id}:userpool/*"]
      condition = null
    },
    {
      sid       = "CreateLoadBalancerServiceLinkedRole"
      actions   = ["iam:CreateServiceLinkedRole"]
      resources = ["${local.arn_prefix}:iam::${local.account_id}:role/aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing"]
      condition = { test = "StringEquals", variable = "iam:AWSServiceName", values = ["elasticloadbalancing.amazonaws.com"] }
    },
    {
      sid       = "CreateSecurityGroupsInVpc"
      actions   = ["ec2:CreateSecurityGroup"]
      resources = ["${local.arn_prefix}:ec2:${local.region}:${local.account_id}:vpc/${var.vpc_id}", local.sg_arn]
      condition = null
    },
    {
      sid       = "TagSecurityGroupsOnCreate"
      actions   = ["ec2:CreateTags"]
      resources = [local.sg_arn]
      condition = { test = "StringEquals", variable = "ec2:CreateAction", values = ["CreateSecurityGroup"] }
    },
    {
      sid       = "ManageOwnSecurityGroups"
      actions   = ["ec2:CreateTags", "ec2:DeleteTags", "ec2:DeleteSecurityGroup"]
      resources = [local.sg_arn]
      condition = { test = "Null", variable = "aws:ResourceTag/elbv2.k8s.aws/cluster", values = ["false"] }
    },
    {
      # The controller opens the node security group to its load balancers; those groups are
      # not created by it, so this cannot be narrowed by tag.
      sid       = "OpenNodeSecurityGroupsToLoadBalancers"
      actions   = ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]
      resources = [local.sg_arn]
      condition = null
    },
    {
      sid       = "CreateTaggedLoadBalancers"
      actions   = ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"]
      resources = ["${local.elb_arn}:loadbalancer/app/*", "${local.elb_arn}:targetgroup/*"]
      condition = { test = "Null", variable = "aws:RequestTag/elbv2.k8s.aws/cluster", values = ["false"] }
    },
    {
      sid = "ManageListenersAndRules"
      actions = [
        "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DeleteRule", "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:ModifyListenerAttributes", "elasticloadbalancing:ModifyRule",
        "elasticloadbalancing:RemoveListenerCertificates",
      ]
      resources = [
        "${local.elb_arn}:loadbalancer/app/*", "${local.elb_arn}:listener/app/*", "${local.elb_arn}:listener-rule/app/*",
      ]
      condition = null
    },
    {
      sid     = "TagLoadBalancerResources"
      actions = ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]
      resources = [
        "${local.elb_arn}:loadbalancer/app/*", "${local.elb_arn}:targetgroup/*",
        "${local.elb_arn}:listener/app/*", "${local.elb_arn}:listener-rule/app/*",
      ]
      condition = null
    },
    {
      sid = "ManageOwnLoadBalancers"
      actions = [
        "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
        "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:SetIpAddressType",
        "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
      ]
      resources = ["${local.elb_arn}:loadbalancer/app/*", "${local.elb_arn}:targetgroup/*"]
      condition = { test = "Null", variable = "aws:ResourceTag/elbv2.k8s.aws/cluster", values = ["false"] }
    },
  ]
}

data "aws_iam_policy_document" "assume" {
  for_each = local.workloads

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "permissions" {
  for_each = local.workloads

  dynamic "statement" {
    for_each = each.value.statements
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources

      dynamic "condition" {
        for_each = statement.value.condition == null ? [] : [statement.value.condition]
        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_iam_role" "workload" {
  for_each = local.workloads

  name                 = "${var.name}-${each.key}"
  description          = "IRSA role of ${each.value.namespace}/${each.value.service_account}"
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "workload" {
  for_each = local.workloads

  name   = "least-privilege"
  role   = aws_iam_role.workload[each.key].id
  policy = data.aws_iam_policy_document.permissions[each.key].json
}
