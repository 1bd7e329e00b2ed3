"""Answers shared by several resources: the error shape and the start of an operation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorAnswer(BaseModel):
    """Every error: a code, a sentence naming the field and what is wrong, and the field."""

    model_config = ConfigDict(title="Error")

    error: str = Field(description="machine-readable code, e.g. invalid_request, not_found")
    message: str
    field: str | None = Field(description="the field, header or setting at fault, if any")


class OperationStarted(BaseModel):
    """``202``: the change was checked and runs in the background; follow the operation."""

    operation_id: str = Field(pattern=r"^op_")
