"""Masking of credentials in URLs and messages, so nothing secret reaches a log or a screen."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# ``user:password@`` inside free text; the password may hold '/' and other URL characters.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_SECRET_QUERY = {"password", "sslpassword", "secret", "token", "passfile"}
MASK = "***"


def mask_url(url: str) -> str:
    """Hide the password of a URL (in its user part or its query); when unparsable, hide it all."""
    if url.startswith("s3://") or ("://" not in url and "@" not in url):
        return _mask_generic(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return MASK if "@" in url or "password" in url.lower() else url
    secret_keys = {key: MASK for key in parsed.query if key.lower() in _SECRET_QUERY}
    if secret_keys:
        parsed = parsed.update_query_dict(secret_keys)
    return parsed.render_as_string(hide_password=True)


def _mask_generic(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def mask_text(text: str) -> str:
    """Mask every ``user:password@`` and ``password=...`` found inside free text (e.g. a driver's message)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return re.sub(r"(?i)\b(password|sslpassword|secret|token)=([^&\s'\"]+)", rf"\1={MASK}", text)
