"""The OpenAPI description of the named API tokens' authentication (registered by importing this module)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.tokens.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A named API token (hry_…) from /account/tokens/ or /api/v1/auth/tokens/; "
            "'Authorization: Bearer <token>' or 'Token <token>'.",
        }
