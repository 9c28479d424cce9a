"""Review actions through the dashboard (AppTest): refused without a login, approve/reject/promote/rollback
after signing in, each behind its confirmation, each audited; failed logins are rate-limited."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from seeding import APP, PASSWORD, REVIEWER, Platform
from streamlit.testing.v1 import AppTest

from dashboard import auth
from lmforge_core.config.dashboard import DashboardConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import ModelStatus, ReviewDecision
from tasks.review import apply_review


@pytest.fixture
def backend_url(tmp_path) -> str:
    """The actions are tested on both backends in tests/review; here the page on SQLite is enough."""
    return f"sqlite:///{tmp_path / 'ws' / 'metadata.db'}"


def review_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/review.py").run()
    return at


def sign_in(at: AppTest, password: str = PASSWORD, name: str = REVIEWER) -> AppTest:
    at.sidebar.text_input(key="login_name").input(name)
    at.sidebar.text_input(key="login_password").input(password)
    at.sidebar.button(key="login_submit").click()
    return at.run()


def audit_actions(platform: Platform) -> list[tuple[str, str]]:
    """Audit events newest first, without the seeded history's (the flow's promotions of v1 and v2)."""
    with platform.runtime.metadata.session() as s:
        return [(e.actor, e.action) for e in reviews.audit_events(s) if e.actor != "lmforge:flow"]


def production(platform: Platform) -> str | None:
    with platform.runtime.metadata.session() as s:
        model = repo.get_alias(s, "lmforge", "production")
        return model.label if model else None


def pending_id(platform: Platform) -> int:
    with platform.runtime.metadata.session() as s:
        [request] = reviews.pending_review_requests(s)
        return request.id


@pytest.mark.parametrize("button", ["approve", "reject", "promote", "rollback"])
def test_actions_without_login_are_refused_and_audited(seeded: Platform, button: str) -> None:
    before = 0
    if button == "promote":  # a version must be approved for the promote button to be offered
        apply_review(seeded.runtime, model_ref="v3", decision=ReviewDecision.APPROVE, reviewer="bob", comment="",
                     source="cli")
        before = 1
    at = review_page()
    key = f"{button}_{pending_id(seeded)}" if button in ("approve", "reject") else button
    at.button(key=key).click().run()
    assert not at.exception
    assert any("Only a signed-in reviewer" in e.value for e in at.error)
    assert production(seeded) == "lmforge:v2"
    assert audit_actions(seeded)[0] == ("anonymous", f"refused.{button}")
    assert len(audit_actions(seeded)) == before + 1
    with seeded.runtime.metadata.session() as s:
        assert len(reviews.pending_review_requests(s)) == 1 - before


def test_signed_in_reviewer_approves_after_confirming_and_production_moves(seeded: Platform) -> None:
    at = sign_in(review_page())
    assert any(f"Signed in as **{REVIEWER}**" in c.value for c in at.sidebar.caption)
    rid = pending_id(seeded)
    at.text_area(key=f"comment_{rid}").input("toxicity fine on the new probes")
    at.button(key=f"approve_{rid}").click().run()
    assert production(seeded) == "lmforge:v2", "nothing happens before the confirmation"
    assert any("Approve: lmforge:v3 and make it production" in w.value for w in at.warning)
    at.button(key="confirm_yes").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Production is now lmforge:v3 (was lmforge:v2)" in s.value for s in at.success)
    assert production(seeded) == "lmforge:v3"
    assert audit_actions(seeded) == [(REVIEWER, "model.promote"), (REVIEWER, "review.approve"), (REVIEWER, "login")]
    with seeded.runtime.metadata.session() as s:
        v3 = repo.resolve_model_version(s, "lmforge", "3")
        [review] = repo.reviews_for(s, v3.id)
        assert review.comment == "toxicity fine on the new probes" and review.reviewer == REVIEWER


def test_reject_records_and_cancel_changes_nothing(seeded: Platform) -> None:
    at = sign_in(review_page())
    rid = pending_id(seeded)
    at.button(key=f"reject_{rid}").click().run()
    at.button(key="confirm_no").click().run()
    with seeded.runtime.metadata.session() as s:
        assert len(reviews.pending_review_requests(s)) == 1
    at.button(key=f"reject_{rid}").click().run()
    at.button(key="confirm_yes").click().run()
    with seeded.runtime.metadata.session() as s:
        assert repo.resolve_model_version(s, "lmforge", "3").status is ModelStatus.REJECTED
        assert reviews.pending_review_requests(s) == []
    assert production(seeded) == "lmforge:v2"


def test_rollback_after_confirmation_restores_the_previous_version(seeded: Platform) -> None:
    at = sign_in(review_page())
    at.text_input(key="rollback_reason").input("latency regression")
    at.button(key="rollback").click().run()
    at.button(key="confirm_yes").click().run()
    assert not at.error, [e.value for e in at.error]
    assert production(seeded) == "lmforge:v1"
    assert audit_actions(seeded)[0] == (REVIEWER, "model.rollback")
    assert any("Rolled back: production is now lmforge:v1" in s.value for s in at.success)


def test_gate_rejected_model_is_not_offered_for_promotion(seeded: Platform) -> None:
    at = sign_in(review_page())
    options = at.selectbox(key="promote_choice").options if at.get("selectbox") else []
    assert "lmforge:v4" not in options


def test_wrong_passwords_lock_the_name_out_even_for_the_right_one(seeded: Platform,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_DASHBOARD__MAX_FAILED_LOGINS", "2")
    monkeypatch.setenv("LMFORGE_DASHBOARD__LOGIN_WINDOW_S", "120")
    at = review_page()
    for _ in range(2):
        sign_in(at, password="wrong password here")
        assert any("wrong password" in e.value for e in at.error)
    sign_in(at)
    assert any("Too many failed logins" in e.value for e in at.error)
    assert not any("Signed in as" in c.value for c in at.sidebar.caption)
    assert [a for _, a in audit_actions(seeded)] == ["login.locked", "login.failed", "login.failed"]


def test_login_limiter_window_expires() -> None:
    limiter = auth.LoginLimiter(max_failures=2, window_s=0.2)
    keys = ["name:ada"]
    limiter.failed(keys)
    assert limiter.retry_after(keys) == 0
    limiter.failed(keys)
    assert 0 < limiter.retry_after(keys) <= 0.2
    import time
    time.sleep(0.25)
    assert limiter.retry_after(keys) == 0


def test_identity_header_is_trusted_only_when_configured_and_allowed() -> None:
    off = DashboardConfig()
    assert auth.identity_from_headers(off, {"X-Amzn-Oidc-Identity": "ada"}) is None
    on = DashboardConfig(identity_header="X-Amzn-Oidc-Identity", header_reviewers=["ada"])
    assert auth.identity_from_headers(on, {"x-amzn-oidc-identity": "ada"}) == "ada"
    assert auth.identity_from_headers(on, {"x-amzn-oidc-identity": "mallory"}) is None
    assert auth.identity_from_headers(on, {"x-amzn-oidc-identity": "ada\n"}) == "ada"
    assert auth.identity_from_headers(on, {"x-amzn-oidc-identity": "a\x00b"}) is None
    assert auth.identity_from_headers(on, {}) is None


def test_password_check_uses_the_argon2_hash(reviewer_hash: str) -> None:
    config = DashboardConfig(reviewers=[{"name": REVIEWER, "password_hash": reviewer_hash}])
    assert auth.check_password(config, REVIEWER, PASSWORD) == REVIEWER
    assert auth.check_password(config, REVIEWER, PASSWORD + "x") is None
    assert auth.check_password(config, "bob", PASSWORD) is None
    with pytest.raises(ValueError, match="argon2id"):
        DashboardConfig(reviewers=[{"name": "bob", "password_hash": "plaintext"}])


def _quarantine_table(at: AppTest) -> pd.DataFrame:
    [table] = [d.value for d in at.dataframe if {"reason", "source"} <= set(d.value.columns)]
    return table


def test_quarantined_text_needs_a_login_and_is_shown_redacted(seeded: Platform) -> None:
    """A quarantine file written before excerpts were redacted still holds raw values: a visitor reads the reasons
    only; a reviewer reads the text, redacted as it is shown."""
    assert seeded.seeded is not None
    key = f"quarantine/batch-{seeded.seeded.quarantined_batch}/rejected.jsonl.gz"
    raw = "Refund to jane.doe@example.com on card 4111 1111 1111 1111."
    seeded.runtime.artifacts.put_bytes(key, gzip.compress(json.dumps(
        {"shard": "day.jsonl", "position": 1, "id": "d1", "source": "mail", "reason": "filter:word_count",
         "detail": None, "text": raw}).encode() + b"\n"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/data_quality.py").run()
    at.selectbox(key="dq_quarantine").select(
        next(o for o in at.selectbox(key="dq_quarantine").options if o.startswith(
            f"batch-{seeded.seeded.quarantined_batch} "))).run()
    visitor = _quarantine_table(at)
    assert "text" not in visitor.columns and list(visitor["source"]) == ["mail"]
    assert any("Sign in as a reviewer" in c.value for c in at.caption)
    assert "jane.doe" not in str([d.value.to_dict() for d in at.dataframe])
    sign_in(at)
    reviewer = _quarantine_table(at)
    assert list(reviewer["text"]) == ["Refund to <EMAIL> on card <CREDIT_CARD>."]


def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_forwarded() -> None:
    direct = DashboardConfig()
    forged = {"X-Forwarded-For": "198.51.100.2"}
    assert auth.client_address(direct, "203.0.113.7", forged) == "203.0.113.7"  # no proxy: the header is ignored
    assert auth.client_address(direct, "127.0.0.1", forged) is None  # every browser on this host: cannot tell
    assert auth.client_address(direct, None, {}) is None
    proxied = DashboardConfig(trusted_proxies=["10.0.0.0/8", "::1/128"])
    assert auth.client_address(proxied, "10.0.0.5", {"x-forwarded-for": "1.2.3.4, 10.0.0.9"}) == "1.2.3.4"
    assert auth.client_address(proxied, "10.0.0.5", {"X-Forwarded-For": "forged, 5.6.7.8"}) == "5.6.7.8"
    assert auth.client_address(proxied, "::1", {"X-Forwarded-For": "2001:db8::7"}) == "2001:db8::7"
    assert auth.client_address(proxied, "10.0.0.5", {"X-Forwarded-For": "5.6.7.8, not-an-address"}) == "10.0.0.5"
    assert auth.client_address(proxied, "10.0.0.5", {}) == "10.0.0.5"
    assert auth.client_address(proxied, "203.0.113.7", {"X-Forwarded-For": "1.2.3.4"}) == "203.0.113.7"
    with pytest.raises(ValueError, match="trusted_proxies"):
        DashboardConfig(trusted_proxies=["proxy.example"])


def test_limit_keys_are_per_name_and_client_never_one_shared_key() -> None:
    assert auth.limit_keys(" Ada ", "203.0.113.7") == ["name:ada@203.0.113.7", "client:203.0.113.7"]
    assert auth.limit_keys("ada", None) == ["name:ada"]
    limiter = auth.LoginLimiter(max_failures=2, window_s=60)
    for name in ("mallory", "mallory"):
        limiter.failed(auth.limit_keys(name, "203.0.113.7"))
    assert limiter.retry_after(auth.limit_keys("ada", "203.0.113.7")) > 0  # the stranger's own address
    assert limiter.retry_after(auth.limit_keys("ada", "198.51.100.2")) == 0
    assert limiter.retry_after(auth.limit_keys("ada", None)) == 0
