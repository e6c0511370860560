"""Destinations as configured, kept in Redis: kind, segments, schedule and options.

``dmp destinations add`` and ``POST /api/v1/destinations`` validate once, here: a name
of letters, digits, ``-`` and ``_``; a known kind; segments that exist; a schedule of at
least a minute; options ``key=value`` that the kind accepts. Secrets are never stored:
an option holding one is refused, and ``*_env`` options name the environment variable
the worker reads it from (``--option token_env=META_TOKEN``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence

import redis

from dmp.storage import keyspace
from exporters.destination import Settings
from exporters.registry import KINDS

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
RESERVED_NAMES = frozenset({"new"})  # /ui/destinations/new is the form that adds one
_OPTION = re.compile(r"[a-z][a-z0-9_]{0,63}(\.[A-Za-z0-9_-]{1,64})?")
_EVERY = re.compile(r"([0-9]{1,6})\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Option names that would hold a secret itself: refused (name an environment variable).
_SECRET_WORDS = ("token", "key", "secret", "password", "apikey")
MIN_EVERY = 60
# Options every kind takes (exporters.http, the engine), checked here once.
_WHOLE = frozenset({"batch_size", "retry_attempts", "per_minute", "connections"})
_SECONDS = frozenset({"retry_base", "retry_cap", "timeout"})
MAX_OPTION = 2000


class Invalid(ValueError):
    """The destination's settings are not acceptable (the message says why, one line)."""


def parse_every(text: str) -> int:
    """Return the seconds of a schedule such as ``15m``, ``1h``, ``90s`` or ``1d``."""
    match = _EVERY.fullmatch(text.strip().lower())
    if match is None:
        raise Invalid(f"every: {text!r} is no duration (like 15m, 1h, 1d)")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds < MIN_EVERY:
        raise Invalid(f"every: at least {MIN_EVERY // 60}m")
    return seconds


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """Return ``key=value`` pairs as a dict (Invalid names the bad one)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise Invalid(f"option {pair[:60]!r}: expected key=value")
        out[name.strip()] = value.strip()
    return out


def validate(
    r: redis.Redis,
    name: str,
    kind: str,
    segments: Sequence[str],
    every: int,
    options: Mapping[str, str],
) -> Settings:
    """Return the settings if they are acceptable; Invalid says what is not."""
    if not _NAME.fullmatch(name):
        raise Invalid(f"name: {name[:64]!r} is not 1-64 lowercase letters, digits, - or _")
    if name in RESERVED_NAMES:
        raise Invalid(f"name: {name!r} is reserved; choose another")
    if kind not in KINDS:
        raise Invalid(f"kind: {kind[:64]!r} is not one of {', '.join(sorted(KINDS))}")
    if not segments:
        raise Invalid("segments: at least one segment id")
    known = r.smismember(keyspace.SEGMENTS, list(segments))
    missing = [s for s, there in zip(segments, known, strict=True) if not there]
    if missing:
        raise Invalid(f"segments: no segment {', '.join(repr(s[:64]) for s in missing[:5])}")
    if not MIN_EVERY <= every <= 30 * 86400:
        raise Invalid(f"every: from {MIN_EVERY} seconds to 30 days")
    for option, value in options.items():
        _check_option(option, value)
    settings = Settings(name, kind, tuple(dict.fromkeys(segments)), every, dict(options))
    problems = KINDS[kind].check(settings)
    if problems:
        raise Invalid("; ".join(problems))
    return settings


def _number(text: str) -> bool:
    """Return whether a text is a finite number of 0 or more (no nan, no inf)."""
    try:
        return 0 <= float(text) < 1e9
    except ValueError:
        return False


def _check_option(option: str, value: str) -> None:
    if not _OPTION.fullmatch(option):
        raise Invalid(f"option {option[:64]!r}: not a valid option name")
    if len(value) > MAX_OPTION or any(ord(c) < 32 for c in value):
        raise Invalid(f"option {option}: longer than {MAX_OPTION} characters or unprintable")
    if option in _WHOLE and not (value.isascii() and value.isdigit()):
        raise Invalid(f"option {option}: {value[:32]!r} is not a whole number")
    if option == "batch_size" and int(value) < 1:
        raise Invalid("option batch_size: at least 1")
    if option in _SECONDS and not _number(value):
        raise Invalid(f"option {option}: {value[:32]!r} is not a number of seconds")
    if option in ("base_url", "url") and not value.startswith(("http://", "https://")):
        raise Invalid(f"option {option}: {value[:64]!r} is not an http(s) URL")
    base = option.partition(".")[0]
    if not base.endswith("_env") and any(word in base for word in _SECRET_WORDS):
        raise Invalid(
            f"option {option}: secrets are not stored; put it in an environment variable "
            f"and pass --option {base}_env=VARIABLE"
        )
    if base.endswith("_env") and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
        raise Invalid(f"option {option}: {value[:64]!r} is not an environment variable name")


def save(r: redis.Redis, settings: Settings, *, replace: bool = False) -> bool:
    """Store a destination; return False if one of that name exists (and not ``replace``)."""
    key = keyspace.destination(settings.name)
    now = str(int(time.time() * 1000))
    record = {
        "kind": settings.kind,
        "segments": ",".join(settings.segments),
        "every": str(settings.every_seconds),
        "options": json.dumps(dict(settings.options), sort_keys=True),
        "updated": now,
    }
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        if pipe.exists(key) and not replace:
            pipe.reset()
            return False
        pipe.multi()
        pipe.hsetnx(key, "created", now)
        pipe.hset(key, mapping=record)
        pipe.sadd(keyspace.DESTINATIONS, settings.name)
        pipe.execute()
    return True


def load(r: redis.Redis, name: str) -> Settings | None:
    """Return a stored destination's settings (None if there is none of that name)."""
    raw = r.hgetall(keyspace.destination(name)) if _NAME.fullmatch(name) else {}
    if not raw:
        return None
    segments = tuple(s for s in raw.get("segments", "").split(",") if s)
    options = json.loads(raw.get("options") or "{}")
    return Settings(name, raw["kind"], segments, int(raw.get("every", "900")), options)


def names(r: redis.Redis) -> list[str]:
    """Return every destination's name, sorted."""
    return sorted(r.smembers(keyspace.DESTINATIONS))


def remove(r: redis.Redis, name: str) -> bool:
    """Forget a destination, its checkpoints and reports; return whether it existed."""
    keys = list(r.scan_iter(match=keyspace.destination_pattern(name), count=500))
    with r.pipeline(transaction=True) as pipe:
        pipe.srem(keyspace.DESTINATIONS, name)
        pipe.delete(keyspace.destination(name), *keys)
        removed, *_ = pipe.execute()
    return bool(removed)


def shown(settings: Settings) -> dict[str, object]:
    """Return a destination's settings as the CLI and API show them (options name the
    environment variables secrets come from, never a secret)."""
    return {
        "name": settings.name,
        "kind": settings.kind,
        "segments": list(settings.segments),
        "every_seconds": settings.every_seconds,
        "options": dict(sorted(settings.options.items())),
    }
