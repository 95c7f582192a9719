"""Section parsing on report shapes that occur in MIMIC-CXR; expected outputs written by hand."""

from __future__ import annotations

import pytest

from bench.data.sections import (
    extract_indication,
    extract_reference,
    normalise_heading,
    parse_sections,
)

TYPICAL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS:
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.
 
 IMPRESSION:
 
 No acute cardiopulmonary process.
"""


def test_typical_report():
    assert parse_sections(TYPICAL) == {
        "examination": "CHEST (PA AND LAT)",
        "indication": "___F with new onset ascites // eval for infection",
        "technique": "Chest PA and lateral",
        "comparison": "None.",
        "findings": "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral "
        "nodular opacities that most likely represent nipple shadows. The cardiomediastinal "
        "silhouette is normal.",
        "impression": "No acute cardiopulmonary process.",
    }
    assert extract_reference(TYPICAL) == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular "
        "opacities that most likely represent nipple shadows. The cardiomediastinal silhouette "
        "is normal.",
        "findings",
    )
    assert extract_indication(TYPICAL) == "___F with new onset ascites // eval for infection"


def test_no_headings_uses_text_after_first_paragraph():
    report = """                                 FINAL REPORT
 PORTABLE CHEST OF ___
 
 Heart size is normal.  Lungs are clear.
 
 No pneumothorax.
"""
    assert parse_sections(report) == {
        "full report": "PORTABLE CHEST OF ___ Heart size is normal. Lungs are clear. No pneumothorax.",
        "last_paragraph": "Heart size is normal. Lungs are clear. No pneumothorax.",
    }
    assert extract_reference(report) == (
        "Heart size is normal. Lungs are clear. No pneumothorax.",
        "last_paragraph",
    )
    assert extract_indication(report) == ""


def test_single_paragraph_without_headings_has_no_reference():
    report = " Lungs are clear."
    assert parse_sections(report) == {"full report": "Lungs are clear."}
    assert extract_reference(report) == ("", "none")


def test_last_paragraph_of_a_headed_report_without_findings():
    report = """ INDICATION:  Cough.
 
 COMPARISON:  ___.
 
 Lungs are clear.  No effusion.
"""
    sections = parse_sections(report)
    assert sections["comparison"] == "___. Lungs are clear. No effusion."
    assert sections["last_paragraph"] == "Lungs are clear. No effusion."
    assert extract_reference(report) == ("Lungs are clear. No effusion.", "last_paragraph")
    assert extract_indication(report) == "Cough."


def test_findings_and_impression_is_an_impression():
    report = """ INDICATION:  Fever.
 
 FINDINGS AND IMPRESSION:  Right lower lobe pneumonia.
"""
    assert parse_sections(report) == {"indication": "Fever.", "impression": "Right lower lobe pneumonia."}
    assert extract_reference(report) == ("Right lower lobe pneumonia.", "impression")


def test_addendum_after_final_report():
    report = """                                 FINAL REPORT
 FINDINGS:  Small left effusion.
 
 IMPRESSION:  Small left effusion, new since prior.
 
                                 ADDENDUM
 ADDENDUM:  Findings were discussed with Dr. ___ at 3:41 PM on ___.
"""
    assert parse_sections(report) == {
        "findings": "Small left effusion.",
        "impression": "Small left effusion, new since prior.",
        "addendum": "Findings were discussed with Dr. ___ at 3:41 PM on ___.",
    }
    assert extract_reference(report) == ("Small left effusion.", "findings")


def test_empty_findings_followed_directly_by_impression():
    report = """ FINDINGS:
 IMPRESSION:  No acute process.
"""
    assert parse_sections(report) == {"impression": "No acute process."}
    assert extract_reference(report) == ("No acute process.", "impression")


def test_empty_last_findings_does_not_hide_an_earlier_one():
    report = """ FINDINGS:  Lungs are clear.
 
 FINDINGS:
 
 IMPRESSION:  Normal.
"""
    assert parse_sections(report)["findings"] == "Lungs are clear."


def test_heading_inline_with_text():
    report = " FINDINGS: The lungs are clear.\n IMPRESSION: Normal chest."
    assert parse_sections(report) == {"findings": "The lungs are clear.", "impression": "Normal chest."}


def test_wet_read_preamble():
    report = """ WET READ: ___ ___ 3:41 PM
  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Line placement.
 
 FINDINGS:  Right IJ catheter tip in the mid SVC.  No pneumothorax.
"""
    assert parse_sections(report) == {
        "wet read": "___ ___ 3:41 PM No pneumothorax.",
        "indication": "Line placement.",
        "findings": "Right IJ catheter tip in the mid SVC. No pneumothorax.",
    }
    assert extract_reference(report) == ("Right IJ catheter tip in the mid SVC. No pneumothorax.", "findings")


def test_lower_case_colons_are_not_headings():
    report = """ FINDINGS:  Compared to the prior study: no change.
 Impression: not a heading because it is not upper case.
 Tubes: ET tube 4 cm above the carina. Seen at 10:30 AM.
"""
    assert parse_sections(report) == {
        "findings": "Compared to the prior study: no change. Impression: not a heading because it "
        "is not upper case. Tubes: ET tube 4 cm above the carina. Seen at 10:30 AM.",
    }


def test_upper_case_colon_mid_line_is_not_a_heading():
    report = " FINDINGS:  See the note below. NOTE: this stays in the findings.\n"
    assert parse_sections(report) == {"findings": "See the note below. NOTE: this stays in the findings."}


def test_multiple_findings_last_wins():
    report = """ FINDINGS:  Preliminary: left lower lobe opacity.
 
 IMPRESSION:  Possible pneumonia.
 
 FINDINGS:  Left lower lobe opacity, likely atelectasis.
"""
    sections = parse_sections(report)
    assert sections["findings"] == "Left lower lobe opacity, likely atelectasis."
    assert sections["impression"] == "Possible pneumonia."


def test_preamble_and_crlf():
    report = "Title line\r\n INDICATION:  Chest pain.\r\n FINDINGS:  Clear.\r\n"
    assert parse_sections(report) == {"preamble": "Title line", "indication": "Chest pain.", "findings": "Clear."}


def test_history_is_the_indication_fallback():
    report = " CLINICAL HISTORY:  Shortness of breath.\n FINDINGS:  Clear lungs.\n"
    assert parse_sections(report) == {"history": "Shortness of breath.", "findings": "Clear lungs."}
    assert extract_indication(report) == "Shortness of breath."
    both = " HISTORY:  Old.\n REASON FOR EXAM:  New.\n FINDINGS:  Clear.\n"
    assert extract_indication(both) == "New."


@pytest.mark.parametrize(
    "heading, name",
    [
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("CONCLUSION", "impression"),
        ("IMPRESSON", "impression"),
        ("IMPRESSION AND RECOMMENDATION", "impression"),
        ("FINDING", "findings"),
        ("CHEST, TWO VIEWS", "findings"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("PORTABLE AP", "findings"),
        ("REASON FOR EXAM", "indication"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CLINICAL INDICATION", "indication"),
        ("NDICATION", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("CLINICAL INFORMATION", "history"),
        ("PFI", "history"),
        ("COMPARISONS", "comparison"),
        ("WETREAD", "wet read"),
        ("TECHNIQUE", "technique"),
        ("  NOTIFICATION ", "notification"),
    ],
)
def test_heading_normalisation(heading, name):
    assert normalise_heading(heading) == name
