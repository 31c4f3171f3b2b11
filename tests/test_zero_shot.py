"""The zero-shot embedding teacher: its pure scoring (core/zero_shot.py) and its model plumbing
(engines.EmbeddingTeacher) on the embedded MiniLM, without Ray."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from conf_profile.core.config import build
from conf_profile.core.labeling import MAX_EVIDENCE_CHARS, parse_output
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import taxonomy_from_dict
from conf_profile.core.zero_shot import document_lines, judge, level_of, softmax, value_scores, value_texts

TAXONOMY = taxonomy_from_dict({"name": "t", "attributes": [
    {"name": "occupation", "description": "Work.", "values": [
        {"name": "plumber", "definition": "Fixes pipes, drains and water heaters."},
        {"name": "nurse", "definition": "Cares for patients in a hospital ward."}]},
    {"name": "pet", "description": "Pet.", "values": [
        {"name": "dog", "definition": "Owns a dog: walks, leashes, puppies."},
        {"name": "cat", "definition": "Owns a cat: litter, kittens, scratching posts."}]}]})  # fmt: skip


def test_document_lines_are_the_event_texts_after_the_date() -> None:
    doc = "profile (1 event):\n- 2026-07-16 | bio: a | b\nsearch (2 events):\n- 2026-01-02 | x\n-  \n- 2026-01-01 |  y "
    assert document_lines(doc) == ["bio: a | b", "x", "y"]  # only the first " | " separates the date
    assert document_lines("") == [""]  # every user gets a judgement, even from nothing


def test_value_texts_leave_out_unknown_and_keep_the_definitions() -> None:
    texts = value_texts(TAXONOMY)
    assert texts["occupation"] == [("plumber", "Fixes pipes, drains and water heaters."),
                                   ("nurse", "Cares for patients in a hospital ward.")]  # fmt: skip
    assert [v for v, _ in texts["pet"]] == ["dog", "cat"]


def test_value_scores_average_the_best_k_lines_per_value() -> None:
    sims = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4], [0.7, 0.0]])
    assert value_scores(sims, top_k=1).tolist() == [0.7, 0.9]
    assert np.allclose(value_scores(sims, top_k=2), [0.6, 0.65])  # (0.5 + 0.7) / 2, (0.9 + 0.4) / 2
    assert np.allclose(value_scores(sims[:1], top_k=3), [0.1, 0.9])  # fewer lines than k: all of them


def test_softmax_at_a_temperature_and_the_levels() -> None:
    p = softmax(np.array([0.3, 0.2]), temperature=0.1)  # e^1 / (e^1 + e^0)
    assert p[0] == pytest.approx(math.e / (math.e + 1)) and p.sum() == pytest.approx(1.0)
    assert softmax(np.array([1000.0, 0.0]), 0.05).tolist() == [1.0, 0.0]  # no overflow
    assert [level_of(x) for x in (0.0, 0.2, 0.21, 0.4, 0.5, 0.8, 0.81, 1.0)] == [1, 1, 2, 2, 3, 4, 5, 5]


def test_judge_writes_a_teacher_output_the_parser_accepts() -> None:
    lines = ["fixing a leaking pipe under the sink, a long line that goes past the evidence bound", "kitten food"]
    sims = {"occupation": np.array([[0.8, 0.2], [0.1, 0.3]]), "pet": np.array([[0.0, 0.1], [0.2, 0.6]])}
    values = {"occupation": ["plumber", "nurse"], "pet": ["dog", "cat"]}
    text, probs = judge(sims, values, lines, top_k=1, temperature=0.1)
    parsed = parse_output(text, TAXONOMY)
    assert parsed.error is None
    occupation, pet = parsed.judgements["occupation"], parsed.judgements["pet"]
    assert occupation.value == "plumber" and occupation.evidence == lines[0][:MAX_EVIDENCE_CHARS]
    assert probs["occupation"] == pytest.approx(1 / (1 + math.exp(-5)))  # 0.8 vs 0.3 at 0.1
    assert occupation.confidence == 5
    assert pet.value == "cat" and pet.evidence == "kitten food"
    assert probs["pet"] == pytest.approx(1 / (1 + math.exp(-4)))  # 0.6 vs 0.2
    assert json.loads(text)["rationale"] == "Log lines closest to occupation plumber, pet cat"


def test_an_embedding_teacher_needs_one_sample_and_an_embedding_model() -> None:
    ok = "label.teachers=[{name: z, kind: embedding, model: minilm, samples: 1}]"
    assert build(Config, overrides=[ok]).label.teachers[0].kind == "embedding"
    for bad in (
        "{name: z, kind: embedding, model: minilm, samples: 3}",
        "{name: z, kind: embedding}",
        "{name: z, kind: embedding, model: minilm, samples: 1, endpoint: 'http://x/v1/chat/completions'}",
    ):
        with pytest.raises(ValueError, match="kind embedding: set samples: 1"):
            build(Config, overrides=[f"label.teachers=[{bad}]"])


@pytest.mark.slow
def test_the_embedding_teacher_matches_lines_to_definitions_with_the_embedded_minilm() -> None:
    from conf_profile.engines import EmbeddingTeacher
    from conf_profile.models import resolve_model

    teacher = EmbeddingTeacher(str(resolve_model("minilm", None)), TAXONOMY, "cpu")
    docs = [
        "search (2 events):\n- 2026-01-02 | how to fix a leaking drain pipe\n- 2026-01-01 | best puppy leash",
        "watch (2 events):\n- 2026-01-02 | night shift on the hospital ward\n- 2026-01-01 | cat litter review",
    ]
    requests = pa.table({"user_id": ["u1", "u2"], "document": docs, "sample": pa.array([0, 0], pa.int32())})
    out = teacher(requests)
    assert "document" not in out.column_names and out.column("user_id").to_pylist() == ["u1", "u2"]
    assert out.column("__inference_error__").null_count == 2
    first, second = (parse_output(t, TAXONOMY) for t in out.column("generated_text").to_pylist())
    assert first.error is None and second.error is None
    assert (first.judgements["occupation"].value, first.judgements["pet"].value) == ("plumber", "dog")
    assert (second.judgements["occupation"].value, second.judgements["pet"].value) == ("nurse", "cat")
    assert first.judgements["occupation"].evidence == "how to fix a leaking drain pipe"
    probs = json.loads(out.column("value_probs")[0].as_py())
    assert set(probs) == {"occupation", "pet"} and all(0.5 < p <= 1.0 for p in probs.values())
    assert out.column("num_generated_tokens").to_pylist() == [0, 0]
    assert all(n > 10 for n in out.column("num_input_tokens").to_pylist())  # word pieces of both lines
    assert teacher(requests.slice(0, 0)).num_rows == 0  # an empty batch is no error
