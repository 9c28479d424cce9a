"""Settings section for the model kept current (``[model]`` in lmforge.toml, ``LMFORGE_MODEL__*``)."""

from pydantic import BaseModel, Field


class ModelSection(BaseModel):
    """Which model the nightly loop keeps current: the house network from scratch (no base), or a pretrained
    Llama-family checkpoint imported as the first production version."""

    base: str | None = Field(
        None, description="a Hugging Face Llama folder or a .gguf file: imported as the first production model "
                          "(and evaluated as the first champion); every night continues from production")
