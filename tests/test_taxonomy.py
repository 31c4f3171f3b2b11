from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conf_profile.core.taxonomy import UNKNOWN, TaxonomyError, load_taxonomy, taxonomy_from_dict

SMALL = {
    "name": "small",
    "attributes": [
        {
            "name": "gender",
            "description": "Gender.",
            "values": [{"name": "male", "definition": "A man."}, {"name": "female", "definition": "A woman."}],
        },
        {
            "name": "age_group",
            "description": "Age.",
            "values": [{"name": "young", "definition": "Under 30."}, {"name": UNKNOWN, "definition": "Cannot tell."}],
        },
    ],
}


def test_default_taxonomy_has_the_six_dimensions_with_definitions() -> None:
    tax = load_taxonomy()
    assert tax.attribute_names == ("gender", "age_group", "life_stage", "occupation", "industry", "education")
    for attr in tax.attributes:
        assert attr.value_names[-1] == UNKNOWN and attr.value_names.count(UNKNOWN) == 1
        assert len(attr.values) >= 3
        assert all(v.definition and "\n" not in v.definition for v in attr.values)


def test_unknown_is_added_once_and_an_explicit_one_is_kept() -> None:
    tax = taxonomy_from_dict(SMALL)
    assert tax.attribute("gender").value_names == ("male", "female", UNKNOWN)
    assert tax.attribute("age_group").values[-1].definition == "Cannot tell."


def test_version_is_a_content_hash() -> None:
    a, b = taxonomy_from_dict(SMALL), taxonomy_from_dict(copy.deepcopy(SMALL))
    assert a.version == b.version
    changed = copy.deepcopy(SMALL)
    changed["attributes"][0]["values"][0]["definition"] = "An adult man."
    assert taxonomy_from_dict(changed).version != a.version
    assert load_taxonomy().version == load_taxonomy().version


def _with(path, value):
    data = copy.deepcopy(SMALL)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_with(["attributes", 0, "values", 1, "name"], "male"), "value 'male' appears twice"),
        (_with(["attributes", 1, "name"], "gender"), "attribute 'gender' appears twice"),
        (_with(["attributes", 0, "name"], "Gender!"), "must be lower-case letters"),
        (_with(["attributes", 0, "values"], []), "'values' must be a non-empty list"),
        (_with(["attributes", 0, "values"], [{"name": UNKNOWN, "definition": "x"}]), "needs at least one value"),
        (_with(["attributes", 0, "values", 0], {"name": "male"}), "exactly 'name' and 'definition'"),
        (_with(["attributes", 0, "values", 0, "definition"], "two\nlines"), "must be one line"),
        (_with(["attributes", 0, "description"], ""), "'description' must be a non-empty string"),
        (_with(["attributes", 0, "colour"], "red"), "unknown keys ['colour']"),
        (_with(["attributes"], []), "'attributes' must be a non-empty list"),
        (_with(["name"], ""), "'name' must be a non-empty string"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_invalid_taxonomies_fail_with_the_reason(data, needle) -> None:
    with pytest.raises(TaxonomyError) as info:
        taxonomy_from_dict(data)
    assert needle in str(info.value)


def test_load_taxonomy_from_a_file(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nattributes:\n  - name: x\n    description: X.\n    values:\n      - {name: a, definition: A.}\n"
    )
    assert load_taxonomy(path).attribute("x").value_names == ("a", UNKNOWN)
    path.write_text("name: [\n")
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        load_taxonomy(path)
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_taxonomy(tmp_path / "missing.yaml")
    with pytest.raises(KeyError, match="no attribute 'y'"):
        load_taxonomy().attribute("y")


def test_the_platform_in_the_prompts_comes_from_the_taxonomy_file(tmp_path) -> None:
    from conf_profile.core.labeling import prompt_version, system_prompt
    from conf_profile.core.student import student_system_prompt

    default = load_taxonomy()
    assert "one user of a video platform" in system_prompt(default) and default.platform == "a video platform"
    text = (Path(__file__).parents[1] / "conf_profile" / "data" / "taxonomy_default.yaml").read_text()
    path = tmp_path / "shop.yaml"
    path.write_text(text.replace("name: default\n", "name: default\nplatform: an online outdoor shop\n"))
    shop = load_taxonomy(path)
    assert "one user of an online outdoor shop from" in system_prompt(shop)
    assert "one user of an online outdoor shop from" in student_system_prompt(shop)
    assert shop.version != default.version and prompt_version(shop) != prompt_version(default)
    path.write_text(text.replace("name: default\n", "name: default\nplatform: [a, b]\n"))
    with pytest.raises(TaxonomyError, match="'platform' must be one line of text"):
        load_taxonomy(path)
