"""Settings section of the review dashboard (``LMFORGE_DASHBOARD__*``, ``[dashboard]`` in lmforge.toml).

Reviewers are authenticated one of two ways (both may be on):
- a reviewer list with salted argon2id password hashes (``lmforge dashboard-password`` makes one);
- an identity header set by an authenticating proxy (the ALB with Cognito of the Terraform dashboard
  module sets ``x-amzn-oidc-identity``). Only turn this on when the dashboard is reachable solely through
  that proxy: anyone who can reach the app directly could send the header.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, Field, field_validator

ARGON2_PREFIX = "$argon2id$"


class Reviewer(BaseModel):
    """One reviewer: a login name and the argon2id hash of their password (never the password)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password_hash: str = Field(repr=False)

    @field_validator("password_hash")
    @classmethod
    def _argon2_hash(cls, value: str) -> str:
        if not value.startswith(ARGON2_PREFIX):
            raise ValueError("password_hash must be an argon2id hash ($argon2id$...); "
                             "make one with `lmforge dashboard-password`")
        return value


class DashboardConfig(BaseModel):
    """Access rules and limits of the dashboard; every field has a default."""

    port: int = Field(8501, ge=1, le=65535, description="port of `lmforge dashboard`")
    address: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 behind a proxy)")
    login_required_to_read: bool = Field(False, description="also ask for a login before showing any page")
    reviewers: list[Reviewer] = Field(default_factory=list)
    identity_header: str | None = Field(
        None, description="header carrying the user name set by an authenticating proxy (None: not trusted)")
    header_reviewers: list[str] = Field(
        default_factory=list, description="identities from the header allowed to review; empty: any identity")
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=list,
        description="networks of the reverse proxies in front of the dashboard (e.g. 10.0.0.0/16, 127.0.0.1/32): "
                    "a connection from one is attributed to the client its X-Forwarded-For names")
    max_failed_logins: int = Field(
        5, ge=1, description="failed logins per name and client address (and per client address) within the window "
                             "before a lockout")
    login_window_s: int = Field(300, ge=1, description="window and lockout length of the failed-login limit")
    max_rows: int = Field(500, ge=10, le=100_000, description="bound of every list query of a page")

    @field_validator("identity_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or not all(ch.isalnum() or ch == "-" for ch in value)):
            raise ValueError("identity_header must be a header name of letters, digits and '-'")
        return value.lower() if value else None
