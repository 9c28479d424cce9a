import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lmforge_core.redact import mask_secrets, mask_text, mask_url
from lmforge_core.settings import SettingsFileError, load_settings


def test_embedded_defaults_live_in_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.workspace == tmp_path / ".lmforge"
    assert settings.database_url == f"sqlite:///{tmp_path / '.lmforge' / 'metadata.db'}"
    assert settings.artifact_uri == str(tmp_path / ".lmforge" / "artifacts")


def test_environment_overrides_toml_and_toml_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmforge.toml").write_text('model_name = "from-toml"\nartifact_uri = "s3://bucket-a/x"\n')
    settings = load_settings()
    assert (settings.model_name, settings.artifact_uri) == ("from-toml", "s3://bucket-a/x")
    monkeypatch.setenv("LMFORGE_MODEL_NAME", "from-env")
    assert load_settings().model_name == "from-env"
    assert load_settings(model_name="explicit").model_name == "explicit"


def test_missing_explicit_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_settings(config_file=tmp_path / "nope.toml")


def test_invalid_model_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="model_name"):
        load_settings(model_name="../etc")


def test_unknown_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmforge.toml").write_text('databse_url = "typo"\n')
    with pytest.raises(ValidationError, match="databse_url"):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://bob:Zm9v/YmFy+cXV4@db:5432/meta",  # a base64 password holding '/'
        "bob:Zm9v/YmFy+cXV4@db/meta",  # typed without its scheme
        "postgresql+psycopg://bob@db/meta?password=Zm9v/YmFy+cXV4",  # libpq's query form
    ],
)
def test_every_password_form_is_masked(url: str) -> None:
    settings = load_settings(database_url=url)
    assert "Zm9v" not in str(settings.masked()) and "Zm9v" not in repr(settings)
    if "://" in url:  # free text can only be scanned for URLs that say they are URLs
        assert "Zm9v" not in mask_text(f"could not connect to {url}: refused")


def test_broken_toml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lmforge.toml").write_text("model_name = \n")
    with pytest.raises(SettingsFileError, match="lmforge.toml is not valid TOML"):
        load_settings()


def test_passwords_are_masked_everywhere() -> None:
    settings = load_settings(database_url="postgresql+psycopg://alice:s3cr3t@db.example:5432/meta")
    masked = settings.masked()
    assert "s3cr3t" not in str(masked)
    assert masked["database_url"] == "postgresql+psycopg://alice:***@db.example:5432/meta"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "hunter2" not in mask_text('failed for "postgresql://bob:hunter2@h/db": refused')


def test_a_password_holding_an_unencoded_at_sign_is_masked_whole() -> None:
    url = "postgresql+psycopg://bob:Qx7k@Zr9w@Vb2@db.example:5432/meta"
    assert mask_url(url) == "postgresql+psycopg://bob:***@db.example:5432/meta"
    assert mask_text(f"could not connect to {url}: refused") == \
        "could not connect to postgresql+psycopg://bob:***@db.example:5432/meta: refused"
    masked = load_settings(database_url=url).masked()
    assert not any(part in str(masked) for part in ("Qx7k", "Zr9w", "Vb2"))


@pytest.mark.parametrize("repository", [
    "s3://http://AKIAEXAMPLE:wJalrXUtnFEMI@127.0.0.1:9000/bucket/repo",  # Triton's form of an S3 endpoint
    "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/repo",
])
def test_every_setting_holding_credentials_is_masked_not_only_the_listed_ones(repository: str) -> None:
    settings = load_settings(serving={"repository": repository})
    masked = settings.masked()
    assert "wJalrXUtnFEMI" not in json.dumps(masked)
    assert masked["serving"]["repository"].endswith("***@" + repository.rsplit("@", 1)[1])


def test_masking_keeps_what_is_not_a_secret() -> None:
    masked = load_settings(dashboard={"header_reviewers": ["ada@example.org"], "identity_header": "x-user"}).masked()
    assert masked["dashboard"]["header_reviewers"] == ["ada@example.org"]
    assert masked["serving"]["max_tokens_limit"] == load_settings().serving.max_tokens_limit
    assert mask_secrets({"api_token": "abc", "nested": [{"sslpassword": "x"}], "count": 3}) == \
        {"api_token": "***", "nested": [{"sslpassword": "***"}], "count": 3}
