"""Times a person reads in the persons API are ISO 8601 in UTC: stages, the reply of a
stage change, first and last seen, touchpoints and the matrix row's moments."""

from __future__ import annotations

import re
from datetime import datetime

from dmp.matrix import builds
from dmp.people.identity import Identifier, IdKind
from dmp.people.lifecycle import record_stage
from dmp.people.profiles import find_person
from dmp.records import Stage
from segments.matrix import MOMENTS
from tests.factories import NOW, bearer, make_hit, make_identify, send_hits

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def _anna(redis, drain) -> str:
    send_hits(redis, make_identify("anna@acme.de", uid="c1"), make_hit(uid="c1"))
    drain()
    return find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de"))


def test_stages_are_iso_times_in_the_person_and_the_stage_reply(client, admin_key, redis, drain):
    """A stage's `at` is ISO 8601 UTC with milliseconds, in the reply of the change and in
    the person; it names the moment stored."""
    pid = _anna(redis, drain)
    record_stage(redis, pid, Stage.MQL, source="crm", at_ms=NOW + 1234)
    auth = bearer(admin_key)
    reply = client.post(f"/api/v1/persons/{pid}/stage", json={"stage": "sal"}, headers=auth)
    assert reply.status_code == 201 and ISO_UTC.fullmatch(reply.get_json()["at"])
    person = client.get(f"/api/v1/persons/{pid}", headers=auth).get_json()
    stages = person["stages"]
    assert [s["stage"] for s in stages] == ["mql", "sal"]
    assert stages[0]["at"] == "2026-09-21T14:13:21.234+00:00"
    assert stages[1]["at"] == reply.get_json()["at"]
    for name in ("first_seen", "last_seen"):
        assert ISO_UTC.fullmatch(person[name]), name
    assert all(ISO_UTC.fullmatch(t["timestamp"]) for t in person["touchpoints"])


def test_the_matrix_rows_moments_are_iso_times(client, admin_key, redis, drain, config):
    """After a build, stage_since, first_seen and last_seen of the person's matrix row are
    ISO 8601 UTC (the snapshot keeps ms for machines)."""
    pid = _anna(redis, drain)
    builds.build(redis, config, as_of_ms=NOW + 3_600_000)
    person = client.get(f"/api/v1/persons/{pid}", headers=bearer(admin_key)).get_json()
    row = person["matrix"]
    assert row is not None
    for name in MOMENTS:
        assert ISO_UTC.fullmatch(row[name]), (name, row[name])
    assert datetime.fromisoformat(row["first_seen"]).timestamp() * 1000 == NOW
