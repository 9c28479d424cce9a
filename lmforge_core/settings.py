"""The one settings object, built from ``LMFORGE_*`` variables and an optional ``lmforge.toml``.

Read once by a face (CLI, flow, dashboard) and passed down; no other module reads the environment.
Precedence, highest first: explicit overrides, environment variables, ``lmforge.toml``, defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lmforge_core.config.dashboard import DashboardConfig
from lmforge_core.config.data import DataConfig
from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.config.model import ModelSection
from lmforge_core.config.orchestration import OrchestrationConfig
from lmforge_core.config.serving import ServingConfig
from lmforge_core.config.train import TrainConfig
from lmforge_core.redact import mask_secrets

DEFAULT_CONFIG_FILE = Path("lmforge.toml")


class SettingsFileError(ValueError):
    """The lmforge.toml in effect cannot be read; the message names the file."""


class Settings(BaseSettings):
    """Everything lmforge needs to know about where it runs.

    The embedded defaults need no server: a workspace folder holding a SQLite metadata database
    and an artifact folder.
    """

    model_config = SettingsConfigDict(
        env_prefix="LMFORGE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    config_file: Path | None = Field(
        default=None, description="lmforge.toml that was read, if any (informational)."
    )
    workspace: Path = Field(default=Path(".lmforge"), description="Local working folder.")
    database_url: str = Field(
        default="",
        repr=False,  # may hold a password: never in repr() or logs; print masked() instead
        description="SQLAlchemy URL of the metadata store; empty means SQLite in the workspace.",
    )
    artifact_uri: str = Field(
        default="",
        description="Folder path or s3://bucket/prefix for artifacts; empty means <workspace>/artifacts.",
    )
    model_name: str = Field(default="lmforge", description="Registered model name.")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        if not value or not all(ch.isalnum() or ch in "-_" for ch in value) or len(value) > 64:
            raise ValueError("model_name must be 1-64 characters of letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        self.workspace = self.workspace.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.workspace / 'metadata.db'}"
        if not self.artifact_uri:
            self.artifact_uri = str(self.workspace / "artifacts")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _config_file_in_effect(init_settings)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every credential masked, safe to print or log."""
        return mask_secrets(self.model_dump(mode="json"))


def _config_file_in_effect(init_settings: PydanticBaseSettingsSource) -> Path | None:
    explicit = init_settings().get("config_file")
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the settings once: overrides > LMFORGE_* environment > lmforge.toml > defaults.

    ``config_file`` defaults to ``$LMFORGE_CONFIG`` or ``./lmforge.toml`` when present.
    """
    if config_file is None:
        config_file = os.environ.get("LMFORGE_CONFIG") or os.environ.get("LMFORGE_CONFIG_FILE") or None
    if config_file is None and DEFAULT_CONFIG_FILE.is_file():
        config_file = DEFAULT_CONFIG_FILE
    if config_file is not None:
        overrides["config_file"] = Path(config_file)
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsFileError(f"config file {config_file} is not valid TOML: {exc}") from exc
