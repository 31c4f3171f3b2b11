from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from conf_profile.cli import load_config
from conf_profile.core.config import ConfigError, build, load_yaml, merge, parse_overrides, to_dict
from conf_profile.core.settings import Config


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["x"])
    path: str | None = None

    def validate(self) -> None:
        if self.rate > 1:
            raise ValueError(f"rate={self.rate}: must be at most 1")


@dataclass
class Outer:
    count: int = 3
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_then_yaml_then_overrides() -> None:
    cfg = build(Outer, {"count": 4, "inner": {"rate": 0.1, "mode": "b"}}, ["count=5", "inner.names=[p, q]"])
    assert cfg == Outer(count=5, flag=False, inner=Inner(mode="b", rate=0.1, names=["p", "q"], path=None))
    assert build(Outer) == Outer()


def test_int_is_accepted_for_float_and_optional_accepts_null() -> None:
    cfg = build(Outer, {"inner": {"rate": 1, "path": None}})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float) and cfg.inner.path is None
    assert build(Outer, overrides=["inner.path=/data/x"]).inner.path == "/data/x"


@pytest.mark.parametrize(
    ("data", "overrides", "needle"),
    [
        ({"cont": 1}, [], "unknown config key 'cont'; did you mean 'count'?"),
        ({}, ["inner.rat=0.2"], "unknown config key 'inner.rat'; did you mean 'rate'?"),
        ({"count": "many"}, [], "count='many': expected a whole number"),
        ({"count": True}, [], "count=True: expected a whole number"),
        ({"flag": "yes please"}, [], "flag='yes please': expected true or false"),
        ({"inner": {"mode": "c"}}, [], "inner.mode='c' is not allowed; choose one of 'a', 'b'"),
        ({"inner": {"names": "x"}}, [], "inner.names='x': expected a list"),
        ({"inner": 3}, [], "inner: expected a mapping"),
        ({"inner": {"rate": 2}}, [], "inner: rate=2.0: must be at most 1"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(data, overrides, needle) -> None:
    with pytest.raises(ConfigError) as info:
        build(Outer, data, overrides)
    assert needle in str(info.value)


def test_parse_overrides_reads_yaml_scalars_and_rejects_malformed() -> None:
    assert parse_overrides(["a.b=1.5", "a.c=null", "d=hello world", "e="]) == {
        "a": {"b": 1.5, "c": None},
        "d": "hello world",
        "e": "",
    }
    for bad in ["novalue", "=3", "a..b=1"]:
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="already set to a plain value"):
        parse_overrides(["a=1", "a.b=2"])


def test_merge_is_recursive_and_does_not_mutate() -> None:
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": 1}
    out = merge(base, {"a": {"c": {"d": 3}}})
    assert out == {"a": {"b": 1, "c": {"d": 3}}, "e": 1}
    assert base["a"]["c"]["d"] == 2


def test_load_yaml(tmp_path) -> None:
    good = tmp_path / "c.yaml"
    good.write_text("data:\n  users: 12\n")
    assert load_yaml(good) == {"data": {"users": 12}}
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("data: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")


def test_project_config_round_trips_through_its_dict() -> None:
    cfg = build(Config, overrides=["data.users=7"])
    assert build(Config, to_dict(cfg)) == cfg
    assert cfg.data.users == 7


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(config=kw.get("config"), overrides=kw.get("overrides", []), run_dir=None)


def test_load_config_exits_2_with_a_message(tmp_path, capsys) -> None:
    assert load_config(_args(overrides=["data.users=9"])).data.users == 9
    with pytest.raises(SystemExit) as info:
        load_config(_args(overrides=["data.bad_fraction=1.5"]))
    assert info.value.code == 2
    assert "data: bad_fraction=1.5: must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_config(_args(overrides=[f"taxonomy.path={tmp_path / 'nope.yaml'}"]))
    assert "does not exist; set taxonomy.path" in capsys.readouterr().err


def test_a_yaml_date_is_read_as_its_iso_string_and_bad_dates_are_named() -> None:
    cfg = build(Config, overrides=["infer.date=2026-11-20"])
    assert cfg.infer.date == "2026-11-20"
    with pytest.raises(ConfigError, match="infer: date="):
        build(Config, overrides=["infer.date=20-11-2026"])
    with pytest.raises(ConfigError, match="temperature"):
        build(Config, overrides=["infer.samples=3"])  # greedy k samples would repeat one output


def test_a_bare_on_or_off_is_the_choice_not_a_boolean() -> None:
    # YAML reads `off` as false; a setting whose choices are on/off takes it as the word
    cfg = build(Config, overrides=["train_rl.use_vllm=off"])
    assert cfg.train_rl.use_vllm == "off"
    assert build(Config, {"train_rl": {"use_vllm": True}}).train_rl.use_vllm == "on"
    with pytest.raises(ConfigError, match="choose one of"):
        build(Config, overrides=["label.engine.device=off"])
