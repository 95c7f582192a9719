"""Regenerate docs/figures/reader-study-*.png and the numbers in docs/reader-study.md: a reader
study of nn, constant and SAE-Rad on the embedded default, read by two simulated readers.

    python scripts/reader_study_figures.py [--runs DIR] [--work DIR]

--runs: a directory with scored nn, constant and saerad runs (default: made with `bench run`
under --work). Prints the import's tables (summary.md) for the docs page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "docs" / "figures"


def bench(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reader-study-"))
    runs = args.runs or work / "runs"
    if args.runs is None:
        bench("run", "--system", "nn,constant,saerad", "--out", str(runs))
    study = work / "study"
    shutil.rmtree(study, ignore_errors=True)
    bench("reader-study", "export", "--runs", str(runs), "--n", "30", "--readers", "2", "--seed", "0",
          "--out", str(study))
    bench("reader-study", "simulate", str(study), "--seed", "0")
    bench("reader-study", "import", str(study))
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in ("category-impact.png", "actions.png"):
        shutil.copy(study / "results" / name, FIGURES / f"reader-study-{name}")
    print(f"figures written to {FIGURES}; the tables are in {study / 'results' / 'summary.md'}")


if __name__ == "__main__":
    main()
