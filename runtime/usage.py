"""Token usage: the one model that providers report, events carry, the store keeps and the
API returns (`UsagePayload` and `UsageOut` are this model with their boundary's config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Token usage. `input_tokens` counts every input token, cached ones included;
    `cached_input_tokens` is the part of it served from a prompt cache."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, defer_build=True)

    input_tokens: int = Field(0, alias="inputTokens")
    output_tokens: int = Field(0, alias="outputTokens")
    cached_input_tokens: int = Field(0, alias="cachedInputTokens")
    reasoning_tokens: int = Field(0, alias="reasoningTokens")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )
