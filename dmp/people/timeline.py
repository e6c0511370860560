"""A person's timeline in Redis (``dmp:person:{pid}:touchpoints``, a sorted set by time):
the member each hit adds, deterministic so that a replayed hit adds nothing."""

from __future__ import annotations

import json
from typing import Any

from dmp.records import Hit, dump_json


def touchpoint(hit: Hit) -> str:
    """Return the timeline member of a hit (deterministic, so replays add nothing).

    The member is the compact JSON of :func:`touchpoint_fields`. It is spelled out here
    by hand, byte for byte what ``dump_json`` gives (a test holds them together), because
    the worker makes one per event and the generic encoder costs three times as much.
    """
    s = _json_str
    try:
        if type(hit.timestamp) is not int:
            raise TypeError("timestamp")
        parts = [
            '{"id":',
            s(hit.event_id),
            ',"t":',
            str(hit.timestamp),
            ',"type":',
            s(hit.type),
            ',"event":',
            s(hit.event),
            ',"source":',
            s(hit.source),
            ',"site":',
            s(hit.site_id),
            ',"channel":',
            s(hit.channel),
        ]
        if hit.url:
            parts += (',"url":', s(hit.url))
        if hit.title:
            parts += (',"title":', s(hit.title))
        if hit.topics:
            parts += (',"topics":[', ",".join(map(s, hit.topics)), "]")
    except TypeError:  # a field of an unexpected type: let the encoder say it as it can
        return dump_json(touchpoint_fields(hit))
    parts.append("}")
    return "".join(parts)


def touchpoint_fields(hit: Hit) -> dict[str, Any]:
    """Return what a hit's timeline member holds."""
    point: dict[str, Any] = {
        "id": hit.event_id,
        "t": hit.timestamp,
        "type": hit.type,
        "event": hit.event,
        "source": hit.source,
        "site": hit.site_id,
        "channel": hit.channel,
    }
    if hit.url:
        point["url"] = hit.url
    if hit.title:
        point["title"] = hit.title
    if hit.topics:
        point["topics"] = hit.topics
    return point


_json_str = json.encoder.encode_basestring  # the C string encoder dump_json uses
