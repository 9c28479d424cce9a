"""Who is using the dashboard: a reviewer logged in with a password (argon2id hashes in the settings), or an
identity set by an authenticating proxy in a trusted header. Logins, failures and lockouts are audited.

Failed logins are rate-limited per (name, client address) and per client address, never globally: a stranger
who guesses wrong locks out only their own address, not a reviewer who signs in from elsewhere. The client
address is the connection's peer, or, when that peer is a configured trusted proxy, the address the proxy
forwarded (``X-Forwarded-For``). When no address can be told (no request, as under AppTest, or a browser on
this host with no trusted proxy configured), the limit is per name alone."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping

import streamlit as st

from dashboard.context import Context
from lmforge_core.config.dashboard import DashboardConfig
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.passwords import hash_password, verify_password

SESSION_KEY = "lmforge_reviewer"
FORWARDED_FOR = "x-forwarded-for"
# the peer of a request from this host: Streamlit hides loopback peers (``st.context.ip_address`` is None)
_LOOPBACK = "127.0.0.1"
# verified against when the name is unknown, so a wrong name costs as long as a wrong password
_DUMMY_HASH = hash_password("not-a-reviewer-password")


class LoginLimiter:
    """At most ``max_failures`` failed logins per key within ``window_s``; then the key waits out the window."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after(self, keys: list[str]) -> float:
        """Seconds until a login under any of ``keys`` is allowed again (0: allowed now)."""
        now = time.monotonic()
        with self._lock:
            waits = [times[0] + self.window_s - now for key in keys
                     if len(times := self._recent(key, now)) >= self.max_failures]
        return max(waits, default=0.0)

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


@st.cache_resource(show_spinner=False)
def limiter(max_failures: int, window_s: int) -> LoginLimiter:
    """One limiter per process, shared by every browser session (a new tab does not reset it)."""
    return LoginLimiter(max_failures, window_s)


def check_password(config: DashboardConfig, name: str, password: str) -> str | None:
    """The reviewer's name when ``password`` is theirs, else None (same cost for unknown names)."""
    reviewer = next((r for r in config.reviewers if r.name == name), None)
    if reviewer is None:
        verify_password(_DUMMY_HASH, password)
        return None
    return reviewer.name if verify_password(reviewer.password_hash, password) else None


def identity_from_headers(config: DashboardConfig, headers: Mapping[str, str]) -> str | None:
    """The proxy-authenticated identity, when a trusted header is configured, present and allowed."""
    if config.identity_header is None:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    identity = (lowered.get(config.identity_header) or "").strip()
    if not identity or len(identity) > 128 or not identity.isprintable():
        return None
    if config.header_reviewers and identity not in config.header_reviewers:
        return None
    return identity


def current_user(ctx: Context) -> str | None:
    from_header = identity_from_headers(ctx.settings.dashboard, dict(st.context.headers))
    return from_header or st.session_state.get(SESSION_KEY)


def _printable(name: str) -> str:
    clean = "".join(ch for ch in name.strip() if ch.isprintable())[:64]
    return clean or "(empty name)"


def _audit(ctx: Context, actor: str, action: str, **details: object) -> None:
    with ctx.runtime.metadata.session() as session:
        reviews.record_audit(session, actor=actor, action=action, source="dashboard", details=details)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(config: DashboardConfig, peer: str | None, headers: Mapping[str, str]) -> str | None:
    """The address a login is attributed to: ``peer`` (the connection's), or, when ``peer`` is a trusted
    proxy, the nearest address in ``X-Forwarded-For`` that is not one (the ones further left could be made
    up by the client). None when it cannot be told: no peer, or a loopback address that is no trusted proxy
    (every browser on this host, and every client of an unconfigured proxy here, would share it)."""
    address = _address(peer) if peer else None
    if address is None:
        return None
    trusted = config.trusted_proxies
    if any(address in net for net in trusted):
        lowered = {k.lower(): v for k, v in headers.items()}
        for hop in reversed((lowered.get(FORWARDED_FOR) or "").split(",")):
            forwarded = _address(hop)
            if forwarded is None:  # a malformed hop: what lies beyond it cannot be trusted, stop at the last proxy
                break
            address = forwarded
            if not any(address in net for net in trusted):
                break
    return None if address.is_loopback and not any(address in net for net in trusted) else str(address)


def limit_keys(name: str, client: str | None) -> list[str]:
    """Limiter keys of a login: per (name, client) and per client; per name alone when the client is unknown."""
    user = name.strip().lower()
    return [f"name:{user}"] if client is None else [f"name:{user}@{client}", f"client:{client}"]


def attempt_login(ctx: Context, name: str, password: str, client: str | None) -> tuple[bool, str]:
    """Check a login against the limiter and the reviewer list; audits the outcome. Returns (ok, message)."""
    config = ctx.settings.dashboard
    keys = limit_keys(name, client)
    gate = limiter(config.max_failed_logins, config.login_window_s)
    wait = gate.retry_after(keys)
    if wait > 0:
        _audit(ctx, _printable(name), "login.locked", client=client)
        return False, f"Too many failed logins; try again in {int(wait) + 1} s."
    user = check_password(config, name.strip(), password)
    if user is None:
        gate.failed(keys)
        _audit(ctx, _printable(name), "login.failed", client=client)
        return False, "Unknown reviewer or wrong password."
    gate.succeeded(keys)
    st.session_state[SESSION_KEY] = user
    _audit(ctx, user, "login", client=client)
    return True, f"Signed in as {user}."


def _client_address(config: DashboardConfig) -> str | None:
    """This browser's address (see :func:`client_address`); None when Streamlit has no request (AppTest)."""
    headers = dict(st.context.headers)
    peer = st.context.ip_address
    if not (isinstance(peer, str) and peer):
        peer = _LOOPBACK if headers else None
    return client_address(config, peer, headers)


def sidebar(ctx: Context) -> str | None:
    """The sign-in box of the sidebar; returns the current reviewer (None: reading only)."""
    user = current_user(ctx)
    with st.sidebar:
        if user is not None:
            st.caption(f"Signed in as **{user}**")
            if st.session_state.get(SESSION_KEY) and st.button("Sign out", key="logout"):
                _audit(ctx, user, "logout")
                del st.session_state[SESSION_KEY]
                st.rerun()
            return user
        if not ctx.settings.dashboard.reviewers:
            st.caption("Reading only: no reviewers are configured (see README, dashboard access).")
            return None
        with st.form("login", clear_on_submit=True):
            name = st.text_input("Reviewer", key="login_name")
            password = st.text_input("Password", type="password", key="login_password")
            submitted = st.form_submit_button("Sign in", key="login_submit")
        if submitted:
            ok, message = attempt_login(ctx, name, password, _client_address(ctx.settings.dashboard))
            (st.success if ok else st.error)(message)
            if ok:
                st.rerun()
    return None
