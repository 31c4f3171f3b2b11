"""The profile taxonomy: attributes, their closed value sets with definitions, and a content-hash version.

Every attribute admits ``unknown`` (abstain); the loader adds it when the file leaves it out. The version
is a hash of the canonical content, so two files that say the same thing have the same version, and any
change to a name, value or definition changes it.

>>> t = taxonomy_from_dict({"name": "t", "attributes": [
...     {"name": "gender", "description": "Self-presented gender.",
...      "values": [{"name": "male", "definition": "Presents as a man."},
...                 {"name": "female", "definition": "Presents as a woman."}]}]})
>>> t.attribute("gender").value_names
('male', 'female', 'unknown')
>>> len(t.version)
12
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

UNKNOWN = "unknown"
UNKNOWN_DEFINITION = "Not enough evidence in the user's data to decide."
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class TaxonomyError(ValueError):
    """The taxonomy file is malformed; the message names the attribute or value and the fix."""


@dataclass(frozen=True)
class Value:
    name: str
    definition: str


@dataclass(frozen=True)
class Attribute:
    name: str
    description: str
    values: tuple[Value, ...]

    @property
    def value_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.values)


DEFAULT_PLATFORM = "a video platform"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    attributes: tuple[Attribute, ...]
    # Where the users are, as the prompts say it ("one user of {platform}"): the taxonomy file's `platform`
    platform: str = DEFAULT_PLATFORM

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def attribute(self, name: str) -> Attribute:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise KeyError(f"no attribute {name!r} in taxonomy {self.name!r}; have {', '.join(self.attribute_names)}")

    def to_dict(self) -> dict[str, Any]:
        platform = {"platform": self.platform} if self.platform != DEFAULT_PLATFORM else {}
        return {
            "name": self.name,
            **platform,  # left out at the default: the versions of existing taxonomies stay the same
            "attributes": [
                {
                    "name": a.name,
                    "description": a.description,
                    "values": [{"name": v.name, "definition": v.definition} for v in a.values],
                }
                for a in self.attributes
            ],
        }

    @property
    def version(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def taxonomy_from_dict(data: Any, source: str = "taxonomy") -> Taxonomy:
    """Validate and build a taxonomy from parsed YAML; raises :class:`TaxonomyError`."""
    if not isinstance(data, dict):
        raise TaxonomyError(f"{source}: top level must be a mapping with 'name' and 'attributes'")
    unknown_keys = set(data) - {"name", "attributes", "platform"}
    if unknown_keys:
        raise TaxonomyError(f"{source}: unknown top-level keys {sorted(unknown_keys)}; allowed: name, platform, "
                            "attributes")  # fmt: skip
    platform = data.get("platform", DEFAULT_PLATFORM)
    if not isinstance(platform, str) or not platform.strip() or "\n" in platform.strip() or len(platform) > 200:
        raise TaxonomyError(f"{source}: 'platform' must be one line of text, e.g. 'an online bookshop'")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError(f"{source}: 'name' must be a non-empty string")
    raw_attrs = data.get("attributes")
    if not isinstance(raw_attrs, list) or not raw_attrs:
        raise TaxonomyError(f"{source}: 'attributes' must be a non-empty list")
    attrs = tuple(_attribute(raw, f"{source}: attributes[{i}]") for i, raw in enumerate(raw_attrs))
    _no_duplicates([a.name for a in attrs], f"{source}: attribute")
    return Taxonomy(name=name.strip(), attributes=attrs, platform=platform.strip())


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load a taxonomy YAML file; ``None`` loads the default taxonomy shipped with the package."""
    if path is None:
        text = resources.files("conf_profile.data").joinpath("taxonomy_default.yaml").read_text(encoding="utf-8")
        source = "default taxonomy"
    else:
        p = Path(path)
        if not p.is_file():
            raise TaxonomyError(f"taxonomy file {str(path)!r} does not exist; set taxonomy.path to a YAML file")
        text, source = p.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{source}: not valid YAML: {exc}") from exc
    return taxonomy_from_dict(data, source)


def _attribute(raw: Any, where: str) -> Attribute:
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{where}: expected a mapping with name, description, values")
    extra = set(raw) - {"name", "description", "values"}
    if extra:
        raise TaxonomyError(f"{where}: unknown keys {sorted(extra)}; allowed: name, description, values")
    name = _checked_name(raw.get("name"), where)
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise TaxonomyError(f"{where} ({name}): 'description' must be a non-empty string")
    raw_values = raw.get("values")
    if not isinstance(raw_values, list) or not raw_values:
        raise TaxonomyError(f"{where} ({name}): 'values' must be a non-empty list of {{name, definition}}")
    values = [_value(v, f"{where} ({name}) values[{j}]") for j, v in enumerate(raw_values)]
    _no_duplicates([v.name for v in values], f"{where} ({name}): value")
    if not any(v.name == UNKNOWN for v in values):
        values.append(Value(UNKNOWN, UNKNOWN_DEFINITION))
    if len(values) < 2:
        raise TaxonomyError(f"{where} ({name}): needs at least one value besides '{UNKNOWN}'")
    return Attribute(name=name, description=description.strip(), values=tuple(values))


def _value(raw: Any, where: str) -> Value:
    if not isinstance(raw, dict) or set(raw) != {"name", "definition"}:
        raise TaxonomyError(f"{where}: expected a mapping with exactly 'name' and 'definition'")
    definition = raw["definition"]
    if not isinstance(definition, str) or not definition.strip():
        raise TaxonomyError(f"{where}: 'definition' must be a one-line non-empty string")
    if "\n" in definition.strip():
        raise TaxonomyError(f"{where}: 'definition' must be one line")
    return Value(name=_checked_name(raw["name"], where), definition=definition.strip())


def _checked_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TaxonomyError(
            f"{where}: name {name!r} must be lower-case letters, digits and '_' (starting with a letter, "
            "at most 48 characters), e.g. age_group"
        )
    return name


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise TaxonomyError(f"{what} '{n}' appears twice; names must be unique")
        seen.add(n)
