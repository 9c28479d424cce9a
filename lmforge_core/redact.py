"""Masking of credentials in URLs, messages and settings, so nothing secret reaches a log or a screen."""

from __future__ import annotations

import re
from typing import Any

# ``user:password@`` after a scheme, anywhere in free text. The password runs to the last '@' of its word: a
# password may hold '/', ':' and even an unencoded '@' (``bob:p@ss@db`` masks ``p@ss``, not ``p``). A nested
# scheme (``s3://http://user:pw@host``, how Triton names an S3 endpoint) is masked from the outer one on.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@")
# ``password=...`` and its kin in a query string or a message (``sslpassword``, ``aws_secret_access_key``...)
_SECRET_PARAM = re.compile(r"(?i)\b(\w*(?:password|secret|token|passfile)\w*)=([^&\s'\"]+)")
# settings keys whose string values are secrets whatever they look like
_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|credentials?|api_key|access_key)(_hash)?$")
# settings keys whose values are locations, which may be typed as ``user:password@host`` without a scheme
_LOCATION_KEY = re.compile(r"(?i)(url|uri|repository|endpoint|dsn)$")
MASK = "***"


def mask_text(text: str) -> str:
    """Mask every ``user:password@`` and ``password=...`` found inside free text (e.g. a driver's message)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_PARAM.sub(rf"\1={MASK}", text)


def mask_url(url: str) -> str:
    """Hide the password of a URL (in its user part or its query); a ``user:password@host`` typed without its
    scheme is hidden whole (nothing marks where its password ends)."""
    if "://" not in url:
        return MASK if "@" in url else mask_text(url)
    return mask_text(url)


def _masked_value(key: str, value: Any) -> Any:
    if isinstance(value, str) and value:
        if _SECRET_KEY.search(key):
            return MASK
        return mask_url(value) if _LOCATION_KEY.search(key) else mask_text(value)
    return mask_secrets(value)


def mask_secrets(data: Any) -> Any:
    """A copy of plain data (dicts, lists, strings: a settings dump) with every credential masked, so that a
    setting added later is masked without being listed here: the whole value of a key naming a secret
    (``password_hash``, ``token``...), a location (``*_url``, ``*_uri``, ``repository``...) as :func:`mask_url`
    masks it, and any other string as :func:`mask_text` does."""
    if isinstance(data, dict):
        return {key: _masked_value(str(key), value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [mask_secrets(value) for value in data]
    return mask_text(data) if isinstance(data, str) else data
