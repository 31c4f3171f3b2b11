"""The MovieLens adapter on tiny fixtures written here in both file layouts (never the real data set), and
the references (majority class, logistic regression) on a hand-made run directory."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.bench.ingest_local import run_ingest_local
from conf_profile.core.baselines import half, majority
from conf_profile.core.config import build
from conf_profile.core.config import load_yaml as load_config_yaml
from conf_profile.core.events import Event, Limits, parse_event, parse_time_ms
from conf_profile.core.movielens import (
    GENRES,
    OCCUPATIONS,
    MovieLensFormatError,
    age_group,
    parse_official,
    parse_recbole,
)
from conf_profile.core.settings import Config, IngestConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.datasets.movielens import WHEEL, WHEEL_DIR, fetch_wheel, import_movielens, read_source
from conf_profile.stages.baselines import run_references
from conf_profile.stages.evaluate import run_evaluate

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = str(ROOT / "conf_profile" / "data" / "taxonomy_movielens.yaml")
# (id, age, gender, occupation); (item, title, year, genres); (user, item, rating, time)
USERS = [("1", 24, "M", "technician"), ("2", 53, "F", "other"), ("3", 17, "F", "student"), ("4", 60, "M", "retired")]
MOVIES = [("1", "Toy Story", "1995", ["Animation", "Children's", "Comedy"]), ("2", "Amélie", "2001", ["Comedy"]),
          ("3", "unknown", "", [])]  # fmt: skip
RATINGS = [("1", "1", 5, 874965758), ("1", "2", 3, 876893171), ("2", "1", 4, 888550871), ("3", "3", 1, 889751712),
           ("4", "2", 2, 875071561)]  # fmt: skip


def official_texts() -> dict[str, bytes]:
    user = "\n".join(f"{u}|{a}|{g}|{o}|85711" for u, a, g, o in USERS)
    data = "\n".join(f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS)
    items = []
    for i, title, year, genres in MOVIES:
        flags = "|".join("1" if (g in genres or (g == "unknown" and not genres)) else "0" for g in GENRES)
        items.append(f"{i}|{title + (f' ({year})' if year else '')}|01-Jan-{year or 1995}||http://x|{flags}")
    return {"u.user": user.encode("latin-1"), "u.data": data.encode(), "u.item": "\n".join(items).encode("latin-1")}


def recbole_texts() -> dict[str, bytes]:
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    user += [f"{u}\t{a}\t{g}\t{o}\t85711" for u, a, g, o in USERS]
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS]
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [f"{i}\t{t}\t{y or 'unkonwn'}\t{' '.join(g) or 'unknown'}" for i, t, y, g in MOVIES]
    return {f"ml-100k.{k}": "\n".join(v).encode("utf-8") for k, v in (("user", user), ("inter", inter), ("item", item))}


def write_zip(path: Path, prefix: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(prefix + name, data)
    return path


def test_the_official_zip_becomes_one_watch_event_per_rating_and_a_truth_table(tmp_path) -> None:
    source = write_zip(tmp_path / "ml-100k.zip", "ml-100k/", official_texts())
    summary = import_movielens(tmp_path / "out", str(source))
    assert summary | {"source": None} == {"users": 4, "users_with_ratings": 4, "ratings": 5, "movies": 3,
                                          "ratings_of_unknown_users": 0, "source": None}  # fmt: skip
    logs = pq.read_table(tmp_path / "out" / "logs").to_pylist()
    assert [r["event_id"] for r in logs] == ["ml-1-1", "ml-1-2", "ml-2-1", "ml-3-3", "ml-4-2"]  # by user, then time
    first = logs[0]
    assert first["event_type"] == "watch" and first["event_time"] == "1997-09-22T22:02:38Z"
    assert json.loads(first["payload"]) == {"title": "Toy Story (1995)", "tags": ["Animation", "Children's", "Comedy"],
                                            "rating": 5}  # fmt: skip
    assert json.loads(logs[1]["payload"])["title"] == "Amélie (2001)"  # Latin-1 decoded
    assert "tags" not in json.loads(logs[3]["payload"])  # the "unknown" genre is no tag
    truth = pq.read_table(tmp_path / "out" / "truth.parquet").to_pylist()
    assert truth == [
        {"user_id": "1", "gender": "male", "age_group": "age_18_24", "occupation": "technician"},
        {"user_id": "2", "gender": "female", "age_group": "age_45_54", "occupation": "other"},
        {"user_id": "3", "gender": "female", "age_group": "under_18", "occupation": "student"},
        {"user_id": "4", "gender": "male", "age_group": "age_55_plus", "occupation": "retired"},
    ]
    taxonomy = load_taxonomy(TAXONOMY)  # every truth value is a value of the shipped taxonomy
    for attr in taxonomy.attributes:
        assert {row[attr.name] for row in truth} <= set(attr.value_names)
    assert set(taxonomy.attributes[2].value_names) == {*OCCUPATIONS, "unknown"}
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["source"] == str(source)


def test_the_recbole_wheel_and_an_extracted_folder_give_the_same_tables(tmp_path) -> None:
    official = read_source(write_zip(tmp_path / "ml-100k.zip", "ml-100k/", official_texts()))
    wheel = read_source(write_zip(tmp_path / WHEEL, WHEEL_DIR, recbole_texts()))
    folder = tmp_path / "extracted" / "ml-100k"
    folder.mkdir(parents=True)
    for name, data in official_texts().items():
        (folder / name).write_bytes(data)
    assert wheel == official == read_source(tmp_path / "extracted")


def test_a_cached_wheel_is_used_without_downloading(tmp_path) -> None:
    (tmp_path / "movielens").mkdir()
    cached = write_zip(tmp_path / "movielens" / WHEEL, WHEEL_DIR, recbole_texts())
    assert fetch_wheel(tmp_path) == cached
    summary = import_movielens(tmp_path / "out", cache_dir=str(tmp_path))
    assert summary["ratings"] == 5 and summary["source"] == str(cached)


def test_every_imported_row_is_a_valid_event_and_ingest_keeps_every_user(tmp_path) -> None:
    import_movielens(tmp_path / "out", str(write_zip(tmp_path / "ml.zip", "ml-100k/", official_texts())))
    cfg = build(Config, load_config_yaml(str(ROOT / "jobs" / "configs" / "movielens.yaml")))
    min_time = parse_time_ms(cfg.ingest.min_event_time)
    for row in pq.read_table(tmp_path / "out" / "logs").to_pylist():
        assert isinstance(parse_event(row, Limits(min_time_ms=min_time)), Event), row
    summary = run_ingest_local(cfg.ingest, str(tmp_path / "out" / "logs"), tmp_path / "run")
    docs = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    assert sorted(d["user_id"] for d in docs) == ["1", "2", "3", "4"], summary
    assert "(rated 5/5)" in next(d["document"] for d in docs if d["user_id"] == "1")
    # with the default earliest event time (2000) the 1997-98 ratings would all be rejected
    run_ingest_local(IngestConfig(), str(tmp_path / "out" / "logs"), tmp_path / "run_default")
    assert not list((tmp_path / "run_default" / "documents").glob("*.parquet"))


def test_the_movielens_config_loads_and_names_the_shipped_taxonomy() -> None:
    cfg = build(Config, load_config_yaml(str(ROOT / "jobs" / "configs" / "movielens.yaml")))
    assert (ROOT / cfg.taxonomy.path).is_file()
    assert load_taxonomy(ROOT / cfg.taxonomy.path).attribute_names == ("gender", "age_group", "occupation")
    assert cfg.input.logs and cfg.input.truth and cfg.ingest.source_budgets["watch"] == cfg.ingest.token_budget


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"u.user": b"1|24|M|technician", "u.data": b"1\t1\t5\t1", "u.item": b"x"}, "u.user line 1: expected 5"),
        ({"u.user": b"1|24|X|technician|0", "u.data": b"1\t1\t5\t1", "u.item": b"x"}, "M/F"),
        ({"u.user": b"1|24|M|pilot|0", "u.data": b"1\t1\t5\t1", "u.item": b"x"}, "MovieLens occupation"),
        ({"u.user": b"1|24|M|writer|0", "u.data": b"1\t1\t9\t1", "u.item": b"x"}, "rating must be 1-5"),
        ({"u.user": b"1|24|M|writer|0", "u.data": b"", "u.item": b"x"}, "u.data: no rows"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, files, message) -> None:
    with pytest.raises(MovieLensFormatError, match=message):
        read_source(write_zip(tmp_path / "bad.zip", "ml-100k/", files))


def test_missing_files_and_a_rating_of_an_unknown_movie_are_clear_errors(tmp_path) -> None:
    with pytest.raises(MovieLensFormatError, match="has neither"):
        read_source(write_zip(tmp_path / "other.zip", "x/", {"readme.txt": b"hi"}))
    (tmp_path / "plain.txt").write_text("not a zip")
    with pytest.raises(MovieLensFormatError, match="not a zip"):
        read_source(tmp_path / "plain.txt")
    texts = official_texts() | {"u.data": b"1\t99\t5\t874965758"}
    with pytest.raises(MovieLensFormatError, match="movie 99 is not in the item file"):
        import_movielens(tmp_path / "out", str(write_zip(tmp_path / "ml.zip", "ml-100k/", texts)))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_the_job_refuses_to_overwrite_and_reports_a_missing_source_in_one_line(tmp_path) -> None:
    source = write_zip(tmp_path / "ml.zip", "ml-100k/", official_texts())
    job = [sys.executable, "-m", "jobs.import_movielens", "--out", str(tmp_path / "out")]
    assert subprocess.run([*job, "--source", str(source)], capture_output=True, cwd=ROOT).returncode == 0
    again = subprocess.run([*job, "--source", str(source)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run([*job, "--source", str(tmp_path / "nope.zip"), "--overwrite"], capture_output=True,
                             text=True, cwd=ROOT)  # fmt: skip
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_parsers_agree_on_parsed_records() -> None:
    o = official_texts()
    r = recbole_texts()
    assert parse_official(*(o[k].decode("latin-1") for k in ("u.user", "u.data", "u.item"))) == parse_recbole(
        *(r[f"ml-100k.{k}"].decode() for k in ("user", "inter", "item"))
    )
    assert [age_group(a) for a in (17, 18, 34, 35, 54, 55)] == [
        "under_18", "age_18_24", "age_25_34", "age_35_44", "age_45_54", "age_55_plus"]  # fmt: skip


def test_half_is_a_stable_split_and_majority_breaks_ties_by_name() -> None:
    users = [str(i) for i in range(1000)]
    halves = [half(u) for u in users]
    assert halves == [half(u) for u in users] and 400 < halves.count("train") < 600
    assert majority(["b", "a", "b", "a", "c"]) == ("a", 0.4)
    assert majority(["x"]) == ("x", 1.0)
    with pytest.raises(ValueError):
        majority([])


def _references_run(tmp_path: Path, users: int = 120) -> tuple[Path, Path]:
    """A run directory with documents whose words carry gender (and nothing else), and its truth."""
    run = tmp_path / "run"
    (run / "documents").mkdir(parents=True)
    ids = [f"u{i}" for i in range(users)]
    gender = ["female" if i % 3 == 0 else "male" for i in range(users)]
    titles = {"female": "Sense and Sensibility (1995) [tags: Drama, Romance]", "male": "Die Hard (1988) [tags: Action]"}
    docs = [f"{titles[g]} (rated {1 + i % 5}/5)" for i, g in enumerate(gender)]
    pq.write_table(pa.table({"user_id": ids, "document": docs}), run / "documents" / "part-00000.parquet")
    (run / "votes").mkdir()  # the teacher labeled u0..u9: they are never test users
    labeled = {"user_id": ids[:10], "attribute": ["gender"] * 10, "value": ["male"] * 10, "level": [3] * 10}
    for col in ("single_value", "majority_value"):
        labeled[col] = labeled["value"]
    for col in ("single_confidence", "majority_share", "raw_confidence", "confidence", "mean_confidence"):
        labeled[col] = [0.6] * 10
    pq.write_table(pa.table(labeled), run / "votes" / "part-00000.parquet")
    (run / "teacher_samples").mkdir()
    pq.write_table(pa.table({"user_id": ids[:10]}), run / "teacher_samples" / "part-00000.parquet")
    truth = tmp_path / "truth.parquet"
    pq.write_table(pa.table({"user_id": ids, "gender": gender, "age_group": ["age_25_34"] * users,
                             "occupation": ["student"] * users}), truth)  # fmt: skip
    return run, truth


def test_references_learn_from_the_train_half_and_predict_the_other_half(tmp_path) -> None:
    pytest.importorskip("sklearn")
    run, truth = _references_run(tmp_path)
    cfg = build(Config, {"taxonomy": {"path": TAXONOMY}})
    out = run_references(cfg, run, str(truth))
    test_users = pq.read_table(run / "references" / "test_users.parquet").column("user_id").to_pylist()
    assert out["test_users"] == len(test_users) > 20
    assert all(half(u) == "test" for u in test_users) and not set(test_users) & {f"u{i}" for i in range(10)}
    logreg = pq.read_table(run / "predictions" / "ref_logreg").to_pylist()
    majority_rows = pq.read_table(run / "predictions" / "ref_majority").to_pylist()
    assert len(logreg) == len(majority_rows) == 3 * len(test_users)
    assert {r["value"] for r in majority_rows if r["attribute"] == "gender"} == {"male"}
    # the evaluation code scores both on exactly these users; the words carry gender, so logreg is right
    report = run_evaluate(cfg, run, str(truth), str(run / "references" / "test_users.parquet"), "report_test")
    stages = report["stages"]
    assert set(stages) == {"ref_majority", "ref_logreg"}  # the teacher's votes/ has no test user
    assert stages["ref_logreg"]["users"] == stages["ref_majority"]["users"] == len(test_users)
    metrics = json.loads((run / "report_test" / "metrics.json").read_text())["stages"]
    assert metrics["ref_logreg"]["attributes"]["gender"]["f1"] == 1.0
    assert metrics["ref_majority"]["attributes"]["gender"]["f1"] < 0.9
    assert (run / "report_test" / "index.html").is_file() and not (run / "report").exists()


def test_evaluate_with_users_that_no_stage_has_is_a_clear_error(tmp_path) -> None:
    pytest.importorskip("sklearn")
    run, truth = _references_run(tmp_path)
    cfg = build(Config, {"taxonomy": {"path": TAXONOMY}})
    run_references(cfg, run, str(truth))
    pq.write_table(pa.table({"user_id": ["nobody"]}), tmp_path / "nobody.parquet")
    with pytest.raises(FileNotFoundError, match="none of the users"):
        run_evaluate(cfg, run, str(truth), str(tmp_path / "nobody.parquet"), "report_x")
    with pytest.raises(FileNotFoundError, match="--users"):
        run_evaluate(cfg, run, str(truth), str(tmp_path / "missing.parquet"), "report_x")
