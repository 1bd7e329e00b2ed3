"""What several resources share: the error shape, the start of an operation, a page of a list
and the Idempotency-Key header."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from provisioning_pipelines.services.pages import DEFAULT_LIMIT, MAX_LIMIT


class ErrorAnswer(BaseModel):
    """Every error: a code, a sentence naming the field and what is wrong, and the field."""

    model_config = ConfigDict(title="Error")

    error: str = Field(description="machine-readable code, e.g. invalid_request, not_found")
    message: str
    field: str | None = Field(description="the field, header or setting at fault, if any")


class OperationStarted(BaseModel):
    """``202``: the change was checked and runs in the background; follow the operation."""

    operation_id: str = Field(pattern=r"^op_")


class Page(BaseModel):
    """A list's page: newest first, ``limit`` items after the ``cursor`` of the page before."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, max_length=512,
                               description="the previous answer's next_cursor (opaque)")


class IdempotencyKey(BaseModel):
    """A retry with the same key and request gets the first answer again, nothing done twice."""

    idempotency_key: str | None = Field(None, alias="Idempotency-Key",
                                        pattern=r"^[ -~]{1,255}$",
                                        description="1 to 255 printable ASCII characters")
