"""The bert-score package (0.3.13) run on a local checkpoint, for identity tests and the benchmark.

Under transformers 5 the package needs one correction to behave as it does under transformers 4
(where the field's published numbers were made): it asks `encode` for `add_prefix_space=True`
on RoBERTa and GPT-2 tokenizers, an argument transformers 5 ignores at encode time, so its
tokenizer is rebuilt with the setting in the constructor, where it is honoured. Everything
else (encoding, truncation, the truncated model, idf, greedy matching, rescaling) is the
package's own code. Empty texts crash the package under transformers 5
(`build_inputs_with_special_tokens` is gone), so callers keep them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def reference_scorer(model_dir: Path, num_layers: int, idf_refs: Sequence[str] | None = None,
                     baseline: tuple[float, float, float] | None = None, tmp_dir: Path | None = None):
    """A bert_score.BERTScorer on `model_dir`; with `baseline`, rescaled through a baseline file."""
    from bert_score import BERTScorer
    from transformers import AutoTokenizer

    kwargs = {}
    if baseline is not None:
        assert tmp_dir is not None, "a baseline needs a directory for its file"
        path = Path(tmp_dir) / "baseline.tsv"
        rows = ["LAYER,P,R,F"] + [f"{i},{baseline[0]},{baseline[1]},{baseline[2]}" for i in range(num_layers + 1)]
        path.write_text("\n".join(rows) + "\n")
        kwargs = {"rescale_with_baseline": True, "baseline_path": str(path)}
    scorer = BERTScorer(model_type=str(model_dir), num_layers=num_layers, lang="en", idf=idf_refs is not None,
                        idf_sents=list(idf_refs) if idf_refs is not None else None, nthreads=0, **kwargs)
    tok = scorer._tokenizer
    if type(tok).__name__ in ("RobertaTokenizer", "RobertaTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast"):
        scorer._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=False, add_prefix_space=True)
        if idf_refs is not None:  # idf was computed with the uncorrected tokenizer
            scorer._idf_dict = None
            scorer.compute_idf(list(idf_refs))
    return scorer


def reference_scores(scorer, references: Sequence[str], candidates: Sequence[str],
                     batch_size: int = 64) -> np.ndarray:
    """(n, 3) P, R, F from the package."""
    p, r, f = scorer.score(list(candidates), list(references), batch_size=batch_size)
    return np.stack([p.numpy(), r.numpy(), f.numpy()], axis=1).astype(np.float64)
