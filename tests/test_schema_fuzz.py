"""Schema-driven fuzzing of the REST API with schemathesis (DESIGN.md §9, §12): 0 server errors, 0 schema mismatches.

Every operation of the OpenAPI document (the one ``/api/v1/schema/`` serves, built here by the same
drf-spectacular generator) is called in-process through the WSGI application, as a researcher and as an
annotator, with a bounded number of generated examples each: positive examples (valid by the schema, so they
get past validation into the services) and negative ones (invalid by the schema, which must be refused with a
4xx, never a 500). Checks on every response:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the schema documents for the operation;
- ``content_type_conformance``: the Content-Type is one the schema documents for that status;
- ``response_schema_conformance``: the JSON body validates against the documented schema.

Path parameters are pinned to a seeded world (``tests.test_permission_matrix.seed_world``: project ``alpha``
with clips, queries, a query leased to the annotator, a fresh judgment of theirs, a finished job, a ranking,
a preference set, a reward model with weights, a finished iteration and its policy), so requests reach the
real code instead of stopping at a 404. Each generated request runs in a savepoint that is rolled back, so
every example meets the same world (the judgment can be undone by every example, not only the first) and the
per-user throttles are reset before each call: a 429 after twenty rankings would say nothing about the schema.

Nothing is excluded. The binary downloads (reward-model weights, policy checkpoints, Parquet exports) are
fuzzed like the rest; schemathesis validates bodies only for JSON media types, so for them the checks come down
to status and Content-Type. Task sending is stubbed: no clip generation or training runs.

Examples are derandomized (the same inputs on every run) and not stored in a Hypothesis database, so a run in
``make test`` is reproducible; raise ``FUZZ_EXAMPLES`` locally to search harder.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labeling.invites import invite_token
from tests.conftest import PASSWORD
from tests.test_permission_matrix import FAST_HASHERS, RANKING_GROUPS, World, seed_world, stub_task_sending

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PERSONAS = ("researcher", "annotator")


def _openapi_document() -> dict[str, Any]:
    """The document /api/v1/schema/ serves (same generator, public view), as plain JSON."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated))


DOCUMENT = _openapi_document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
APP = get_wsgi_application()


def _path_values(world: World) -> dict[str, Any]:
    values = world.path_kwargs()
    values["token"] = str(values["token"])
    return values


# Positive bodies for these operations are made to fit the seeded world half of the time (the other half keeps
# what schemathesis generated): a random lease token, factor list, environment id or password is valid by the
# schema but never gets past the first check in the service, so the success paths would go untested.
BODY_FITTERS: dict[str, Any] = {
    "POST /api/v1/queries/{query_id}/judgments/": lambda body, world, persona: {
        **body,
        "lease": str(world.lease.token),
    },
    "POST /api/v1/projects/{slug}/rankings/": lambda body, world, persona: {
        **body,
        "groups": RANKING_GROUPS,
        "sigmas": {},
    },
    "POST /api/v1/projects/": lambda body, world, persona: {**body, "env_id": "Pendulum-v1", "env_kwargs": {}},
    "POST /api/v1/projects/{slug}/members/": lambda body, world, persona: {**body, "username": "otto"},
    "POST /api/v1/invites/accept/": lambda body, world, persona: {"token": invite_token(world.invite)},
    "POST /api/v1/auth/token/": lambda body, world, persona: {
        "username": world.users[persona].username,
        "password": PASSWORD,
    },
}


def _fit(operation, world: World, persona: str):
    fitter = BODY_FITTERS.get(operation.label)

    def fit(drawn):
        case, wanted = drawn
        if wanted and fitter is not None and isinstance(case.body, dict):
            case.body = fitter(case.body, world, persona)
        return case

    return fit


def _strategy(operation, world: World, persona: str):
    pinned = {name: value for name, value in _path_values(world).items() if name in _path_names(operation)}
    positive = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pinned)
    modes = [st.tuples(positive, st.booleans()).map(_fit(operation, world, persona))]
    if _can_negate(operation, pinned):
        modes.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=pinned))
    return st.one_of(modes)


def _enum_queries(operation) -> list[dict[str, Any]]:
    """One query per value of each enumerated query parameter (export formats): generated examples may miss one."""
    declared = DOCUMENT["paths"][operation.path][operation.method.lower()].get("parameters", [])
    return [
        {parameter["name"]: value}
        for parameter in declared
        if parameter.get("in") == "query"
        for value in parameter.get("schema", {}).get("enum", [])
    ]


def _path_names(operation) -> set[str]:
    return {parameter.name for parameter in operation.path_parameters}


def _can_negate(operation, pinned: dict[str, Any]) -> bool:
    """Negative examples need something left to make invalid: a body, a query parameter or an unpinned path one."""
    return bool(operation.body) or bool(list(operation.query)) or bool(_path_names(operation) - set(pinned))


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_survives_fuzzing_and_agrees_with_its_schema(label, persona, db, monkeypatch, settings_fixture):
    operation = OPERATIONS[label]
    stub_task_sending(monkeypatch)
    world = seed_world()
    token = Token.objects.get(user=world.users[persona]).key

    def send_and_check(case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Token {token}"}
        case.cookies = {}
        cache.clear()  # per-user throttles and login lock-outs start afresh for every example
        with transaction.atomic():
            response = case.call(app=APP)
            transaction.set_rollback(True)
        case.validate_response(response, checks=CHECKS)

    pinned = {name: value for name, value in _path_values(world).items() if name in _path_names(operation)}
    for query in _enum_queries(operation):
        send_and_check(operation.Case(path_parameters=pinned, query=query))

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, world, persona))
    def fuzz(case) -> None:
        send_and_check(case)

    fuzz()


@pytest.fixture
def settings_fixture(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    settings.MEDIA_SERVING = "django"
    # The WSGI handler closes "old" connections when a request starts and finishes; inside the test's transaction
    # (autocommit off) that would close it on PostgreSQL. Django's test client unhooks the same receiver.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield settings
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)
