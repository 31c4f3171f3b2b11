"""Confidence-guided rewards for GRPO, with TRL's reward-function signature.

For each prompt (one user), the G rollouts of the policy vote: per attribute, a confidence-weighted vote
over the rollouts' (value, level), with the teacher vote as one more voter (weight ``teacher_voter_weight``
x the teacher's vote share), gives the pseudo-label and its vote share (the quasi-ground truth). A rollout's
reward is

    format gate x (accuracy + calibration_weight x calibration)

- format gate: 1 when the output parses as a student output, else 0 (and the whole reward is 0);
- accuracy: agreement with the pseudo-labels, each attribute weighted by the pseudo-label's vote share;
- calibration: 1 - Brier score of the stated levels (level / 5) against agreement, summed over the answered
  attributes and divided by the attributes that are answered or carry a value (in the pseudo-label or the
  teacher vote); 1 when neither the rollout, the group nor the teacher names any value.

Consensus on ``unknown`` is the cheapest consensus, and vote-based self-rewards collapse into it (TTRL-style
rewards; DistriTTRL, arXiv 2603.16500). Three rules keep it from paying: the vote abstains only when no
voter names a value (core.voting), so one rollout or the teacher naming a value makes the pseudo-label that
value; where the teacher names a value, agreeing on ``unknown`` earns no accuracy even when the teacher does
not vote (``teacher_voter_weight`` 0); and an abstention where a value is on the table earns no calibration.
An all-``unknown`` group therefore scores 0 wherever the teacher carries values.

TRL gets one function per component, so each is logged on its own (``rewards/<name>/mean``); the format
gate and the pseudo-label agreement with the teacher vote are logged with weight 0. The four share one
scoring of the batch: TRL passes each the same completion and column objects, so the first call parses and
votes, and the others reuse its scores.

>>> from conf_profile.core.taxonomy import taxonomy_from_dict
>>> tax = taxonomy_from_dict({"name": "t", "attributes": [{"name": "g", "description": "g", "values": [
...     {"name": "m", "definition": "m"}, {"name": "f", "definition": "f"}]}]})
>>> out = lambda v, lv: '{"rationale":"","g":{"value":"%s","level":%d,"evidence":""}}' % (v, lv)
>>> format_gate, accuracy, calibration, teacher_agreement = reward_functions(tax, RewardSettings())
>>> accuracy(None, [out("m", 5), out("m", 4), out("f", 1), "oops"], user_id=["u"] * 4)
[1.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conf_profile.core.student import parse_student_output
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy
from conf_profile.core.voting import LINEAR_WEIGHTS, vote

Reward = Callable[..., list[float | None]]


@dataclass(frozen=True)
class RewardSettings:
    confidence_weights: tuple[float, ...] = LINEAR_WEIGHTS  # vote weight of a rollout per stated level 1..5
    teacher_voter_weight: float = 1.0  # the teacher vote joins the rollouts' vote with this weight x its share
    calibration_weight: float = 0.5


@dataclass(frozen=True)
class Scores:
    """Per rollout: each reward component; per group: agreement of the pseudo-labels with the teacher."""

    format_ok: list[float]
    accuracy: list[float]
    calibration: list[float]
    teacher_agreement: list[float]


def score_rollouts(
    completions: Sequence[Any], user_ids: Sequence[str], teacher_votes: dict[str, Sequence[Any]],
    teacher_shares: dict[str, Sequence[Any]], taxonomy: Taxonomy, settings: RewardSettings,
) -> Scores:  # fmt: skip
    """Score a batch of rollouts; rollouts of the same user form one group (they see each other's votes)."""
    texts = [_text(c) for c in completions]
    parsed = [parse_student_output(t, taxonomy) for t in texts]
    n = len(texts)
    fmt, acc, cal, agree = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    groups: dict[str, list[int]] = {}
    for i, uid in enumerate(user_ids):
        groups.setdefault(uid, []).append(i)
    for members in groups.values():
        labels = {a.name: _pseudo_label(a.name, a.value_names, members, parsed, teacher_votes, teacher_shares,
                                        settings) for a in taxonomy.attributes}  # fmt: skip
        with_teacher = [a for a in taxonomy.attribute_names if a in teacher_votes]
        agreement = float(np.mean([labels[a][0] == teacher_votes[a][members[0]] for a in with_teacher] or [0.0]))
        teacher_named = {a: a in teacher_votes and teacher_votes[a][members[0]] not in (None, UNKNOWN)
                         for a in taxonomy.attribute_names}  # fmt: skip
        for i in members:
            agree[i] = agreement
            if parsed[i].error is not None:
                continue
            fmt[i] = 1.0
            acc[i], cal[i] = _accuracy_and_calibration(parsed[i].judgements, labels, teacher_named)
    return Scores(fmt, acc, cal, agree)


def _pseudo_label(
    attribute: str, names: tuple[str, ...], members: list[int], parsed: list[Any], teacher_votes: dict,
    teacher_shares: dict, settings: RewardSettings,
) -> tuple[str, float]:  # fmt: skip
    """(value, vote share) of the confidence-weighted vote of the group's valid rollouts (+ the teacher)."""
    values, levels, weights = [], [], []
    for i in members:
        j = parsed[i].judgements.get(attribute) if parsed[i].error is None else None
        if j is not None:
            values.append(names.index(j.value))
            levels.append(j.confidence)
            weights.append(1.0)
    if settings.teacher_voter_weight > 0 and teacher_votes.get(attribute):
        value = teacher_votes[attribute][members[0]]
        if value in names:
            share = float(teacher_shares[attribute][members[0]] or 0.0)
            values.append(names.index(value))
            levels.append(5)  # the teacher's weight is its vote share, not a stated level
            weights.append(settings.teacher_voter_weight * share)
    if not values:
        return UNKNOWN, 0.0
    result = vote([0] * len(values), values, levels, weights, 1, len(names), names.index(UNKNOWN),
                  settings.confidence_weights)  # fmt: skip
    return names[int(result.value[0])], float(result.share[0])


def _accuracy_and_calibration(
    judgements: dict[str, Any], labels: dict[str, tuple[str, float]], teacher_named: dict[str, bool]
) -> tuple[float, float]:
    names = list(labels)
    shares = np.array([labels[a][1] for a in names])
    value_on_table = np.array([labels[a][0] != UNKNOWN or teacher_named[a] for a in names])
    said = [judgements[a].value if judgements[a] is not None else None for a in names]
    agree = np.array(
        [s == labels[a][0] and (s != UNKNOWN or not teacher_named[a]) for s, a in zip(said, names, strict=True)],
        dtype=float,
    )
    accuracy = float((shares * agree).sum() / shares.sum()) if shares.sum() > 0 else 0.0
    answered = np.array([s not in (None, UNKNOWN) for s in said])
    scored = int((answered | value_on_table).sum())
    if scored == 0:  # nobody names a value: abstaining is right, and nothing is miscalibrated
        return accuracy, 1.0
    stated = np.array([judgements[a].confidence / 5.0 if answered[k] else 0.0 for k, a in enumerate(names)])
    brier_terms = np.where(answered, 1.0 - (stated - agree) ** 2, 0.0)
    return accuracy, float(brier_terms.sum() / scored)


def reward_functions(taxonomy: Taxonomy, settings: RewardSettings) -> list[Reward]:
    """[format_gate, accuracy, calibration, teacher_agreement] with TRL's signature
    ``f(prompts, completions, **columns) -> list[float]``; the columns used are ``user_id`` and, when present,
    ``<attr>_vote`` / ``<attr>_vote_share`` (the RL set's teacher votes). Weights for TRL: reward_weights()."""

    columns = ["user_id", *(f"{a}_{c}" for a in taxonomy.attribute_names for c in ("vote", "vote_share"))]
    last: dict[str, Any] = {}  # the batch scored last: TRL calls every function with the same objects

    def scores(completions: Sequence[Any], kwargs: dict[str, Any]) -> Scores:
        inputs = (completions, *(kwargs.get(c) for c in columns))
        if last and all(a is b for a, b in zip(last["inputs"], inputs, strict=True)):
            return last["scores"]  # parsed and voted once per batch, shared by the four functions
        votes = {a: kwargs[f"{a}_vote"] for a in taxonomy.attribute_names if f"{a}_vote" in kwargs}
        shares = {a: kwargs[f"{a}_vote_share"] for a in taxonomy.attribute_names if f"{a}_vote_share" in kwargs}
        user_ids = kwargs.get("user_id") or [str(i) for i in range(len(completions))]
        result = score_rollouts(completions, user_ids, votes, shares, taxonomy, settings)
        last.update(inputs=inputs, scores=result)  # holding the inputs keeps their ids from being reused
        return result

    def format_gate(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return list(scores(completions, kwargs).format_ok)

    def accuracy(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return list(scores(completions, kwargs).accuracy)

    def calibration(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return list(scores(completions, kwargs).calibration)

    def teacher_agreement(prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return list(scores(completions, kwargs).teacher_agreement)

    return [format_gate, accuracy, calibration, teacher_agreement]


def reward_weights(settings: RewardSettings) -> list[float]:
    """TRL reward weights for reward_functions(): the gate and the teacher agreement are logged only (the
    gate already zeroes the other components of an unparseable output)."""
    return [0.0, 1.0, settings.calibration_weight, 0.0]


def _text(completion: Any) -> str:
    """A completion is a string (standard format) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return ""
