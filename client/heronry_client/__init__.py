"""heronry_client: a Python client for the Heronry REST API.

The learned reward outside the platform lives in :mod:`heronry_client.reward` (torch + safetensors),
:mod:`heronry_client.gym` (a Gymnasium wrapper) and :mod:`heronry_client.sb3` (an SB3 VecEnvWrapper); they are
not imported here, so the client itself needs only httpx and numpy.
"""

from .client import Client
from .errors import (
    ApiError,
    AuthenticationError,
    Conflict,
    HeronryError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestTooLarge,
    RunFailed,
    ServerError,
    TransportError,
    ValidationError,
    WaitTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "Conflict",
    "HeronryError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RequestTooLarge",
    "RunFailed",
    "ServerError",
    "TransportError",
    "ValidationError",
    "WaitTimeout",
    "__version__",
]
