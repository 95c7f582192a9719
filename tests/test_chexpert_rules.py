"""The rule-based CheXpert-style labeller: hand-written sentences with hand-assigned labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report

from bench.metrics.chexpert_rules import ChexpertRulesMetric, clauses, find_mentions, label_report, label_reports
from bench.metrics.f1 import BLANK, NEGATIVE, OBSERVATIONS, POSITIVE, TOP5_INDEX, UNCERTAIN, to_binary_rrg

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")

P, N, U, B = POSITIVE, NEGATIVE, UNCERTAIN, BLANK


def labels(text: str) -> dict[str, int]:
    """Non-blank labels of a report, by observation."""
    return {o: int(v) for o, v in zip(OBSERVATIONS, label_report(text)) if v != BLANK}


CASES = [
    # plain positives
    ("Moderate right pleural effusion.", {"Pleural Effusion": P}),
    ("The heart is mildly enlarged.", {"Cardiomegaly": P}),
    ("Increased mild pulmonary edema and left basal atelectasis.", {"Edema": P, "Atelectasis": P}),
    ("Rib fractures on the left. A 1.5 cm nodule in the right upper lobe.", {"Fracture": P, "Lung Lesion": P}),
    ("Pleural thickening at the right apex.", {"Pleural Other": P}),
    ("No change in the large left pleural effusion.", {"Pleural Effusion": P}),  # "no change" is no negation
    ("Blunting of the left costophrenic angle.", {"Pleural Effusion": P}),
    # negation, forward and backward, lists, and scope ending at the clause
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("There is a small left pleural effusion with no pneumothorax.", {"Pleural Effusion": P, "Pneumothorax": N}),
    ("No pneumothorax, but there is a moderate right effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N, "No Finding": P}),
    ("The previously seen pneumothorax has resolved.", {"Pneumothorax": N, "No Finding": P}),
    ("Lungs are free of consolidation.", {"Consolidation": N, "No Finding": P}),
    ("Heart size is normal. Mediastinal contours are within normal limits.",
     {"Cardiomegaly": N, "Enlarged Cardiomediastinum": N, "No Finding": P}),
    ("The heart is not enlarged.", {"Cardiomegaly": N, "No Finding": P}),
    ("Costophrenic angles are sharp.", {"Pleural Effusion": N, "No Finding": P}),
    ("No pericardial effusion.", {"No Finding": P}),  # not a pleural effusion at all
    # hedges
    ("Possible small right effusion, no pneumothorax.", {"Pleural Effusion": U, "Pneumothorax": N}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U}),  # not a negation despite "not"/"excluded"
    ("Cannot exclude early pneumonia.", {"Pneumonia": U}),
    ("Bibasilar opacities may reflect atelectasis or pneumonia.",
     {"Lung Opacity": P, "Atelectasis": U, "Pneumonia": U}),
    ("Atelectasis is likely.", {"Atelectasis": U}),
    ("Right upper lobe consolidation, suggestive of pneumonia.", {"Consolidation": P, "Pneumonia": U}),
    ("A small effusion may be present.", {"Pleural Effusion": U}),
    ("Left lower lobe opacity, pneumonia?", {"Lung Opacity": P, "Pneumonia": U}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
    # aggregation over sentences: positive beats negative
    ("No effusion on the left. Small right effusion.", {"Pleural Effusion": P}),
    # support devices do not block No Finding; removal is a negative device mention
    ("Endotracheal tube terminates 4 cm above the carina. Lungs are clear.",
     {"Support Devices": P, "No Finding": P}),
    ("Interval removal of the right chest tube. No pneumothorax.",
     {"Support Devices": N, "Pneumothorax": N, "No Finding": P}),
    ("", {"No Finding": P}),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:40] or "empty" for c in CASES])
def test_hand_labelled_sentences(text, expected):
    assert labels(text) == expected


def test_no_finding_is_blank_when_anything_is_positive_or_uncertain():
    assert label_report("Possible pneumonia.")[OBSERVATIONS.index("No Finding")] == BLANK
    assert label_report("Small left effusion.")[OBSERVATIONS.index("No Finding")] == BLANK
    assert label_report("No effusion.")[OBSERVATIONS.index("No Finding")] == POSITIVE


def test_clause_splitting_and_normalisation():
    assert clauses("No effusion.\nHeart   is ENLARGED; lungs clear") == ["no effusion", "heart is enlarged", "lungs clear"]
    assert clauses("No pneumothorax, but small effusion.") == ["no pneumothorax", "small effusion"]


def test_find_mentions_reports_phrase_and_label():
    ms = find_mentions("Pneumonia cannot be excluded.")
    assert [(m.observation, m.text, m.label) for m in ms] == [("Pneumonia", "pneumonia", UNCERTAIN)]


def test_metric_rows_and_f1_match_sklearn():
    refs = ["Moderate right pleural effusion.", "The heart is mildly enlarged. Mild pulmonary edema.",
            "No pneumothorax.", "Possible pneumonia."]
    preds = ["No pleural effusion.", "Cardiomegaly.", "Small left pneumothorax.", "Pneumonia."]
    metric = ChexpertRulesMetric()
    rows = metric.per_sample(refs, preds)
    assert len(rows) == 4 and rows.columns[0] == "rules_ref_enlarged_cardiomediastinum"
    ref = to_binary_rrg(label_reports(refs))
    pred = to_binary_rrg(label_reports(preds))
    got = metric.aggregate(rows)
    cr = classification_report(ref, pred, output_dict=True)
    cr5 = classification_report(ref[:, list(TOP5_INDEX)], pred[:, list(TOP5_INDEX)], output_dict=True)
    assert set(got) == set(metric.columns) | set(metric.finding_columns())
    assert got["rules_ma14"] == pytest.approx(cr["macro avg"]["f1-score"])
    assert got["rules_mi14"] == pytest.approx(cr["micro avg"]["f1-score"])
    assert got["rules_ma5"] == pytest.approx(cr5["macro avg"]["f1-score"])
    assert got["rules_mi5"] == pytest.approx(cr5["micro avg"]["f1-score"])
    # Hand count: Cardiomegaly tp (row 2), Pneumonia tp (uncertain -> 1), Effusion fn, Edema fn,
    # Pneumothorax fp, No Finding: ref rows 3 (1), pred rows 1 (1) -> fp + fn.
    assert got["rules_mi14"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))


def test_metric_is_registered_under_its_own_name():
    from bench.metrics.registry import get_metric

    m = get_metric("chexpert-rules")
    assert m.name == "chexpert-rules" and all(c.startswith("rules_") for c in m.columns)
    assert "NOT CheXbert" in m.description
    assert all(h.endswith("(rules)") for h in m.headers.values())


def test_label_reports_shape():
    assert label_reports([]).shape == (0, 14)
    out = label_reports(["No effusion.", "Pneumothorax."])
    assert out.shape == (2, 14) and out.dtype == np.int8


def test_agrees_with_phantom_ground_truth(tmp_path):
    """The phantom's planted findings, read back from its reference reports (docs/metrics-clinical.md)."""
    import pandas as pd

    from bench.data.mimic import load_split
    from bench.data.phantom import generate

    generate(tmp_path, n_train=0, n_test=120, seed=1, image_size=64, n_validate=0)
    ds = load_split(tmp_path, "test", check_images=False)
    gt = pd.read_csv(tmp_path / "phantom-labels.csv.gz").set_index("dicom_id").loc[[s.dicom_id for s in ds.samples]]
    pred = to_binary_rrg(label_reports([s.findings for s in ds.samples]))
    truth = {
        "Cardiomegaly": gt.cardiomegaly, "Pleural Effusion": gt.pleural_effusion_left | gt.pleural_effusion_right,
        "Pneumothorax": gt.pneumothorax, "Edema": gt.edema, "Atelectasis": gt.atelectasis,
        "Lung Lesion": gt.nodule, "Fracture": gt.rib_fracture,
        "Support Devices": gt.pacemaker | gt.endotracheal_tube | gt.central_line | gt.sternotomy_wires,
    }
    for obs, t in truth.items():
        agreement = (t.to_numpy().astype(int) == pred[:, OBSERVATIONS.index(obs)]).mean()
        assert agreement >= 0.95, (obs, agreement)
    # The phantom names a consolidation "consolidation", "pneumonia" or "airspace opacity".
    any_consolidation = pred[:, [OBSERVATIONS.index(o) for o in ("Consolidation", "Pneumonia", "Lung Opacity")]].max(1)
    assert (any_consolidation >= gt.consolidation.to_numpy()).all()
