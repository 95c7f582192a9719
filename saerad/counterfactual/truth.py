"""What the phantom's planted truth says about features and images (localisation needs both).

- the feature that best detects a finding: the highest AUROC of a feature's code as a score for
  the finding's 0/1 label over the training split (saerad.audit.feature_aurocs), so the test
  images the localisation is measured on play no part in the choice;
- the images that have a finding: test images first; when the test split has fewer than asked,
  the validate split (seen by neither the SAE nor the diffusion model) fills up, and the result
  says how many came from each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.errors import BenchError

DEFAULT_FINDINGS = ("pacemaker", "sternotomy_wires", "cardiomegaly")


def planted(root) -> pd.DataFrame:
    from bench.data.phantom.generate import LABELS_TABLE

    path = root / LABELS_TABLE
    if not path.is_file():
        raise BenchError(f"{root} has no {LABELS_TABLE}: not a phantom dataset, so there is no planted truth; "
                         "give --feature instead of --finding")
    table = pd.read_csv(path, dtype={"dicom_id": str, "study_id": str, "subject_id": str, "split": str})
    return table.drop_duplicates("dicom_id").set_index("dicom_id")


def check_finding(name: str) -> None:
    from bench.data.phantom.findings import FINDINGS

    if name not in FINDINGS:
        raise BenchError(f"unknown finding {name!r}; the phantom plants: {', '.join(FINDINGS)}")


@dataclass
class BestFeature:
    finding: str
    feature: int
    train_auroc: float


@torch.no_grad()
def best_feature(ctx: Any, sae: Any, finding: str) -> BestFeature:
    from saerad.audit import feature_aurocs

    check_finding(finding)
    train = ctx.dataset("train")
    table = planted(ctx.data_root)
    y = table.loc[[s.dicom_id for s in train.samples], finding].to_numpy()
    tokens = torch.as_tensor(ctx.tokens(train.samples, "train"))
    acts = sae.encode(tokens).cpu().numpy()
    auc = feature_aurocs(acts, y)
    if np.all(np.isnan(auc)):
        raise BenchError(f"{finding} is never (or always) planted in the training split; no feature can detect it")
    k = int(np.nanargmax(auc))
    return BestFeature(finding, k, float(auc[k]))


@dataclass
class Chosen:
    samples: list  # Sample objects
    from_test: int
    from_validate: int


def images_with(ctx: Any, finding: str, n: int) -> Chosen:
    check_finding(finding)
    table = planted(ctx.data_root)
    test = [s for s in ctx.evaluation_dataset().samples if table.at[s.dicom_id, finding] == 1][:n]
    extra: list = []
    if len(test) < n:
        try:
            val = ctx.dataset("validate").samples
        except BenchError:
            val = []
        extra = [s for s in val if table.at[s.dicom_id, finding] == 1][:n - len(test)]
    if not test and not extra:
        raise BenchError(f"no test or validate image has {finding}")
    return Chosen(test + extra, len(test), len(extra))
