"""OpenAPI post-processing: every operation documents the API's one error shape for the 4xx it can answer.

Views document their success responses; the errors are the same everywhere (``labeling/api/errors.py``), so
they are added here once instead of on each view.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}

ERRORS = {
    "400": "Invalid input: the fields say what is wrong",
    "401": "Not authenticated",
    "403": "Not allowed for your role in this project",
    "404": "No such object, or one you can't see",
    "405": "Method not allowed",
    "409": "Conflicts with the object's current state",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "429": "Too many requests: try again after Retry-After seconds",
}


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    # An annotator's clip has exactly these fields; closing it keeps "oneOf [Clip, AnnotatorClip]" unambiguous.
    if "AnnotatorClip" in schemas:
        schemas["AnnotatorClip"]["additionalProperties"] = False
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": reference}}}
                )
    return result
