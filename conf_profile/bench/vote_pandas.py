"""The aggregation stage written as plain pandas groupbys: the baseline of ``python -m jobs.bench vote``.

It computes what ``conf_profile.stages.aggregate.aggregate_tables`` computes with label-free calibration and fixed
teacher weights (the vote rows with their calibrated level and confidence, the calibrator's thresholds,
the SFT examples and the RL set), the way one would write it with pandas: per attribute a groupby over
(user, value), sorts and drop_duplicates for the winners, a pivot to one row per user and a row-wise
json.dumps for the SFT targets. The benchmark checks that both give the same tables.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd

from conf_profile.core.aggregate import split_of
from conf_profile.core.calibration import LEVELS
from conf_profile.core.labeling import MAX_EVIDENCE_CHARS, MAX_RATIONALE_CHARS, chat_messages
from conf_profile.core.student import student_system_prompt
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy


def aggregate_pandas(
    samples: pd.DataFrame, documents: pd.DataFrame, taxonomy: Taxonomy, primary: str, weights: list[float],
    eval_percent: int, sft_min_mean_level: float, easy_min_confidence: float, rl_min_mean_level: float,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, pd.DataFrame, dict[str, float]]:  # fmt: skip
    """(votes, calibration, sft, rl, seconds per phase) for current samples (one row per user, teacher,
    sample); the phases are those of aggregate_tables: vote, calibration, sft_rl."""
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(phase: str) -> None:
        clock.append(time.perf_counter())
        seconds[phase] = round(clock[-1] - clock[-2], 3)

    df = samples.reset_index(drop=True)
    df["pos"] = np.arange(len(df))
    users = pd.DataFrame({"user_id": sorted(df["user_id"].unique())})
    table = pd.Series(weights, index=range(1, 6))
    df["support_score"] = 0.0
    df["consistent"] = True
    votes = []
    for attr in taxonomy.attributes:
        a = attr.name
        order = {v: i for i, v in enumerate(attr.value_names)}
        ok = df[f"{a}_value"].isin(order.keys()) & df[f"{a}_confidence"].notna()
        rows = df[ok].copy()
        rows["value"] = rows[f"{a}_value"]
        rows["conf"] = rows[f"{a}_confidence"].astype(int)
        rows["w"] = rows["teacher_weight"] * rows["conf"].map(table)
        weighted = _vote(rows, "w", users, order)
        majority = _vote(rows.assign(one=1.0), "one", users, order)
        v = weighted.set_index("user_id")
        win = rows["user_id"].map(v["value"])
        supports = (rows["value"] == win) & (win != UNKNOWN)
        df.loc[rows.index[supports], "support_score"] += rows.loc[supports, "w"]
        bad = rows.index[~(supports | (win == UNKNOWN))]
        df.loc[bad, "consistent"] = False
        # users with a winning value but no valid row of this sample also break consistency
        winners = df["user_id"].map(v["value"])
        df.loc[~df.index.isin(rows.index) & (winners != UNKNOWN), "consistent"] = False
        sup = rows[supports].sort_values(["user_id", "w", "pos"], ascending=[True, False, True])
        best = sup.drop_duplicates("user_id").set_index("user_id")
        v["evidence"] = best[f"{a}_evidence"].reindex(v.index).fillna("")
        prob = sup[sup[f"{a}_token_prob"].notna()].groupby("user_id")[f"{a}_token_prob"].mean()
        v["token_confidence"] = v["vote_share"] * prob.reindex(v.index)
        first = df[(df["teacher"] == primary) & (df["sample"] == 0)]
        single = first[first.index.isin(rows.index)].set_index("user_id")
        v["single_value"] = single[f"{a}_value"].reindex(v.index).fillna(UNKNOWN)
        v["single_confidence"] = (single[f"{a}_confidence"] / 5.0).reindex(v.index)
        v.loc[v["single_value"] == UNKNOWN, "single_confidence"] = np.nan
        m = majority.set_index("user_id")
        v["majority_value"], v["majority_share"] = m["value"], m["vote_share"]
        v["samples"] = df.groupby("user_id").size().reindex(v.index)
        v["attribute"] = a
        votes.append(v.reset_index())
    votes_df = pd.concat(votes, ignore_index=True)
    votes_df["rationale"] = votes_df["user_id"].map(_rationales(df, votes_df, taxonomy))
    rank = {a: i for i, a in enumerate(taxonomy.attribute_names)}
    votes_df = votes_df.sort_values(["user_id", "attribute"], key=lambda c: c.map(rank) if c.name == "attribute"
                                    else c).reset_index(drop=True)  # fmt: skip
    lap("vote")
    calibration = _fit(votes_df, taxonomy)
    votes_df = _apply(votes_df, calibration, taxonomy)
    lap("calibration")
    sft, rl = _sets(votes_df, documents, taxonomy, eval_percent, sft_min_mean_level, easy_min_confidence,
                    rl_min_mean_level)  # fmt: skip
    lap("sft_rl")
    return votes_df, calibration, sft, rl, seconds


def _vote(rows: pd.DataFrame, weight: str, users: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    g = rows.groupby(["user_id", "value"]).agg(mass=(weight, "sum"), count=(weight, "size"), conf=("conf", "sum"))
    g = g.reset_index()
    total = g.groupby("user_id")["mass"].sum()
    g["p"] = g["mass"] / g["user_id"].map(total)
    entropy = (-(g["p"] * np.log(g["p"].where(g["p"] > 0, 1.0)))).groupby(g["user_id"]).sum()
    g["rank"] = g["value"].map(order)
    g["named"] = g["value"] != UNKNOWN
    g["mass_key"] = g["mass"].round(9)  # masses equal up to float rounding tie
    # winner: a named value first (most mass, then most supporters, then taxonomy order); else unknown
    g = g.sort_values(["user_id", "named", "mass_key", "count", "rank"], ascending=[True, False, False, False, True])
    win = g.drop_duplicates("user_id").set_index("user_id")
    out = users.set_index("user_id")
    out["value"] = win["value"].reindex(out.index).fillna(UNKNOWN)
    tot = total.reindex(out.index)
    out["vote_share"] = (win["mass"].reindex(out.index) / tot).where(tot > 0, 0.0).fillna(0.0).round(12)
    out["supporters"] = win["count"].reindex(out.index).fillna(0).astype(int)
    out["mean_confidence"] = win["conf"].reindex(out.index) / win["count"].reindex(out.index)
    out["valid"] = rows.groupby("user_id").size().reindex(out.index).fillna(0).astype(int)
    out["entropy"] = entropy.reindex(out.index).fillna(0.0)
    out["raw_confidence"] = (out["vote_share"] * out["mean_confidence"] / 5.0).fillna(0.0).round(12)
    return out.reset_index()


def _rationales(df: pd.DataFrame, votes: pd.DataFrame, taxonomy: Taxonomy) -> pd.Series:
    best = df[df["consistent"]].sort_values(["user_id", "support_score", "pos"], ascending=[True, False, True])
    chosen = best.drop_duplicates("user_id").set_index("user_id")["rationale"].fillna("")
    wide = votes.pivot(index="user_id", columns="attribute", values="value")
    composed = {}
    for uid, row in wide.iterrows():
        parts = [f"{a} {row[a]}" for a in taxonomy.attribute_names if row[a] != UNKNOWN]
        text = "The log supports " + ", ".join(parts) + "." if parts else "No attribute is supported by the log."
        composed[uid] = text[:MAX_RATIONALE_CHARS]
    out = pd.Series(composed)
    chosen = chosen.reindex(out.index).fillna("")
    return chosen.where(chosen != "", out)


def _fit(votes: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Any]:
    attributes = {}
    for a in taxonomy.attribute_names:
        raw = votes[(votes["attribute"] == a) & (votes["value"] != UNKNOWN)]["raw_confidence"]
        counts = raw.value_counts().sort_index()
        below = counts.cumsum() - counts
        midrank = (below + counts / 2.0) / len(raw)
        level = np.minimum(LEVELS, 1 + np.floor(LEVELS * midrank).astype(int))
        thresholds = [float(level.index[level >= lv][0]) if (level >= lv).any() else None for lv in range(2, 6)]
        lv = _levels(raw, thresholds)
        means = [float(raw[lv == k].mean()) if (lv == k).any() else None for k in range(1, 6)]
        attributes[a] = {"thresholds": thresholds, "level_confidence": means, "fitted_on": len(raw)}
    return {"method": "label_free", "attributes": attributes}


def _levels(raw: pd.Series, thresholds: list[float | None]) -> pd.Series:
    level = pd.Series(1, index=raw.index)
    for t in thresholds:
        if t is not None:
            level += (raw >= t).astype(int)
    return level


def _apply(votes: pd.DataFrame, calibration: dict[str, Any], taxonomy: Taxonomy) -> pd.DataFrame:
    votes["level"] = 0
    votes["confidence"] = np.nan
    for a in taxonomy.attribute_names:
        entry = calibration["attributes"][a]
        rows = votes["attribute"] == a
        level = _levels(votes.loc[rows, "raw_confidence"], entry["thresholds"])
        table = pd.Series(entry["level_confidence"], index=range(1, 6), dtype=float)
        conf = level.map(table)
        votes.loc[rows, "level"] = level
        votes.loc[rows, "confidence"] = conf.fillna(votes.loc[rows, "raw_confidence"])
    abstain = votes["value"] == UNKNOWN
    votes.loc[abstain, "confidence"] = np.nan
    votes["level"] = votes["level"].where(~abstain).astype("Int8")
    return votes


def _sets(
    votes: pd.DataFrame, documents: pd.DataFrame, taxonomy: Taxonomy, eval_percent: int, sft_min: float,
    easy_min: float, rl_min: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    wide = votes.pivot(index="user_id", columns="attribute")
    names = taxonomy.attribute_names
    level = wide["level"].astype(float).where((wide["value"] != UNKNOWN) & (wide["level"].astype(float) >= 1), 1.0)
    mean_level = level[list(names)].mean(axis=1)
    docs = documents.set_index("user_id")["document"]
    has_doc = wide.index.isin(docs.index)
    judged = (wide["valid"] > 0).any(axis=1)
    system = student_system_prompt(taxonomy)
    keep = wide[(mean_level >= sft_min) & has_doc & judged]
    rows = []
    for uid, row in keep.iterrows():
        out: dict[str, Any] = {"rationale": (row[("rationale", names[0])] or "")[:MAX_RATIONALE_CHARS]}
        for a in names:
            value = row[("value", a)]
            lv = row[("level", a)]
            lv = 1 if value == UNKNOWN or pd.isna(lv) or lv < 1 else int(lv)
            evidence = "" if value == UNKNOWN else (row[("evidence", a)] or "")[:MAX_EVIDENCE_CHARS]
            out[a] = {"value": value, "level": lv, "evidence": evidence}
        target = {"role": "assistant", "content": json.dumps(out, ensure_ascii=False)}
        messages = [*chat_messages(system, docs[uid]), target]
        rows.append({"user_id": uid, "split": split_of(uid, eval_percent), "messages": messages,
                     "mean_level": round(float(mean_level[uid]), 3)})  # fmt: skip
    sft = pd.DataFrame(rows, columns=["user_id", "split", "messages", "mean_level"])
    unanimous = ((wide["vote_share"] >= 1.0 - 1e-9) & (wide["mean_confidence"].fillna(0) >= easy_min)).all(axis=1)
    kept = wide[~unanimous & ~(mean_level < rl_min) & has_doc]
    rl = pd.DataFrame({"user_id": kept.index})
    rl["prompt"] = [chat_messages(system, docs[u]) for u in kept.index]
    for a in names:
        rl[f"{a}_vote"] = kept[("value", a)].to_numpy()
        rl[f"{a}_vote_share"] = kept[("vote_share", a)].to_numpy()
    return sft, rl
