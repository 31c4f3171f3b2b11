from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.synthetic.dataset import write_dataset
from conf_profile.synthetic.generator import (
    ATTRIBUTES,
    BAD_KINDS,
    EVENT_TYPES,
    LOG_SCHEMA,
    OVERSIZE_CHARS,
    TRUTH_SCHEMA,
    iter_blocks,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, users=2500, seed=7, bad_fraction=0.05, files=3)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, dataset) -> None:
    again = tmp_path / "again"
    write_dataset(again, users=2500, seed=7, bad_fraction=0.05, files=3)
    assert _digest(again) == _digest(dataset)
    other = tmp_path / "other"
    write_dataset(other, users=2500, seed=8, bad_fraction=0.05, files=3)
    assert _digest(other)["truth.parquet"] != _digest(dataset)["truth.parquet"]


def test_layout_schema_and_counts(dataset) -> None:
    files = sorted((dataset / "logs").glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{k:05d}-of-00003.parquet" for k in range(3)]
    logs = ds.dataset(dataset / "logs").to_table()
    assert logs.schema == LOG_SCHEMA
    truth = pq.read_table(dataset / "truth.parquet")
    assert truth.schema == TRUTH_SCHEMA and truth.num_rows == 2500
    assert len(set(truth.column("user_id").to_pylist())) == 2500
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["rows"] == logs.num_rows and summary["users"] == 2500
    assert summary["bad_rows"] == pq.read_table(dataset / "bad_rows.parquet").num_rows
    assert not (dataset.parent / "data.partial").exists()


def test_every_user_has_events_and_they_are_spread_over_files(dataset) -> None:
    truth_ids = set(pq.read_table(dataset / "truth.parquet").column("user_id").to_pylist())
    per_file = [
        set(pq.read_table(f).column("user_id").to_pylist()) - {None, ""}
        for f in sorted((dataset / "logs").glob("*.parquet"))
    ]
    assert set().union(*per_file) == truth_ids
    assert sum(1 for uid in truth_ids if sum(uid in s for s in per_file) > 1) > 0.5 * len(truth_ids)


def test_truth_uses_the_default_taxonomy_and_is_coherent(dataset) -> None:
    tax = load_taxonomy()
    rows = pq.read_table(dataset / "truth.parquet").to_pylist()
    for attr in ATTRIBUTES:
        seen = {r[attr] for r in rows}
        assert seen <= set(tax.attribute(attr).value_names) - {"unknown"}, attr
        assert len(seen) >= 2, attr
    for r in rows:
        if r["age_group"] == "under_18":
            assert (r["life_stage"], r["occupation"], r["education"]) == ("student", "student", "secondary")
        if r["occupation"] in ("student", "retired", "homemaker"):
            assert r["industry"] == "not_working"
    signals = {r["signal"] for r in rows}
    assert signals == {"strong", "medium", "weak", "none"}


def test_good_rows_are_valid_and_heterogeneous(dataset) -> None:
    logs = ds.dataset(dataset / "logs").to_table()
    bad_ids = set(pq.read_table(dataset / "bad_rows.parquet").column("event_id").to_pylist())
    good = logs.filter(
        pc.invert(pc.is_in(logs.column("event_id"), value_set=__import__("pyarrow").array(list(bad_ids))))
    )
    assert set(good.column("event_type").to_pylist()) == set(EVENT_TYPES)
    texts = []
    for row in good.to_pylist():
        payload = json.loads(row["payload"])
        assert isinstance(payload, dict) and row["user_id"].startswith("u_")
        assert row["event_time"][:4] == "2026"
        texts.append(json.dumps(payload, ensure_ascii=False))
    joined = "\n".join(texts)
    assert any(ch in joined for ch in "😂🔥✨") and "这个视频" in joined
    assert max(len(t) for t in texts) > 1500  # very long (but valid) texts exist
    assert good.num_rows > len(set(good.column("event_id").to_pylist()))  # exact duplicate deliveries


def test_every_bad_kind_is_present_and_really_bad(dataset) -> None:
    bad = pq.read_table(dataset / "bad_rows.parquet")
    assert set(bad.column("kind").to_pylist()) == set(BAD_KINDS)
    logs = {r["event_id"]: r for r in ds.dataset(dataset / "logs").to_table().to_pylist()}
    for row in bad.to_pylist():
        event = logs[row["event_id"]]
        kind = row["kind"]
        if kind == "missing_user_id":
            assert not event["user_id"]
        elif kind == "bad_timestamp":
            assert not event["event_time"].startswith("2026-") or event["event_time"].startswith("2026-02-30")
        elif kind == "unknown_event_type":
            assert event["event_type"] not in EVENT_TYPES
        elif kind == "malformed_payload":
            with pytest.raises((ValueError, TypeError, AssertionError)):
                assert isinstance(json.loads(event["payload"]), dict)
        elif kind == "wrong_type":
            assert not isinstance(json.loads(event["payload"])["title"], str)
        elif kind == "oversize_text":
            assert len(json.loads(event["payload"])["text"]) >= OVERSIZE_CHARS - 5
        elif kind == "invalid_unicode":
            with pytest.raises(UnicodeEncodeError):
                json.loads(event["payload"])["text"].encode("utf-8")


def test_rejects_bad_arguments(tmp_path, dataset) -> None:
    with pytest.raises(ValueError, match="users must be >= 1"):
        next(iter_blocks(0, 0, 0.0))
    with pytest.raises(ValueError, match="bad_fraction"):
        next(iter_blocks(10, 0, 1.0))
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset(dataset, users=10)
