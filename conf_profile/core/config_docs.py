"""The configuration reference, generated from the config classes (docs/configuration.md): every key with
its type, default and the comment written beside it in conf_profile/core/settings.py, so the reference
cannot drift from the code. ``python -m jobs.config_reference`` writes it; a test checks it is current.

>>> text = config_reference()
>>> "| `data.users` | int | `56` |" in text
True
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import types
import typing
from typing import Any

from conf_profile.core import mapping, settings

MODULES = (settings, mapping)  # where the config classes and their comments are

_HEADER = """# Configuration reference

Generated from `conf_profile/core/settings.py` by `python -m jobs.config_reference`; do not edit by hand.

Values come from the defaults below, then a YAML file (`--config FILE`, same nesting as the keys), then
`--set key=value` (repeatable). An unknown key, a wrong type or an invalid value stops a job before any
work, naming the key and the fix. List items (`label.teachers`) take the keys of their own table, e.g.
`--set 'label.teachers=[{name: big, model: /models/teacher, samples: 5}]'`.
"""


def field_comments() -> dict[str, dict[str, str]]:
    """class name -> field name -> its comment in settings.py (or core/mapping.py): the comment lines right
    above the field, then the comment at the end of its line."""
    out: dict[str, dict[str, str]] = {}
    for module in MODULES:
        out.update(_module_comments(inspect.getsource(module)))
    return out


def _module_comments(source: str) -> dict[str, dict[str, str]]:
    lines = source.splitlines()
    trailing: dict[int, str] = {}
    standalone: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (standalone if lines[tok.start[0] - 1].lstrip().startswith("#") else trailing)[tok.start[0]] = text
    out: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            fields = out.setdefault(node.name, {})
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    above: list[str] = []
                    line = stmt.lineno - 1
                    while line in standalone:
                        above.insert(0, standalone[line])
                        line -= 1
                    end = trailing.get(stmt.end_lineno or stmt.lineno, "")
                    fields[stmt.target.id] = " ".join([*above, end]).strip()
    return out


def config_reference(root: type = settings.Config) -> str:
    comments = field_comments()
    parts = [_HEADER]
    for prefix, cls in _sections(root, ""):
        doc = inspect.cleandoc(cls.__doc__ or "") if cls.__doc__ and not cls.__doc__.startswith(cls.__name__) else ""
        parts.append(f"\n## `{prefix}`\n")
        if doc:
            parts.append(doc.replace("\n", " ") + "\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) or _list_of_dataclass(tp) or _dict_of_dataclass(tp):
                continue
            comment = _comment(comments, cls, f.name)
            parts.append(f"| `{prefix}.{f.name}` | {_type_name(tp)} | `{_default(f)}` | {comment} |")
    return "\n".join(parts) + "\n"


def _sections(cls: type, prefix: str) -> list[tuple[str, type]]:
    out = [(prefix, cls)] if prefix else []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            out += _sections(typing.cast(type, tp), name)
        elif _list_of_dataclass(tp):
            out += _sections(typing.get_args(tp)[0], f"{name}[]")
        elif _dict_of_dataclass(tp):
            out += _sections(typing.get_args(tp)[1], f"{name}.<name>")
    return out


def _comment(comments: dict[str, dict[str, str]], cls: type, name: str) -> str:
    for klass in cls.__mro__:
        text = comments.get(klass.__name__, {}).get(name)
        if text:
            return text.replace("|", "\\|")
    return ""


def _list_of_dataclass(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is list and len(args) == 1 and dataclasses.is_dataclass(args[0])


def _dict_of_dataclass(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1])


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args).replace("'", '"')
    if args:
        inner = [_type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            return f"{' or '.join(inner)} or null"
        if origin in (typing.Union, types.UnionType):
            return " or ".join(inner)
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(inner)}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
