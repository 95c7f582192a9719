"""Phantom chest X-ray datasets in the MIMIC-CXR-JPG layout, with planted findings.

`generate(out_dir, n_train, n_test, seed)` writes images, reports, the split and metadata
tables of MIMIC-CXR-JPG, and a ground-truth label table (`phantom-labels.csv.gz`), so the
ordinary MIMIC reader reads the result. `FINDINGS` names the planted findings in the
order of the label columns. See generate.py for the layout and findings.py for the cohort.
"""

from bench.data.phantom.contact import contact_sheet
from bench.data.phantom.findings import FINDINGS
from bench.data.phantom.generate import GENERATOR_VERSION, PhantomSummary, generate
from bench.data.phantom.reports import mentions

__all__ = ["FINDINGS", "GENERATOR_VERSION", "PhantomSummary", "contact_sheet", "generate", "mentions"]
