"""The OpenAPI document: it lists exactly the routes the app serves, is a valid OpenAPI 3.1
document, and every operation, fuzzed by schemathesis with the right keys, answers no 5xx
and only what the document says (status codes, content types, bodies, headers)."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dmp.access.apikeys import Scope, create_key
from dmp.membership import results, runs
from dmp.web import openapi
from dmp.web.openapi import documented_methods, is_ui, openapi_path
from dmp.web.segmentshapes import EXAMPLE
from tests.factories import apply_segments

PATH = "/api/v1/openapi.json"
# The fast paths answer before Flask; their rules in the URL map only make Flask answer 405.
FAST_PATHS = {("/p.gif", "get"), ("/api/v1/lookup", "get")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# /healthz answers its own JSON for 503 too: a balancer reads "status" (which a problem
# would make a number).
OWN_ERRORS = {("/healthz", "503")}
EXAMPLES = 25  # per operation and mode: 33 operations take about 30 s of one core


def _document(client: FlaskClient) -> dict[str, Any]:
    res = client.get(PATH)
    assert res.status_code == 200 and res.mimetype == "application/json"
    return res.get_json()


def _served(app: Flask) -> set[tuple[str, str]]:
    """Return (OpenAPI path, method) for every method of every API route of the URL map
    (the UI's pages, which take a login session, are held to it in tests/ui/test_login.py)."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if not is_ui(rule.rule)
        for method in documented_methods(rule)
    }


def test_the_document_lists_exactly_the_routes_served(client: FlaskClient) -> None:
    """Each (path, method) of the URL map, the fast paths included, is in the document and
    nothing else is: a new route without a declaration fails here."""
    listed = {
        (path, method) for path, item in _document(client)["paths"].items() for method in item
    }
    served = _served(client.application)
    assert FAST_PATHS <= served
    assert listed == served


def test_a_route_without_a_declaration_breaks_the_build(app: Flask) -> None:
    """A route added without ``describe`` makes the builder name it (it cannot slip by)."""
    app.add_url_rule("/undeclared", "undeclared", lambda: "")
    with pytest.raises(ValueError, match="/undeclared"):
        openapi.build_document(app)


def test_every_path_parameter_and_key_is_declared(client: FlaskClient) -> None:
    """Every {name} of a path is a declared path parameter, every security scheme named is
    defined, and every 4xx and 5xx is a problem+json (but the health check's own)."""
    doc = _document(client)
    schemes = set(doc["components"]["securitySchemes"])
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            wanted = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert declared == wanted, (path, method)
            for requirement in operation["security"]:
                assert set(requirement) <= schemes, (path, method)
            for status, reply in operation["responses"].items():
                if status.startswith(("4", "5")) and (path, status) not in OWN_ERRORS:
                    assert list(reply["content"]) == ["application/problem+json"], (path, status)


def test_the_document_is_public_cacheable_and_answers_304(client: FlaskClient) -> None:
    """No key is needed; the answer may be cached and carries an ETag that a client can
    send back for a 304."""
    res = client.get(PATH)
    assert "public" in res.headers["Cache-Control"] and res.headers["ETag"]
    again = client.get(PATH, headers={"If-None-Match": res.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    """The document passes the OpenAPI 3.1 meta-schema (the one schemathesis ships), and
    schemathesis finds every operation well formed."""
    schema = schemathesis.openapi.from_dict(_document(client))
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_served(client.application))


@pytest.fixture
def keys(redis, write_key: str, server_key: str) -> dict[str, str]:
    """Return a key for each security scheme the document names."""
    partner = create_key(redis, Scope.PARTNER, "ad tool", (EXAMPLE["id"], "some-segment"))
    return {
        "adminKey": create_key(redis, Scope.ADMIN, "fuzz"),
        "partnerKey": partner,
        "importKey": create_key(redis, Scope.IMPORT, "fuzz"),
        "serverKey": server_key,
        "writeKey": write_key,
        "pixelKey": write_key,
    }


def _auth(case, keys: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Return the headers and query parameters that carry the operation's first key."""
    schemes = [name for req in case.operation.definition.raw["security"] for name in req]
    scheme = schemes[0] if schemes else ""
    if scheme in ("adminKey", "partnerKey", "importKey"):
        return {"Authorization": f"Bearer {keys[scheme]}"}, {}
    if scheme in ("serverKey", "writeKey"):
        token = base64.b64encode(f"{keys[scheme]}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}, {}
    if scheme == "pixelKey":
        return {}, {"k": keys[scheme]}
    return {}, {}


@pytest.fixture
def seeded(runner, redis, config) -> dict[str, str]:
    """Return path values that exist: a person, and a segment with members in a run over a
    built matrix (so the fuzz reaches the answers of real data, not only 404s)."""
    from dmp.cli import cli

    synth = ["synth", "--persons", "40", "--days", "7", "--seed", "3"]
    assert runner.invoke(cli, synth).exit_code == 0
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    apply_segments(redis, json.dumps(EXAMPLE | {"where": {"tier": {"gte": "low"}}}))
    runs.run(redis, config)
    run = results.latest_run(config)
    members = results.member_rows(config, EXAMPLE["id"], 1, run)
    assert members is not None and members.height == 1
    return {"pid": members["person_id"][0], "sid": EXAMPLE["id"]}


# Operations whose path must not name the seeded data: they would remove it (or wait for a
# worker that this test does not run).
KEEP_SEEDED = {"DELETE /api/v1/persons/{pid}", "DELETE /api/v1/segments/{sid}"}


def _call(case, keys: dict[str, str], seeded: dict[str, str], count: itertools.count) -> None:
    """Send a generated request with the operation's key (every other one about the seeded
    data); validate the answer."""
    if next(count) % 2 and case.operation.label not in KEEP_SEEDED:
        for name in set(case.path_parameters or ()) & set(seeded):
            case.path_parameters[name] = seeded[name]
    concrete = {p for p in case.operation.schema.raw_schema["paths"] if "{" not in p}
    if case.path_parameters and case.formatted_path in concrete:
        # /segments/{sid} with sid "runs" is GET /segments/runs: another operation's
        # request (the document excludes such ids; invalid input may still name them).
        reject()
    headers, params = _auth(case, keys)
    if case.path == "/collect" and isinstance(case.body, dict):
        case.body["k"] = keys["writeKey"]  # the beacon's key travels in its body
        headers["Origin"] = "https://acme.de"
    response = case.call(headers=headers, params=params)
    case.validate_response(response, checks=CHECKS)


def _fuzz(operation, keys: dict[str, str], seeded: dict[str, str], mode: GenerationMode) -> None:
    """Run one operation's generated requests (the document's examples first)."""
    count = itertools.count()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:
        _call(case, keys, seeded, count)

    fuzz()


def test_every_operation_answers_as_documented(
    app: Flask, keys: dict[str, str], seeded: dict[str, str]
) -> None:
    """Generated requests with valid keys, valid and invalid ones, get no 5xx, and only the
    documented statuses, content types, bodies and headers (schemathesis, in-process over
    WSGI)."""
    # One loop, not schemathesis' pytest plugin: its lazy loader reaches into pytest's
    # private node attributes, which pytest 9 no longer has.
    schema = schemathesis.openapi.from_wsgi(PATH, app)
    failed = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, keys, seeded, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no input
            except Exception as exc:  # every operation runs; all failures are reported
                failed[f"{operation.label} ({mode.value})"] = exc
    assert not failed, "\n\n".join(f"{label}: {exc}" for label, exc in failed.items())
