"""Per-feature thresholds learned on training images (saerad/calibration.py), on hand-made cases."""

import math

import numpy as np

from saerad.calibration import covers, learn_thresholds, present


def test_a_label_is_right_where_the_report_asserts_its_findings_on_a_compatible_side():
    label = present("Moderate left pleural effusion.")
    assert covers(label, present("Small left pleural effusion. No pneumothorax."))
    assert covers(label, present("Bilateral pleural effusions."))
    assert not covers(label, present("Right pleural effusion."))
    assert not covers(label, present("No pleural effusion."))
    assert present("Heart size is normal.") == set()


def test_the_threshold_is_the_best_f1_cut_with_enough_precision():
    reports = ["Left pleural effusion."] * 4 + ["Lungs are clear."] * 4 + ["Left pleural effusion."]
    # Feature 0 fires on all nine; strongest on the four true ones, then the four false ones,
    # weakest on the last true one.
    acts = np.array([[9.0], [8.0], [7.0], [6.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
    t = learn_thresholds(acts, reports, {0: "Small left pleural effusion."}, min_precision=0.5, min_support=1)[0]
    # Cuts: top 4 -> P 1, R 4/5, F1 8/9; all 9 -> P 5/9, R 1, F1 10/14 < 8/9. Best: activation 6.
    assert t.activation == 6.0 and t.precision == 1.0 and math.isclose(t.recall, 0.8) and t.support == 4


def test_a_label_never_right_often_enough_is_never_used_and_normal_labels_are_not_calibrated():
    reports = ["Lungs are clear."] * 5 + ["Right pneumothorax."]
    acts = np.array([[5.0, 1.0], [4.0, 1.0], [3.0, 1.0], [2.0, 1.0], [1.0, 1.0], [0.5, 1.0]])
    out = learn_thresholds(acts, reports, {0: "Right pneumothorax.", 1: "Lungs are clear."}, min_precision=0.5,
                           min_support=1)
    assert out[0].activation == math.inf  # precision never reaches 0.5
    assert 1 not in out  # asserts nothing present: no threshold
