"""Two simple references that the report scores beside the LLM stages, with the same evaluation code.

Users are split in halves by crc32 of their id: the references learn from the ``train`` half with its
*true* labels and predict the ``test`` half. The test users are that half without the users the teacher
labeled (the student was distilled from those), so the student and the references are scored on the same
users: ``python -m jobs.evaluate --users <run>/references/test_users.parquet --report report_test``.
In a run with held-out users (label.heldout_users) the test users are those, and every other user is a
train user, so the references join the quality ladder on the held-out users.

- ``ref_majority``: the most frequent true value of the train half, for everyone (confidence: its share).
- ``ref_logreg``: a logistic regression per attribute on TF-IDF word and bigram features of the same
  documents the LLMs read (on MovieLens: titles with years, genres and ratings), confidence = the predicted
  class probability. It needs scikit-learn (the ``dev`` extra, which ``make setup`` installs).

Predictions go to ``predictions/ref_majority`` and ``predictions/ref_logreg`` in the long form the student
stages write, so every report of the run includes them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from conf_profile.core.baselines import half, majority
from conf_profile.core.metrics import load_truth
from conf_profile.core.profiles import PREDICTION_SCHEMA
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.fs import Loc
from conf_profile.storage import heldout_users, read_documents, replace_folder, without_labeled


def run_references(cfg: Config, run_dir: Loc, truth_path: str, seed: int = 0) -> dict[str, Any]:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ValueError("the logistic-regression reference needs scikit-learn: pip install scikit-learn") from None
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    truth = load_truth(truth_path, taxonomy, "--truth")
    docs = read_documents(run_dir, ["user_id", "document"])
    heldout = heldout_users(run_dir)
    if heldout is not None:
        scored = set(heldout)
        train = [d for d in docs.to_pylist() if d["user_id"] not in scored]
        test = [d for d in docs.to_pylist() if d["user_id"] in scored]
    else:
        train = [d for d in docs.to_pylist() if half(d["user_id"]) == "train"]
        test = [d for d in without_labeled(docs, run_dir).to_pylist() if half(d["user_id"]) == "test"]
    if not train or not test:
        raise ValueError(f"{run_dir}: {len(train)} train and {len(test)} test users; the references need both")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform([d["document"] for d in train])
    x_test = vectorizer.transform([d["document"] for d in test])
    test_ids = [d["user_id"] for d in test]
    rows: dict[str, list[dict[str, Any]]] = {"ref_majority": [], "ref_logreg": []}
    fitted: dict[str, Any] = {}
    for attr in taxonomy.attributes:
        known = [(i, truth[attr.name].get(d["user_id"])) for i, d in enumerate(train)]
        known = [(i, v) for i, v in known if v is not None]
        if not known:
            raise ValueError(f"--truth {truth_path}: no train-half user has a value for {attr.name}")
        value, share = majority([v for _, v in known])
        rows["ref_majority"] += [_row(u, attr.name, value, share) for u in test_ids]
        classes = sorted({v for _, v in known})
        if len(classes) == 1:  # nothing to learn: every train user has this value
            rows["ref_logreg"] += [_row(u, attr.name, value, 1.0) for u in test_ids]
        else:
            model = LogisticRegression(max_iter=2000, C=4.0, random_state=seed)
            model.fit(x_train[[i for i, _ in known]], [v for _, v in known])
            proba = model.predict_proba(x_test)
            best = proba.argmax(axis=1)
            rows["ref_logreg"] += [_row(u, attr.name, str(model.classes_[b]), float(proba[j, b]))
                                   for j, (u, b) in enumerate(zip(test_ids, best, strict=True))]  # fmt: skip
        fitted[attr.name] = {"train_users": len(known), "classes": len(classes), "majority": value}
    for stage, stage_rows in rows.items():
        replace_folder(run_dir / "predictions" / stage,
                       {"part-00000.parquet": pa.Table.from_pylist(stage_rows, schema=PREDICTION_SCHEMA)})  # fmt: skip
    replace_folder(
        run_dir / "references", {"test_users.parquet": pa.table({"user_id": pa.array(test_ids, pa.string())})}
    )
    return {"train_users": len(train), "test_users": len(test), "features": len(vectorizer.vocabulary_),
            "attributes": fitted, "test_users_file": str(run_dir / "references" / "test_users.parquet"),
            "written": [f"predictions/{stage}" for stage in rows] + ["references"]}  # fmt: skip


def _row(user_id: str, attribute: str, value: str, confidence: float) -> dict[str, Any]:
    return {"user_id": user_id, "attribute": attribute, "value": value, "confidence": round(confidence, 6),
            "level": None}  # fmt: skip
