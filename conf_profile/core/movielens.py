"""MovieLens 100K as user logs: parse its files (text in, rows out) into our log schema and a truth table.

Two layouts carry the same data:

- the official ``ml-100k.zip``: ``u.user`` (``id|age|gender|occupation|zip``), ``u.data`` (tab-separated
  ``user item rating timestamp``) and ``u.item`` (``id|title (year)|release date|video date|url|19 genre
  flags``), in Latin-1;
- the ``recbole`` wheel's ``ml-100k.{user,inter,item}``: tab-separated with a typed header line, the title
  without its year (``release_year`` beside it) and the genres space-separated in ``class``.

Every rating becomes one ``watch`` event (title with year, genres as tags, the 1-5 rating, the rating time);
the truth holds gender, age group and occupation in the values of ``taxonomy_movielens.yaml``.

>>> users, ratings, movies = parse_official("1|24|M|technician|85711", "1\\t7\\t4\\t881250949",
...     "7|Twelve Monkeys (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|1|0|0|0")
>>> log_row(ratings[0], movies)["payload"]
'{"title": "Twelve Monkeys (1995)", "tags": ["Drama", "Sci-Fi"], "rating": 4}'
>>> truth_row(users[0])
{'user_id': '1', 'gender': 'male', 'age_group': 'age_18_24', 'occupation': 'technician'}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The genre flags of u.item, in file order (u.genre).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
)  # fmt: skip
GENDERS = {"M": "male", "F": "female"}
_AGE_BANDS = ((18, "under_18"), (25, "age_18_24"), (35, "age_25_34"), (45, "age_35_44"), (55, "age_45_54"))
_YEAR = re.compile(r"^\d{4}$")


class MovieLensFormatError(ValueError):
    """A MovieLens file that does not have the expected layout (the message names the file and line)."""


@dataclass(frozen=True)
class User:
    user_id: str
    age: int
    gender: str  # M or F
    occupation: str


@dataclass(frozen=True)
class Rating:
    user_id: str
    item_id: str
    rating: int
    ts: int  # epoch seconds


@dataclass(frozen=True)
class Movie:
    title: str  # with the year in brackets when the data has one
    genres: tuple[str, ...]  # without "unknown"


def age_group(age: int) -> str:
    """The taxonomy's age bracket of an age in years.

    >>> [age_group(a) for a in (7, 18, 24, 25, 44, 45, 54, 55, 73)]  # doctest: +NORMALIZE_WHITESPACE
    ['under_18', 'age_18_24', 'age_18_24', 'age_25_34', 'age_35_44', 'age_45_54', 'age_45_54',
     'age_55_plus', 'age_55_plus']
    """
    for upper, name in _AGE_BANDS:
        if age < upper:
            return name
    return "age_55_plus"


def parse_official(user_text: str, data_text: str, item_text: str) -> tuple[list[User], list[Rating], dict[str, Movie]]:
    """The official layout (``u.user``, ``u.data``, ``u.item``)."""
    users = [_user(f, "u.user", n) for n, f in _fields(user_text, "|", 5, "u.user", header=False)]
    ratings = [_rating(f, "u.data", n) for n, f in _fields(data_text, "\t", 4, "u.data", header=False)]
    movies: dict[str, Movie] = {}
    for n, f in _fields(item_text, "|", 5 + len(GENRES), "u.item", header=False):
        flags = f[5:]
        if any(x not in ("0", "1") for x in flags):
            raise MovieLensFormatError(f"u.item line {n}: genre flags must be 0 or 1, got {flags}")
        genres = tuple(g for g, x in zip(GENRES, flags, strict=True) if x == "1" and g != "unknown")
        movies[f[0]] = Movie(title=f[1].strip() or "untitled", genres=genres)
    return users, ratings, movies


def parse_recbole(user_text: str, inter_text: str, item_text: str) -> tuple[list[User], list[Rating], dict[str, Movie]]:
    """The recbole layout (``ml-100k.user``, ``ml-100k.inter``, ``ml-100k.item``, each with a header line)."""
    users = [_user(f, "ml-100k.user", n) for n, f in _fields(user_text, "\t", 5, "ml-100k.user", header=True)]
    ratings = [_rating(f, "ml-100k.inter", n) for n, f in _fields(inter_text, "\t", 4, "ml-100k.inter", header=True)]
    movies: dict[str, Movie] = {}
    for _, f in _fields(item_text, "\t", 4, "ml-100k.item", header=True):
        title, year = f[1].strip() or "untitled", f[2].strip()
        genres = tuple(g for g in f[3].split() if g != "unknown")
        movies[f[0]] = Movie(title=f"{title} ({year})" if _YEAR.match(year) else title, genres=genres)
    return users, ratings, movies


def log_row(r: Rating, movies: dict[str, Movie]) -> dict[str, Any]:
    """One rating as a row of the log schema (a ``watch`` event)."""
    movie = movies.get(r.item_id)
    if movie is None:
        raise MovieLensFormatError(f"rating of user {r.user_id}: movie {r.item_id} is not in the item file")
    payload: dict[str, Any] = {"title": movie.title}
    if movie.genres:
        payload["tags"] = list(movie.genres)
    payload["rating"] = r.rating
    return {
        "event_id": f"ml-{r.user_id}-{r.item_id}",  # a user rates a movie once
        "user_id": r.user_id,
        "event_time": datetime.fromtimestamp(r.ts, UTC).isoformat().replace("+00:00", "Z"),
        "event_type": "watch",
        "payload": json.dumps(payload, ensure_ascii=False),
    }


def truth_row(u: User) -> dict[str, Any]:
    """One user's truth in the values of ``taxonomy_movielens.yaml``."""
    return {"user_id": u.user_id, "gender": GENDERS[u.gender], "age_group": age_group(u.age),
            "occupation": u.occupation}  # fmt: skip


def _fields(text: str, sep: str, width: int, name: str, header: bool) -> list[tuple[int, list[str]]]:
    lines = text.splitlines()
    start = 1 if header else 0
    if header and (not lines or ":" not in lines[0]):
        raise MovieLensFormatError(f"{name}: the first line must be the typed header (e.g. 'user_id:token ...')")
    out = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        f = line.split(sep)
        if len(f) != width:
            raise MovieLensFormatError(f"{name} line {n}: expected {width} fields separated by {sep!r}, got {len(f)}")
        out.append((n, f))
    if not out:
        raise MovieLensFormatError(f"{name}: no rows")
    return out


def _user(f: list[str], name: str, n: int) -> User:
    if not f[1].isdigit() or f[2] not in GENDERS or f[3] not in OCCUPATIONS:
        raise MovieLensFormatError(f"{name} line {n}: expected age, M/F and a MovieLens occupation, got {f[1:4]}")
    return User(user_id=f[0].strip(), age=int(f[1]), gender=f[2], occupation=f[3])


def _rating(f: list[str], name: str, n: int) -> Rating:
    try:
        rating, ts = float(f[2]), float(f[3])
    except ValueError:
        raise MovieLensFormatError(f"{name} line {n}: rating and timestamp must be numbers, got {f[2:4]}") from None
    if rating not in (1, 2, 3, 4, 5):
        raise MovieLensFormatError(f"{name} line {n}: rating must be 1-5, got {f[2]}")
    return Rating(user_id=f[0].strip(), item_id=f[1].strip(), rating=int(rating), ts=int(ts))
