"""Pseudonymous user ids for the output tables: a keyed hash (HMAC-SHA256) of the id, so the same user
gets the same pseudonym in every table and every night, and nobody without the key can recompute it from a
known id. The key comes from an environment variable (``privacy.key_env``), never from the config.

>>> pseudonym("u_42", b"secret") == pseudonym("u_42", b"secret") != pseudonym("u_42", b"other")
True
>>> len(pseudonym("u_42", b"secret")), pseudonym("u_42", b"secret").startswith("p_")
(34, True)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from conf_profile.core.settings import Config


def pseudonym(user_id: str, key: bytes) -> str:
    """``p_`` + 32 hex digits (128 bits) of HMAC-SHA256(key, user_id)."""
    return "p_" + hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def pseudonymize(table: pa.Table, key: bytes, column: str = "user_id") -> pa.Table:
    """The table with ``column`` replaced by pseudonyms (nulls stay null)."""
    ids = table.column(column).to_pylist()
    mapped = pa.array([None if u is None else pseudonym(u, key) for u in ids], pa.string())
    return table.set_column(table.column_names.index(column), column, mapped)


def id_key(cfg: Config) -> bytes | None:
    """The pseudonymization key (from the environment variable ``privacy.key_env``), or None when ids are
    kept (``privacy.pseudonymize_ids`` off)."""
    return os.environ[cfg.privacy.key_env].encode("utf-8") if cfg.privacy.pseudonymize_ids else None
