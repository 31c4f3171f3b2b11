"""Logs that are not this project's layout, profiled end to end without rewriting them: a flat clickstream
Parquet (other column names, epoch-millisecond times, event types of its own) and a JSONL of free-text posts
(no type or id column), read through `ingest.mapping`; a CSV export of the clickstream too. Real Ray ingest,
and real inference on vLLM with the tiny model (the student stage's engine) to the profile tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conf_profile.core.config import build
from conf_profile.core.settings import Config

CLICKS = {"user_id": "visitor", "event_id": "hit_id", "event_time": "ts_ms", "time_unit": "ms",
          "event_type": "action", "payload": None, "ignore": ["heartbeat"],
          "types": {"view": {"source": "watch", "template": "{product} [{category}]", "optional": ["category"]},
                    "search": {"source": "search", "template": "{q}"},
                    "review": {"source": "comment", "template": "{body} (on: {product})"}}}  # fmt: skip
POSTS = {"user_id": "author", "event_id": None, "event_time": "created", "event_type": None, "default_type": "post",
         "payload": None, "types": {"post": {"source": "comment", "template": "{text}"}}}  # fmt: skip
T0 = 1767225600000  # 2026-01-01, epoch ms


def _clicks() -> pa.Table:
    rows = []
    for u in range(4):
        rows += [
            {"visitor": 100 + u, "hit_id": f"h{u}a", "ts_ms": T0 + u, "action": "view", "product": "Tent",
             "category": "outdoor", "q": None, "body": None},
            {"visitor": 100 + u, "hit_id": f"h{u}b", "ts_ms": T0 + 60_000, "action": "search", "product": None,
             "category": None, "q": f"kids bike size {u}", "body": None},
            {"visitor": 100 + u, "hit_id": f"h{u}c", "ts_ms": T0 + 90_000, "action": "heartbeat", "product": None,
             "category": None, "q": None, "body": None},
        ]  # fmt: skip
    rows.append({"visitor": 100, "hit_id": "h0d", "ts_ms": T0, "action": "review", "product": "Tent", "category": None,
                 "q": None, "body": "Great for my two children"})  # fmt: skip
    rows.append({"visitor": 100, "hit_id": "h0e", "ts_ms": T0, "action": "checkout", "product": "Tent",
                 "category": None, "q": None, "body": None})  # a type nobody mapped  # fmt: skip
    rows.append({"visitor": 199, "hit_id": "h9", "ts_ms": T0, "action": "heartbeat", "product": None,
                 "category": None, "q": None, "body": None})  # a user with heartbeats only  # fmt: skip
    return pa.Table.from_pylist(rows)


def _run(tmp_path: Path, name: str, logs: Path, mapping: dict, infer: bool) -> tuple[Config, Path, dict, dict]:
    from conf_profile.models import tiny_model_dir
    from conf_profile.stages.infer import run_infer
    from conf_profile.stages.ingest import run_ingest

    run_dir = tmp_path / name
    cache = tmp_path / "cache"
    cfg = build(Config, {"ingest": {"mapping": mapping}}, [f"models.cache_dir={cache}", "infer.max_tokens=400",
                                                           "ray.local_num_cpus=2"])  # fmt: skip
    ingested = run_ingest(cfg.ingest, str(logs), run_dir, cfg.ray)
    inferred = run_infer(cfg, run_dir, str(tiny_model_dir(cache)), date="2026-01-02") if infer else {}
    return cfg, run_dir, ingested, inferred


def _documents(run_dir: Path) -> dict[str, str]:
    t = pq.read_table(run_dir / "documents", columns=["user_id", "document"])
    return dict(zip(t.column("user_id").to_pylist(), t.column("document").to_pylist(), strict=True))


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_a_flat_clickstream_and_a_jsonl_of_posts_are_profiled_without_rewriting_them(tmp_path) -> None:
    import ray

    (tmp_path / "clicks").mkdir()
    pq.write_table(_clicks(), tmp_path / "clicks" / "part-0.parquet")
    _, run_dir, ingested, inferred = _run(tmp_path, "clicks_run", tmp_path / "clicks", CLICKS, infer=True)
    docs = _documents(run_dir)
    assert sorted(docs) == ["100", "101", "102", "103"]
    assert "Tent [outdoor]" in docs["100"] and "kids bike size 0" in docs["100"]
    assert "Great for my two children (on: Tent)" in docs["100"]
    rejects = pq.read_table(run_dir / "rejects").to_pylist()
    reasons = sorted((r["reason"], r["user_id"]) for r in rejects)
    assert reasons == sorted([("ignored_event_type", str(100 + u)) for u in range(4)] + [
        ("ignored_event_type", "199"), ("unknown_event_type", "100"), ("no_usable_events", "199")])  # fmt: skip
    assert (ingested["users_out"], ingested["users_rejected"]) == (4, 1)
    profiles = pq.read_table(run_dir / "profiles" / "dt=2026-01-02")
    assert sorted(profiles.column("user_id").to_pylist()) == sorted(docs) and inferred["users"] == 4

    (tmp_path / "posts").mkdir()
    shift = "Finished my nursing shift, the kids are asleep"
    posts = [{"author": a, "created": f"2026-01-0{d}T10:00:00Z", "text": text} for a, d, text in (
        ("ana", 1, shift), ("ana", 1, shift), ("ana", 3, "Baking with my daughter"),
        ("ben", 1, "Code review all day, then physics homework help"), ("ben", 2, "Retired next year!"),
        ("cy", 1, ""))]  # fmt: skip
    (tmp_path / "posts" / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts) + "not json\n")
    _, run_dir, ingested, inferred = _run(tmp_path, "posts_run", tmp_path / "posts", POSTS, infer=True)
    docs = _documents(run_dir)
    assert sorted(docs) == ["ana", "ben"] and docs["ana"].count("Finished my nursing shift") == 1
    assert (ingested["users_out"], ingested["users_rejected"]) == (2, 1)
    reasons = sorted(r["reason"] for r in pq.read_table(run_dir / "rejects").to_pylist())
    # the post delivered twice is one event (the same derived id); cy's only post has empty text (a field
    # the template needs); a broken line
    assert reasons == ["duplicate_event", "malformed_row", "missing_field", "no_usable_events"]
    profiles = pq.read_table(run_dir / "profiles" / "dt=2026-01-02")
    assert sorted(profiles.column("user_id").to_pylist()) == ["ana", "ben"] and inferred["users"] == 2

    # The clickstream exported as CSV (every value text, as CSV gives it): the same documents.
    (tmp_path / "csv").mkdir()
    pacsv.write_csv(_clicks(), tmp_path / "csv" / "clicks.csv")
    _, csv_run, _, _ = _run(tmp_path, "csv_run", tmp_path / "csv", CLICKS, infer=False)
    assert _documents(csv_run) == _documents(tmp_path / "clicks_run")
    ray.shutdown()
