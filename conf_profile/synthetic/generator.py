"""A synthetic, ProfileBench-like user-log data set with hidden ground truth.

Log schema (what ingest reads): one row per event, events of a user spread over all files, rows in time order
within a file's row group::

    event_id: string    opaque id, unique per event (exact duplicate rows repeat it)
    user_id: string     opaque id
    event_time: string  ISO-8601 with offset, e.g. 2026-03-04T12:34:56Z
    event_type: string  profile | watch | search | comment | follow
    payload: string     JSON object; fields by type:
                        profile {nickname, bio}; watch {title, tags: [str], watch_seconds: int};
                        search {query}; comment {text, on}; follow {account, account_bio}

Users carry signal at four strengths (strong, medium, weak, none); noise events, contradictory cues (someone
else using the account), multilingual text, emoji and very long texts are mixed in. With ``bad_fraction`` > 0,
malformed rows are added (each a corrupted copy of a real event) and listed with their kind in
``bad_rows.parquet``; they are extra rows, so the user's real events are untouched.

Determinism: users are generated in fixed blocks, each from its own RNG seeded by (seed, block), so the same
arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from conf_profile.synthetic import banks

LOG_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("event_time", pa.string()),
        ("event_type", pa.string()),
        ("payload", pa.string()),
    ]
)
ATTRIBUTES = ("gender", "age_group", "life_stage", "occupation", "industry", "education")
TRUTH_SCHEMA = pa.schema(
    [("user_id", pa.string())]
    + [(a, pa.string()) for a in ATTRIBUTES]
    + [("signal", pa.string()), ("language", pa.string())]
)
BAD_ROWS_SCHEMA = pa.schema([("event_id", pa.string()), ("kind", pa.string())])
EVENT_TYPES = ("profile", "watch", "search", "comment", "follow")
BAD_KINDS = (
    "missing_user_id",
    "bad_timestamp",
    "unknown_event_type",
    "malformed_payload",
    "wrong_type",
    "oversize_text",
    "invalid_unicode",
)
SIGNALS = (("strong", 25), ("medium", 40), ("weak", 25), ("none", 10))
CUES_PER_ATTRIBUTE = {"strong": (2, 4), "medium": (1, 2), "weak": (0, 1), "none": (0, 0)}
BLOCK_USERS = 2000
OVERSIZE_CHARS = 100_000  # far above any sane per-event text budget
# Rotation of injected kinds: each kind at least once in every 19 bad rows; oversize rows are rarer (they are big).
_BAD_ROTATION = tuple(k for k in BAD_KINDS for _ in range(1 if k == "oversize_text" else 3))
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Block:
    """One block of generated users: the log rows, the truth rows and the list of injected bad rows."""

    logs: pa.Table
    truth: pa.Table
    bad_rows: pa.Table


def user_id_for(seed: int, index: int) -> str:
    """Opaque, stable user id.

    >>> user_id_for(0, 1) == user_id_for(0, 1) != user_id_for(1, 1)
    True
    """
    return "u_" + hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).hexdigest()


def iter_blocks(users: int, seed: int, bad_fraction: float) -> Iterator[Block]:
    """Generate ``users`` users block by block (bounded memory)."""
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1), got {bad_fraction}")
    for block, start in enumerate(range(0, users, BLOCK_USERS)):
        rng = random.Random(f"conf-profile:{seed}:{block}")  # str seeds are hashed with sha512: stable
        yield _block(rng, seed, range(start, min(users, start + BLOCK_USERS)), bad_fraction)


def _block(rng: random.Random, seed: int, indices: range, bad_fraction: float) -> Block:
    events: list[tuple[str, str, str, str, str]] = []
    truth: list[dict[str, str]] = []
    for i in indices:
        uid = user_id_for(seed, i)
        person = _sample_truth(rng)
        truth.append({"user_id": uid, **person})
        events.extend(_user_events(rng, uid, person))
    n_bad = int(round(bad_fraction * len(events)))
    bad = _bad_rows(rng, events, n_bad)
    rows = events + [row for row, _ in bad]
    rows.sort(key=lambda r: (r[2], r[0]))
    logs = pa.table({name: [r[k] for r in rows] for k, name in enumerate(LOG_SCHEMA.names)}, schema=LOG_SCHEMA)
    return Block(
        logs=logs,
        truth=pa.Table.from_pylist(truth, schema=TRUTH_SCHEMA),
        bad_rows=pa.table({"event_id": [r[0] for r, _ in bad], "kind": [k for _, k in bad]}, schema=BAD_ROWS_SCHEMA),
    )


def _pick(rng: random.Random, options: tuple) -> str:
    """Choose from ``(value, weight)`` pairs."""
    return rng.choices([v for v, _ in options], weights=[w for _, w in options])[0]


def _one(rng: random.Random, seq: tuple[str, ...]) -> str:
    return rng.choice(seq)


def _sample_truth(rng: random.Random) -> dict[str, str]:
    age = _pick(rng, banks.AGE)
    life = _pick(rng, banks.LIFE_STAGE_GIVEN_AGE[age])
    if life in ("student", "retired"):
        occupation = life
    else:
        working: tuple[tuple[str, int], ...] = banks.WORKING
        if life.startswith("parent"):  # homemakers are mostly parents
            working = tuple((v, w * 3 if v == "homemaker" else w) for v, w in working)
        occupation = _pick(rng, working)
    education = "secondary" if age == "under_18" else _pick(rng, banks.EDUCATION_GIVEN_OCCUPATION[occupation])
    return {
        "gender": _pick(rng, (("male", 1), ("female", 1))),
        "age_group": age,
        "life_stage": life,
        "occupation": occupation,
        "industry": _pick(rng, banks.INDUSTRY_GIVEN_OCCUPATION[occupation]),
        "education": education,
        "signal": _pick(rng, SIGNALS),
        "language": _pick(rng, (("en", 85), ("multi", 15))),
    }


def _user_events(rng: random.Random, uid: str, person: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
    signal = person["signal"]
    start = _EPOCH + timedelta(days=(rng.uniform(0, 270)))
    span_days = rng.uniform(1, 60)
    payloads: list[tuple[str, dict]] = []
    if signal in ("strong", "medium") or rng.random() < 0.3:
        payloads.append(("profile", _profile(rng, person, explicit=signal == "strong")))
    low, high = CUES_PER_ATTRIBUTE[signal]
    for attr in ATTRIBUTES:
        for _ in range(rng.randint(low, high)):
            payloads.append(_cue_event(rng, attr, person[attr], person["language"]))
    if signal != "none" and rng.random() < 0.15:  # someone else on the account: a cue for another value
        attr = _one(rng, ATTRIBUTES)
        other = _one(rng, tuple(v for v in banks.CUES[attr] if v != person[attr]))
        payloads.append(_cue_event(rng, attr, other, person["language"]))
    n_noise = rng.randrange(1, 4) if signal == "none" else rng.randrange(3, 16)
    payloads.extend(_noise_event(rng, person["language"]) for _ in range(n_noise))
    rows = []
    for k, (etype, payload) in enumerate(payloads):
        when = start + timedelta(days=(rng.uniform(0, span_days)))
        event_id = "e_" + hashlib.blake2b(f"{uid}:{k}".encode(), digest_size=8).hexdigest()
        rows.append((event_id, uid, _iso(rng, when), etype, json.dumps(payload, ensure_ascii=False)))
    if rows and rng.random() < 0.05:  # exact duplicate delivery of one event
        rows.append(rows[rng.randrange(len(rows))])
    return rows


def _iso(rng: random.Random, when: datetime) -> str:
    if rng.random() < 0.1:  # some clients send local time with an offset
        hours = rng.randrange(-8, 10)
        local = when + timedelta(hours=hours)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _profile(rng: random.Random, person: dict[str, str], explicit: bool) -> dict:
    attrs = [a for a in ATTRIBUTES if rng.random() < (0.6 if explicit else 0.25)]
    bios = [_one(rng, banks.CUES[a][person[a]]["bio"]) for a in attrs] or ["hi there"]
    form = _one(rng, banks.BIO_FORMS)
    bio = form.format(b=bios[0], b2=", ".join(bios[1:]) or "living my best life")
    nickname = f"{_one(rng, banks.NICKNAMES)}{rng.randrange(1, 999)}"
    return {"nickname": nickname, "bio": bio}


def _cue_event(rng: random.Random, attr: str, value: str, language: str) -> tuple[str, dict]:
    cue = banks.CUES[attr][value]
    topic, says = _one(rng, cue["topics"]), _one(rng, cue["says"])
    etype = _one(rng, ("watch", "watch", "search", "comment", "follow"))
    if etype == "watch":
        return etype, _watch(rng, _one(rng, banks.TITLE_FORMS).format(t=topic).capitalize(), long_views=True)
    if etype == "search":
        return etype, {"query": _one(rng, banks.QUERY_FORMS).format(t=topic)}
    if etype == "comment":
        text = _one(rng, banks.COMMENT_FORMS).format(s=says)
        if rng.random() < 0.3:
            text += " " + _one(rng, banks.EMOJI)
        if language == "multi" and rng.random() < 0.3:
            text += " " + _one(rng, banks.MULTILINGUAL)
        if rng.random() < 0.03:  # a long rant that still carries the cue
            text = " ".join([text] + [_one(rng, banks.NOISE_COMMENTS) for _ in range(rng.randrange(300, 900))])
        return etype, {"text": text, "on": _one(rng, banks.NOISE_TITLES)}
    account = topic.replace(" ", "_").replace("'", "")[:30]
    return etype, {"account": account, "account_bio": f"All about {topic}"}


def _noise_event(rng: random.Random, language: str) -> tuple[str, dict]:
    etype = _one(rng, ("watch", "watch", "watch", "search", "comment", "follow"))
    if etype == "watch":
        return etype, _watch(rng, _one(rng, banks.NOISE_TITLES), long_views=False)
    if etype == "search":
        return etype, {"query": _one(rng, banks.NOISE_QUERIES)}
    if etype == "comment":
        multi = language == "multi" and rng.random() < 0.5
        text = _one(rng, banks.MULTILINGUAL if multi else banks.NOISE_COMMENTS)
        return etype, {"text": text, "on": _one(rng, banks.NOISE_TITLES)}
    return etype, {"account": _one(rng, banks.NOISE_ACCOUNTS), "account_bio": "Follow for more"}


def _watch(rng: random.Random, title: str, long_views: bool) -> dict:
    tags = sorted({_one(rng, banks.TAGS) for _ in range(rng.randrange(0, 4))})
    seconds = rng.randrange(120, 1800) if long_views else rng.randrange(3, 240)
    return {"title": title, "tags": tags, "watch_seconds": seconds}


def _bad_rows(rng: random.Random, events: list, n_bad: int) -> list[tuple[tuple, str]]:
    """Corrupted copies of real events, kinds in rotation (every kind within 19 rows)."""
    out = []
    offset = rng.randrange(len(_BAD_ROTATION))
    for j in range(n_bad if events else 0):
        kind = _BAD_ROTATION[(offset + j * 3) % len(_BAD_ROTATION)]
        src = events[rng.randrange(len(events))]
        event_id = "e_bad_" + hashlib.blake2b(f"{src[0]}:{j}".encode(), digest_size=8).hexdigest()
        out.append(((event_id, *_corrupt(rng, kind, src[1:])), kind))
    return out


def _corrupt(rng: random.Random, kind: str, row: tuple) -> tuple:
    uid, when, etype, payload = row
    if kind == "missing_user_id":
        return (None if rng.random() < 0.5 else "", when, etype, payload)
    if kind == "bad_timestamp":
        return (uid, _one(rng, ("not-a-date", "2026-02-30T10:00:00Z", "", "yesterday", "26/13/2026")), etype, payload)
    if kind == "unknown_event_type":
        return (uid, when, _one(rng, ("purchase_v2", "LIKE", "", "ad_click")), payload)
    if kind == "malformed_payload":
        return (uid, when, etype, _one(rng, (payload[: len(payload) // 2], "[1, 2, 3]", "null", "{'x': 1}")))
    if kind == "wrong_type":
        return (uid, when, "watch", json.dumps({"title": 12345, "tags": "fun", "watch_seconds": "long"}))
    if kind == "oversize_text":
        return (uid, when, "comment", json.dumps({"text": "spam " * (OVERSIZE_CHARS // 5), "on": "x"}))
    # invalid_unicode: a lone surrogate, as sent by clients that cut an emoji in half; valid JSON escape,
    # but no valid string once decoded.
    return (uid, when, "comment", '{"text": "great video \\ud83d", "on": "x"}')
