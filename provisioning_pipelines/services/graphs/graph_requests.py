"""What a customer may ask for in a graph: its name, description, tags, schema and entity.

Parsed and refused when the customer asks (422 naming the field), before anyone pays; the
graph flow reads the same request back from the subscription's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.graphs import custom_schemas, schemas
from provisioning_pipelines.storage.ladybug import node_properties

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_ENTITY_PROPERTIES = 50
MAX_ENTITY_TEXT = 1000
#: What a graph request holds (``to_dict``).
_FIELDS = ("name", "description", "tags", "schema_extensions", "entity", "custom_schema")


@dataclass(frozen=True)
class GraphRequest:
    """What a customer asked for, validated; kept in the subscription's metadata as ``graph``.

    Everything provisioning would refuse is refused here, when the customer asks (422 naming
    the field), so nobody pays for a graph that cannot be built.
    """

    name: str
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    schema_extensions: list[str] = field(default_factory=list)
    entity: dict[str, Any] | None = None
    custom_schema: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: Any, *, prefix: str = "graph", recorded: bool = False
              ) -> GraphRequest:
        """``recorded``: read back from a paid subscription, asked for before the entity's
        properties were checked against the Entity node (those the node lacks are left out of
        its first node, as then), so a paid graph is still made."""
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"{prefix}: expected an object with at least a name, got "
                                 f"{validation.type_name(data)}", field=prefix)
        unknown = sorted(str(key) for key in data if key not in _FIELDS)
        if unknown:  # a misspelt field is named, not ignored
            raise InvalidRequest(f"{prefix}.{unknown[0][:64]}: unknown field; a graph takes "
                                 f"{', '.join(_FIELDS)}", field=f"{prefix}.{unknown[0][:64]}")
        name = validation.text(data.get("name"), f"{prefix}.name", max_length=MAX_NAME_LENGTH)
        if not name or not name.strip():
            raise InvalidRequest(f"{prefix}.name: must not be empty", field=f"{prefix}.name")
        description = validation.text(data.get("description"), f"{prefix}.description",
                                      max_length=MAX_DESCRIPTION_LENGTH, multiline=True,
                                      required=False)
        tags = _string_list(data.get("tags"), f"{prefix}.tags", limit=MAX_TAGS)
        extensions = _string_list(data.get("schema_extensions"), f"{prefix}.schema_extensions")
        entity = _entity(data.get("entity"), f"{prefix}.entity")
        custom = data.get("custom_schema")
        if custom is not None and not isinstance(custom, Mapping):
            raise InvalidRequest(f"{prefix}.custom_schema: expected an object, got "
                                 f"{validation.type_name(custom)}",
                                 field=f"{prefix}.custom_schema")
        if custom is not None and (extensions or entity):
            raise InvalidRequest(
                f"{prefix}.custom_schema: a custom schema replaces the base schema, so it "
                "takes neither schema_extensions nor an entity",
                field=f"{prefix}.custom_schema",
            )
        request = cls(name=name.strip(), description=description, tags=tags,
                      schema_extensions=extensions, entity=entity,
                      custom_schema=dict(custom) if custom is not None else None)
        try:  # validates extensions or the custom schema now, before anything is made
            ddl = request.ddl()
        except InvalidRequest as exc:  # name the field by its path in the request
            raise InvalidRequest(f"{prefix}.{exc.message}",
                                 field=f"{prefix}.{exc.field or 'schema'}") from None
        if entity and not recorded:  # the Entity node's properties: none dropped on the way
            known = node_properties(ddl, "Entity")
            for key in entity:
                if key not in known:
                    path = f"{prefix}.entity.{key}"
                    raise InvalidRequest(f"{path}: the Entity node has no such property; it "
                                         f"has {', '.join(known)}", field=path)
        return request

    @property
    def graph_type(self) -> str:
        return "entity" if self.entity else "generic"

    def ddl(self) -> list[str]:
        if self.custom_schema is not None:
            return custom_schemas.custom_schema_ddl(self.custom_schema)
        return schemas.schema_ddl(self.schema_extensions)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags,
                "schema_extensions": self.schema_extensions, "entity": self.entity,
                "custom_schema": self.custom_schema}


def _string_list(value: Any, field_name: str, *, limit: int = 100) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{field_name}: expected a list of strings, got "
                             f"{validation.type_name(value)}", field=field_name)
    if len(value) > limit:
        raise InvalidRequest(f"{field_name}: at most {limit} items", field=field_name)
    items = [validation.text(item, f"{field_name}[{index}]", max_length=MAX_TAG_LENGTH)
             for index, item in enumerate(value)]
    return list(dict.fromkeys(item for item in items if item is not None))


def _entity(value: Any, field_name: str) -> dict[str, Any] | None:
    """The entity a graph is about: a name and a few plain properties the Entity node keeps."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field_name}: expected an object with a name, got "
                             f"{validation.type_name(value)}", field=field_name)
    if len(value) > MAX_ENTITY_PROPERTIES:
        raise InvalidRequest(f"{field_name}: at most {MAX_ENTITY_PROPERTIES} properties",
                             field=field_name)
    entity: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{field_name}.{validation.text(key, field_name, max_length=64)}"
        if isinstance(item, str):
            validation.text(item, path, max_length=MAX_ENTITY_TEXT, multiline=True)
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**63:
                raise InvalidRequest(f"{path}: out of the 64-bit integer range", field=path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRequest(f"{path}: not a finite number", field=path)
        else:
            raise InvalidRequest(f"{path}: expected a string, number or boolean, got "
                                 f"{validation.type_name(item)}", field=path)
        entity[key] = item
    name = entity.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"{field_name}.name: required, a non-empty string",
                             field=f"{field_name}.name")
    return entity
