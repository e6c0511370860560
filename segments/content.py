"""The content catalog and each person's next piece of content.

A catalog is a YAML list of items ``{id, title, url, topics: [...], stage: mql | [lead,
mql]}`` in order of preference. A person's next content is the first item for their
stage and their top interest that they have not seen (no touchpoint at its URL); failing
that, the first unseen item for their stage that has no topics (general content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from dmp.records import Stage
from segments.rules import RuleError
from segments.yamltext import load_yaml

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ContentItem:
    """One piece of content a marketer can send or show."""

    id: str
    title: str
    url: str
    topics: tuple[str, ...]
    stages: tuple[str, ...]


def parse_catalog(text: str, source: str = "catalog") -> tuple[ContentItem, ...]:
    """Return the items of a catalog's YAML text (RuleError names the bad path)."""
    data = load_yaml(text, source)
    if isinstance(data, dict) and "content" in data:
        data = data["content"]
    if not isinstance(data, list):
        raise RuleError(source, "expected a list of content items")
    items, ids = [], set()
    for i, raw in enumerate(data):
        items.append(_item(raw, f"content[{i}]"))
        if items[-1].id in ids:
            raise RuleError(f"content[{i}].id", f"{items[-1].id!r} appears twice")
        ids.add(items[-1].id)
    return tuple(items)


def _item(raw: Any, path: str) -> ContentItem:
    if not isinstance(raw, dict):
        raise RuleError(path, "expected a mapping with id, title, url, topics and stage")
    unknown = set(raw) - {"id", "title", "url", "topics", "stage"}
    if unknown:
        raise RuleError(f"{path}.{sorted(unknown)[0]}", "unknown key")
    ident, title, url = raw.get("id"), raw.get("title"), raw.get("url")
    if not isinstance(ident, str) or not _ID.match(ident):
        raise RuleError(f"{path}.id", "expected an id of letters, digits, _ . or -")
    if not isinstance(title, str) or not title.strip():
        raise RuleError(f"{path}.title", "expected a title")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise RuleError(f"{path}.url", "expected an http(s) URL")
    topics = raw.get("topics", [])
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
        raise RuleError(f"{path}.topics", "expected a list of topics")
    stages = raw.get("stage", [Stage.LEAD.value, Stage.MQL.value, Stage.RECYCLED.value])
    if isinstance(stages, str):
        stages = [stages]
    if not isinstance(stages, list) or not stages:
        raise RuleError(f"{path}.stage", "expected a stage or a list of stages")
    for stage in stages:
        if stage not in Stage._value2member_map_:
            known = ", ".join(s.value for s in Stage)
            raise RuleError(f"{path}.stage", f"unknown stage {stage!r} (known: {known})")
    return ContentItem(ident, title.strip(), url, tuple(topics), tuple(stages))


# The matrix columns a person's next content fills: the item's id, title and URL.
NEXT_CONTENT = ("next_content", "next_content_title", "next_content_url")


def page_key(url: pl.Expr) -> pl.Expr:
    """Return a URL reduced to host and path (no scheme, query, fragment or final slash)."""
    return (
        url.str.replace(r"^[A-Za-z][A-Za-z0-9+.\-]*://", "")
        .str.replace(r"[?#].*$", "")
        .str.replace(r"/+$", "")
        .str.to_lowercase()
    )


def catalog_frame(items: tuple[ContentItem, ...]) -> pl.LazyFrame:
    """Return one row per item, stage and topic: ``rank, page, stage, topic`` (``rank``
    the item's place in the catalog, ``page`` its URL's :func:`page_key`)."""
    rows = [
        {"rank": rank, "url": it.url, "stage": stage, "topic": t}
        for rank, it in enumerate(items)
        for stage in it.stages
        for t in (it.topics or (None,))
    ]
    schema = {"rank": pl.Int32, "url": pl.Utf8, "stage": pl.Utf8, "topic": pl.Utf8}
    return pl.LazyFrame(rows, schema=schema).select(
        "rank", page_key(pl.col("url")).alias("page"), "stage", "topic"
    )


def next_content(
    persons: pl.LazyFrame, seen_pages: pl.LazyFrame, items: tuple[ContentItem, ...]
) -> pl.LazyFrame:
    """Return ``person_id, next_content, next_content_title, next_content_url``.

    ``persons`` holds ``person_id, stage, top_interest``; ``seen_pages`` holds
    ``person_id, page`` (see :func:`page_key`) for every page a person has seen.

    Each person's candidates are ranked by one number, ``fit × len(items) + rank`` (on
    their top interest first, then general content; within each, the catalog's order):
    the best is the smallest, found by a plain minimum, and only then joined to the
    item's id, title and URL. Sorting the candidates with their texts and taking each
    person's first took three times as long at 1M persons.
    """
    catalog = catalog_frame(items)
    on_topic = persons.join(
        catalog.filter(pl.col("topic").is_not_null()),
        left_on=["stage", "top_interest"],
        right_on=["stage", "topic"],
    ).with_columns(fit=pl.lit(0))
    general = persons.join(catalog.filter(pl.col("topic").is_null()), on="stage")
    general = general.with_columns(fit=pl.lit(1))
    order = (pl.col("fit") * len(items) + pl.col("rank")).alias("order")
    candidates = pl.concat([c.select("person_id", "page", order) for c in (on_topic, general)])
    unseen = candidates.join(seen_pages, on=["person_id", "page"], how="anti")
    best = unseen.group_by("person_id").agg(pl.col("order").min())
    chosen = pl.LazyFrame(
        [(rank, it.id, it.title, it.url) for rank, it in enumerate(items)],
        schema={"rank": pl.Int64, **dict.fromkeys(NEXT_CONTENT, pl.Utf8)},
        orient="row",
    )
    return (
        best.with_columns(rank=pl.col("order").cast(pl.Int64) % max(len(items), 1))
        .join(chosen, on="rank")
        .select("person_id", *NEXT_CONTENT)
    )
