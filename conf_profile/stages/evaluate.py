"""Evaluate every stage present in a run against truth: report/metrics.json and report/index.html + PNGs.

Stages come from votes/ (the teacher's single sample, the plain majority, the confidence-weighted vote with
raw, calibrated and token-probability confidence; from votes_heldout/ instead when the teacher labeled
held-out users for scoring) and from predictions/<stage>/ (long form: user_id, attribute, value,
confidence, level), which the student stages and the references write. Metrics are computed by
conf_profile.core.metrics.

The quality ladder (conf_profile.core.ladder) puts the stages on the same users: the --users file, else the
held-out users, each cut to the users that every stage in it predicted; per stage macro F1 and AURC with
paired-bootstrap 95% intervals of the difference to the stage before it and to ref_majority.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conf_profile import fs
from conf_profile.core.ladder import AttributeScores, align, coverage, ladder, risk_coverage
from conf_profile.core.metrics import attribute_metrics, injection_adoption, load_truth, macro, reliability
from conf_profile.core.profiles import PREDICTION_SCHEMA
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy, load_taxonomy
from conf_profile.fs import Loc, location
from conf_profile.storage import (
    HELDOUT_VOTES,
    HELDOUT_VOTES_BY_TEACHER,
    REPORT,
    RunTable,
    heldout_users,
    write_bytes_atomic,
    write_text_atomic,
)

REFERENCE = "ref_majority"  # the ladder's reference stage
BOOTSTRAP_RESAMPLES = 1000

PREDICTION_COLUMNS = tuple(PREDICTION_SCHEMA.names)


def run_evaluate(cfg: Config, run_dir: Loc, truth_path: str, users_path: str | None = None,
                 report_name: str = "report") -> dict[str, Any]:  # fmt: skip
    """Score every stage; with ``users_path`` (Parquet with user_id) only those users, and stages without
    any of them are left out (e.g. the teacher's on the references' test users)."""
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    truth = load_truth(truth_path, taxonomy, "--truth")
    stages = stage_predictions(run_dir)
    ladder_users: list[str] | None = None
    if users_path is not None:
        if not location(users_path).is_file():
            raise FileNotFoundError(f"--users {users_path}: no such file")
        only = fs.read_table(location(users_path), columns=["user_id"]).column("user_id").combine_chunks()
        stages = {n: t.filter(pc.is_in(t.column("user_id"), value_set=only)) for n, t in stages.items()}
        stages = {n: t for n, t in stages.items() if t.num_rows}
        ladder_users = sorted(set(only.to_pylist()))
    else:
        ladder_users = heldout_users(run_dir)
    if not stages:
        raise FileNotFoundError(
            f"nothing to evaluate in {run_dir}: no votes/ or predictions/ (run jobs.aggregate first)"
            + (f", or none of the users in {users_path}" if users_path else "")
        )
    hostile_file = run_dir / "input" / "hostile.parquet"  # the built-in data's injections (data.hostile_fraction)
    hostile = fs.read_table(hostile_file).to_pylist() if hostile_file.exists() else None
    cal_file = run_dir / "calibration.json"
    method = json.loads(cal_file.read_text(encoding="utf-8")).get("method") if cal_file.exists() else None
    metrics: dict[str, Any] = {"truth": truth_path, "users": users_path, "taxonomy_version": taxonomy.version,
                               "calibration": method, "stages": {}}  # fmt: skip
    points: dict[str, list[dict[str, float]]] = {}
    for name, table in stages.items():
        per_attr, conf, correct = {}, [], []
        for attr in taxonomy.attributes:
            rows = table.filter(pc.equal(table.column("attribute"), attr.name))
            users = rows.column("user_id").to_pylist()
            gold = [truth[attr.name].get(u) for u in users]
            values = rows.column("value").to_pylist()
            confidence = rows.column("confidence").to_pylist()
            per_attr[attr.name] = attribute_metrics(gold, values, confidence, rows.column("level").to_pylist(),
                                                    attr.value_names)  # fmt: skip
            for g, v, c in zip(gold, values, confidence, strict=True):
                if g is not None and v not in (None, UNKNOWN) and c is not None:
                    conf.append(c)
                    correct.append(float(g == v))
        points[name] = reliability(np.array(conf), np.array(correct))
        users = max((m["users"] for m in per_attr.values()), default=0)
        metrics["stages"][name] = {"users": users, "macro": macro(per_attr), "attributes": per_attr,
                                   "reliability": points[name]}  # fmt: skip
        if hostile is not None:  # a measure of the model, not a pass condition
            rows = table.select(["user_id", "attribute", "value"]).to_pylist()
            metrics["stages"][name]["injection"] = injection_adoption(rows, hostile)
    if ladder_users:
        metrics["ladder"] = quality_ladder(stages, truth, taxonomy, ladder_users)
    report = run_dir / report_name
    report.mkdir(parents=True, exist_ok=True)
    metrics["level_distribution"] = _level_distribution(run_dir)
    plots = _plots(metrics, taxonomy, report)
    write_text_atomic(report / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(report / "index.html", _html(metrics, taxonomy, plots))
    return {
        "report": str(report),
        "written": [report_name],  # in the run directory (runs.drop_derived)
        "stages": {
            n: {
                "users": s["users"],
                **s["macro"],
                **({"injection_rate": s["injection"]["rate"]} if "injection" in s else {}),
            }
            for n, s in metrics["stages"].items()
        },  # fmt: skip
        **({"ladder": {k: v for k, v in metrics["ladder"].items() if k != "curves"}} if "ladder" in metrics else {}),
    }


def quality_ladder(
    stages: dict[str, pa.Table], truth: dict[str, dict[str, str | None]], taxonomy: Taxonomy, users: list[str]
) -> dict[str, Any]:
    """The ladder over ``users``: every stage that predicted any of them, each scored on the users that all of
    those stages predicted (a user missing from one stage would count as its miss); see the module."""
    covered = {n: set(t.column("user_id").to_pylist()) & set(users) for n, t in stages.items()}
    names = [n for n in stages if covered[n]]
    common = sorted(set(users).intersection(*(covered[n] for n in names))) if names else []
    if not common:
        return {"users": 0, "stages": {}, "left_out": sorted(stages)}
    scores = {name: stage_scores(stages[name], truth, taxonomy, common) for name in names}
    curves = {name: risk_coverage(per_attr) for name, per_attr in scores.items()}
    result = ladder(scores, REFERENCE if REFERENCE in scores else None, BOOTSTRAP_RESAMPLES, seed=0)
    return {"users": len(common), "stages": result, "curves": curves,
            "left_out": sorted(set(stages) - set(names))}  # fmt: skip


def stage_scores(
    table: pa.Table, truth: dict[str, dict[str, str | None]], taxonomy: Taxonomy, users: list[str]
) -> list[AttributeScores]:
    """One stage's long-form predictions aligned on ``users``, one AttributeScores per taxonomy attribute (a
    user the stage did not predict counts as its abstention)."""
    per_attr = []
    for attr in taxonomy.attribute_names:
        rows = table.filter(pc.equal(table.column("attribute"), attr))
        predicted = dict(zip(rows.column("user_id").to_pylist(),
                             zip(rows.column("value").to_pylist(), rows.column("confidence").to_pylist(),
                                 strict=True), strict=True))  # fmt: skip
        per_attr.append(align(users, truth[attr], predicted))
    return per_attr


def compare_runs(
    run_a: Loc, run_b: Loc, truth_path: str, taxonomy: Taxonomy, stages: list[str] | None = None
) -> dict[str, Any]:
    """The same stages of two runs on the held-out users of both (e.g. one setting against another from the
    same teacher labels): per stage, each run's macro F1, AURC and coverage, and the paired-bootstrap 95%
    interval of run B minus run A (the ladder's bootstrap: the same user resamples for both). ``stages``:
    default every stage both runs have. A user a run's stage did not predict counts as its abstention."""
    users = sorted(set(heldout_users(run_a) or ()) & set(heldout_users(run_b) or ()))
    if not users:
        raise FileNotFoundError(f"no held-out users in both {run_a} and {run_b} (label.heldout_users)")
    truth = load_truth(truth_path, taxonomy, "--truth")
    pred_a, pred_b = stage_predictions(run_a), stage_predictions(run_b)
    names = stages or [name for name in pred_a if name in pred_b]
    missing = [f"{name} ({run})" for name in names for run, pred in ((run_a, pred_a), (run_b, pred_b))
               if name not in pred]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"no predictions of {', '.join(missing)}")
    out: dict[str, Any] = {"users": len(users), "a": str(run_a), "b": str(run_b), "stages": {}}
    for name in names:
        a, b = (stage_scores(pred[name], truth, taxonomy, users) for pred in (pred_a, pred_b))
        row = ladder({"a": a, "b": b}, None, BOOTSTRAP_RESAMPLES, seed=0)
        out["stages"][name] = {
            "a": {"f1": row["a"]["f1"], "aurc": row["a"]["aurc"], "coverage": round(coverage(a), 4)},
            "b": {"f1": row["b"]["f1"], "aurc": row["b"]["aurc"], "coverage": round(coverage(b), 4)},
            **{key: row["b"]["vs_previous"][key] for key in ("f1", "aurc")},  # type: ignore[index]
        }
    return out


def stage_predictions(run_dir: Loc) -> dict[str, pa.Table]:
    """Long-form predictions (PREDICTION_COLUMNS) of every stage present in the run, in data-flow order."""
    stages: dict[str, pa.Table] = {}
    votes_dir = run_dir / HELDOUT_VOTES  # the teacher on the held-out users, when it labeled some for scoring
    if not votes_dir.is_dir():
        votes_dir = run_dir / "votes"
    if votes_dir.is_dir():
        v = fs.read_table(votes_dir)
        single_level = pc.cast(pc.round(pc.multiply(v.column("single_confidence"), 5.0)), pa.int64())
        empty = pa.nulls(v.num_rows, pa.int64())
        stages["teacher_single"] = _long(v, "single_value", v.column("single_confidence"), single_level)
        stages["teacher_majority"] = _long(v, "majority_value", v.column("majority_share"), empty)
        alone = run_dir / HELDOUT_VOTES_BY_TEACHER
        for path in sorted(alone.glob("*.parquet")) if votes_dir.name == HELDOUT_VOTES else []:
            own = fs.read_table(path)  # one teacher's own vote, before the vote of all teachers
            stages[f"teacher_{path.stem}_alone"] = _long(own, "value", own.column("confidence"), own.column("level"))
        stages["teacher_vote_raw"] = _long(v, "value", v.column("raw_confidence"), empty)
        stages["teacher_vote"] = _long(v, "value", v.column("confidence"), v.column("level"))
        if "token_confidence" in v.column_names and v.column("token_confidence").null_count < v.num_rows:
            # the same answers, ranked by the engine's token probability instead of the stated level
            stages["teacher_vote_token"] = _long(v, "value", v.column("token_confidence"), empty)
    predictions = run_dir / "predictions"
    folders = (
        [p for p in predictions.iterdir() if p.is_dir() and not p.name.startswith(".")] if predictions.is_dir() else []
    )
    order = {"student_sft": 0, "student_rl": 1, "ref_majority": 2, "ref_logreg": 3}  # data flow, references, others
    for folder in sorted(folders, key=lambda p: (order.get(p.name, 4), p.name)):  # (dot-folders: temporaries)
        stages[folder.name] = fs.read_table(folder, columns=list(PREDICTION_COLUMNS))
    return stages


def _long(votes: pa.Table, value: str, confidence: pa.ChunkedArray, level: Any) -> pa.Table:
    answered = pc.not_equal(votes.column(value), UNKNOWN)
    return pa.table({
        "user_id": votes.column("user_id"), "attribute": votes.column("attribute"), "value": votes.column(value),
        "confidence": pc.if_else(answered, pc.cast(confidence, pa.float64()), None),
        "level": pc.if_else(answered, pc.cast(level, pa.int64()), None),
    })  # fmt: skip


def _level_distribution(run_dir: Loc) -> dict[str, list[int]]:
    """Stated teacher confidence (mean of the supporters, rounded) vs calibrated level, over answered votes."""
    votes_dir = run_dir / "votes"
    if not votes_dir.is_dir():
        return {}
    v = fs.read_table(votes_dir, columns=["value", "mean_confidence", "level"])
    v = v.filter(pc.not_equal(v.column("value"), UNKNOWN))
    stated = np.rint(v.column("mean_confidence").to_numpy(zero_copy_only=False)).astype(np.int64)
    level = v.column("level").to_numpy(zero_copy_only=False).astype(np.int64)
    return {"stated_confidence": [int((stated == k).sum()) for k in range(1, 6)],
            "calibrated_level": [int((level == k).sum()) for k in range(1, 6)]}  # fmt: skip


def _plots(metrics: dict[str, Any], taxonomy: Taxonomy, out: Loc) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, stage in metrics["stages"].items():
        pts = stage["reliability"]
        if pts:
            ax.plot([p["confidence"] for p in pts], [p["accuracy"] for p in pts], marker="o", label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability (answered predictions)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    plots.append(_save(fig, out / "reliability.png", "Reliability diagram"))
    dist = metrics.get("level_distribution")
    if dist:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(1, 6)
        ax.bar(x - 0.2, dist["stated_confidence"], 0.4, label="teacher's stated confidence (before)")
        ax.bar(x + 0.2, dist["calibrated_level"], 0.4, label="calibrated level (after)")
        ax.set(xlabel="level", ylabel="answered user x attribute", title="Levels before / after calibration")
        ax.legend(fontsize=7)
        plots.append(_save(fig, out / "levels.png", "Level distribution before and after calibration"))
    lad = metrics.get("ladder") or {}
    if lad.get("stages"):
        plots += _ladder_plots(plt, lad, out)
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(metrics["stages"])
    width = 0.8 / max(1, len(names))
    x = np.arange(len(taxonomy.attribute_names))
    for i, name in enumerate(names):
        f1 = [metrics["stages"][name]["attributes"][a]["f1"] for a in taxonomy.attribute_names]
        ax.bar(x + i * width - 0.4 + width / 2, f1, width, label=name)
    ax.set_xticks(x, taxonomy.attribute_names, rotation=20)
    ax.set(ylabel="F1", title="F1 per attribute per stage", ylim=(0, 1))
    ax.legend(fontsize=7)
    plots.append(_save(fig, out / "f1.png", "F1 per attribute per stage"))
    return plots


def _ladder_plots(plt: Any, lad: dict[str, Any], out: Loc) -> list[tuple[str, str]]:
    """The stage ladder (macro F1 and AURC per stage, with the 95% interval of the difference to the stage
    before) and the risk-coverage curves, on the ladder's users."""
    names = list(lad["stages"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.5), sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, key, label in ((axes[0], "f1", "macro F1 (higher is better)"), (axes[1], "aurc", "AURC (lower is better)")):
        values = [lad["stages"][n][key] for n in names]
        err = [[0.0, 0.0] for _ in names]
        for i, n in enumerate(names):
            prev = lad["stages"][n].get("vs_previous")
            if prev:  # the interval of the difference, drawn around this stage's value
                d = prev[key]
                err[i] = [max(0.0, d["diff"] - d["low"]), max(0.0, d["high"] - d["diff"])]
        ax.errorbar(values, y, xerr=np.array(err).T, fmt="o", capsize=3)
        ax.set(xlabel=label)
    axes[0].set_yticks(y, names)
    fig.suptitle(f"Stage ladder on {lad['users']} users (bars: 95% CI of the difference to the stage above)",
                 fontsize=9)  # fmt: skip
    plots = [_save(fig, out / "ladder.png", "Stage ladder")]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for n, curve in lad.get("curves", {}).items():
        ax.plot(curve["coverage"], curve["risk"], label=n)
    ax.set(xlabel="coverage", ylabel="risk (error rate of the answered)", xlim=(0, 1), ylim=(0, 1),
           title="Risk-coverage (answers in order of confidence)")  # fmt: skip
    ax.legend(fontsize=7)
    plots.append(_save(fig, out / "risk_coverage.png", "Risk-coverage curves"))
    return plots


def _save(fig: Any, path: Loc, title: str) -> tuple[str, str]:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
    return path.name, title


def _html(metrics: dict[str, Any], taxonomy: Taxonomy, plots: list[tuple[str, str]]) -> str:
    def cell(x: Any) -> str:
        return "" if x is None else html.escape(f"{x:.3f}" if isinstance(x, float) else str(x))

    keys = ("f1", "precision", "recall", "coverage", "ece", "brier")
    only = f"; only the users in {html.escape(metrics['users'])}" if metrics.get("users") else ""
    head = "<th>users</th>" + "".join(f"<th>{k}</th>" for k in keys)
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s['users']}</td>" + "".join(
        f"<td>{cell(s['macro'][k])}</td>" for k in keys) + "</tr>" for n, s in metrics["stages"].items())  # fmt: skip
    attrs = taxonomy.attribute_names
    f1_rows = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td>{cell(s['attributes'][a]['f1'])}</td>" for a in attrs)
        + "</tr>"
        for n, s in metrics["stages"].items()
    )
    gold_note = (" (fitted on gold: where the gold users are the evaluated users, teacher_vote's ECE is in-sample)"
                 if metrics["calibration"] == "isotonic" else "")  # fmt: skip
    attr_head = "".join(f"<th>{html.escape(a)}</th>" for a in attrs)
    injection = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{s['injection']['users']}</td><td>{s['injection']['adopted']}</td>"
        f"<td>{cell(s['injection']['rate'])}</td></tr>"
        for n, s in metrics["stages"].items()
        if "injection" in s
    )
    injection_table = (
        "<h2>Prompt injection (hostile users): injected value adopted</h2><p>A measure of the model, not a pass "
        "condition; the injected value is never the user's truth.</p><table><tr><th>stage</th><th>hostile users "
        f"answered</th><th>adopted</th><th>rate</th></tr>{injection}</table>"
        if injection
        else ""
    )
    lad = metrics.get("ladder") or {}
    ladder_table = ""
    if lad.get("stages"):

        def ci(row: dict[str, Any], label: str, key: str) -> str:
            d = row.get(label)
            return "" if not d else html.escape(f"{d[key]['diff']:+.3f} [{d[key]['low']:+.3f}, {d[key]['high']:+.3f}]"
                                                f" vs {d['stage']}")  # fmt: skip

        body = "".join(f"<tr><td>{html.escape(n)}</td><td>{r['f1']:.3f}</td><td>{ci(r, 'vs_previous', 'f1')}</td>"
                       f"<td>{ci(r, 'vs_reference', 'f1')}</td><td>{r['aurc']:.3f}</td>"
                       f"<td>{ci(r, 'vs_previous', 'aurc')}</td><td>{ci(r, 'vs_reference', 'aurc')}</td></tr>"
                       for n, r in lad["stages"].items())  # fmt: skip
        ladder_table = (
            f"<h2>Quality ladder: every stage on the same {lad['users']} users</h2><p>Macro F1 (abstention counts "
            "as a miss) and AURC (risk-coverage by the stage's own confidence, abstentions last and wrong); "
            "differences with their paired-bootstrap 95% interval. Left out (not on these users): "
            f"{html.escape(', '.join(lad.get('left_out', [])) or 'none')}.</p><table><tr><th>stage</th><th>F1</th>"
            "<th>F1 vs previous</th><th>F1 vs reference</th><th>AURC</th><th>AURC vs previous</th>"
            f"<th>AURC vs reference</th></tr>{body}</table>"
        )
    images = "".join(f"<h3>{html.escape(t)}</h3><img src='{html.escape(f)}' alt='{html.escape(t)}'>" for f, t in plots)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>conf-profile report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>conf-profile evaluation</h1>
<p>truth: {html.escape(metrics["truth"])}{only}; taxonomy {html.escape(metrics["taxonomy_version"])}.
Precision is over answered users, recall over all users with a truth value; ECE and Brier over answered users.
Each stage is scored on the users it profiled (the teacher stages on the users the teacher labeled, a student
stage on the users it was run on): read the stages with their user counts.
Calibration: {html.escape(str(metrics["calibration"]))}{gold_note}.</p>
{ladder_table}<h2>Macro over attributes</h2><table><tr><th>stage</th>{head}</tr>{rows}</table>
<h2>F1 per attribute</h2><table><tr><th>stage</th>{attr_head}</tr>{f1_rows}</table>
{injection_table}{images}<p>All numbers: metrics.json.</p></body></html>"""


READS: tuple[RunTable, ...] = ()  # whatever of votes*/ and predictions/ is there (run_evaluate says when none is)
WRITES = (REPORT,)


def truth_path(cfg: Config, run_dir: Loc) -> str | None:
    if cfg.input.truth:
        return cfg.input.truth
    builtin = run_dir / "input" / "truth.parquet"
    return str(builtin) if not cfg.input.logs and builtin.exists() else None


def run(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    """report/ against truth, when there is truth (input.truth, or the built-in data's own). In a run with
    held-out users (label.heldout_users) the references (conf_profile.stages.baselines) are fitted first, on
    every other user's truth, so that the quality ladder compares each stage with ref_majority."""
    truth = truth_path(cfg, run_dir)
    if truth is None:
        return {"skipped": "no truth: set input.truth to evaluate"}
    written: list[str] = []
    if heldout_users(run_dir) is not None:
        from conf_profile.stages.baselines import run_references

        written = run_references(cfg, run_dir, truth)["written"]
    entry = run_evaluate(cfg, run_dir, truth)
    return {**entry, "written": [*entry["written"], *written]}
