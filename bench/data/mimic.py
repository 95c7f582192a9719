"""Read MIMIC-CXR-JPG (images, split and metadata tables) and MIMIC-CXR reports into a `Dataset`.

Selection follows the paper (docs/data.md, "The reference, and the paper's selection"):
frontal images (PA/AP) that have a metadata row, in the official split; the reference is
the findings section, or the impression when there are no findings; reports with neither
are dropped. Each sample also carries the indication and up to `n_priors` earlier reports
of the same patient.

Layout read (MIMIC-CXR-JPG 2.0.0 on PhysioNet)::

    root/mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split
    root/mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, ViewPosition,
                                            StudyDate, StudyTime, ...
    root/files/p10/p10000032/s50414267/<dicom_id>.jpg

Reports come from MIMIC-CXR (a separate PhysioNet project): ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``
in a directory, or inside ``mimic-cxr-reports.zip`` (read in place, never extracted).

Nothing is lost silently. Every split-table row that does not become a sample is counted by
reason in `Dataset.dropped` (rows without metadata, views not selected, unrecognised view
values, missing reports, reports with neither findings nor impression, missing or bad
images, other images of a study at study level, rows not read because of `limit`), and
one summary line is logged. Unusable files are also listed in `Dataset.skipped`. Report text
that is not valid UTF-8 is decoded as UTF-8 with replacement characters (U+FFFD) and the
report is listed in `Dataset.repaired`. A truncated or corrupt table is a DataError naming
the file.

Everything is lazy where it matters at full scale (377k metadata rows, 227k reports): the
tables are read once with pandas, and only the reports of the studies that are needed (the
selected ones and their priors) are opened and parsed, each once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import zipfile
import zlib
from bisect import bisect_left
from collections import Counter
from itertools import groupby
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

# The image checks moved to bench.data.images; their names stay importable from here.
from bench.data.images import REASON_IMAGE_BAD, REASON_IMAGE_MISSING, jpeg_problem  # noqa: F401
from bench.data.records import Dataset, Prior, Sample, Skipped
from bench.data.sections import _HEADING as SECTION_HEADING
from bench.data.sections import check_section_choice, clean_text, no_reference_reason, indication_from_sections, parse_sections, reference_for
from bench.errors import DataError

log = logging.getLogger(__name__)

SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv"
REPORTS_ZIP = "mimic-cxr-reports.zip"
SPLITS = ("train", "validate", "test")
SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}
UNITS = ("image", "study")
DOWNLOAD_HINT = (
    "download MIMIC-CXR-JPG 2.0.0 from PhysioNet (https://physionet.org/content/mimic-cxr-jpg/2.0.0/) "
    "and pass the directory that holds its CSV tables and files/"
)
REPORTS_HINT = (
    "pass the reports explicitly (load_split(reports=...), CLI --reports): a directory holding "
    "files/pXX/pNNNNNNNN/sNNNNNNNN.txt, or mimic-cxr-reports.zip from MIMIC-CXR 2.0.0 "
    "(https://physionet.org/content/mimic-cxr/2.0.0/)"
)

# Skip reasons are fixed phrases so that summaries can count them; the path says which file.
REASON_NO_REPORT = "report file not found"
REASON_NO_REFERENCE = "report has neither findings nor impression"
REASON_NOT_UTF8 = "report not UTF-8: decoded with replacement characters"
# Reasons that only appear in Dataset.dropped (no single file to list).
REASON_DUPLICATE = "duplicate dicom_id in the split table"
REASON_NO_METADATA = "no metadata row"
REASON_UNKNOWN_VIEW = "unrecognised or missing ViewPosition"
REASON_STUDY_HAS_IMAGE = "study already represented by another image (study level)"
REASON_LIMIT = "not read: limit reached"

# ViewPosition values that occur in MIMIC-CXR-JPG 2.0.0; anything else (or an empty value)
# is counted apart from "view not selected", since it hints at a damaged or different table.
KNOWN_VIEWS = frozenset({
    "PA", "AP", "LATERAL", "LL", "AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD",
    "LAO", "RAO", "LPO", "SWIMMERS", "XTABLE LATERAL",
})


def reason_other_view(views: tuple[str, ...]) -> str:
    return f"view not selected (not {'/'.join(views)})"

_SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
_METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime")
_ZIP_MEMBER = re.compile(r"(?:^|/)p\d\d/p(\d+)/s(\d+)\.txt$")
_PROBES = 50  # studies tried when looking for where the reports are


# ---------------------------------------------------------------------------------------
# Paths


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def report_relpath(subject_id: str, study_id: str) -> str:
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"


# ---------------------------------------------------------------------------------------
# Tables


def _find_table(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"expected {stem}.gz (or {stem}) under {root}; {DOWNLOAD_HINT}")


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is a truncated or corrupt gzip ({type(e).__name__}: {e}); "
                        f"download it again. {DOWNLOAD_HINT}") from e
    except Exception as e:  # pandas raises several kinds for unreadable files
        raise DataError(f"cannot read {path}: {e}; {DOWNLOAD_HINT}") from e
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path} lacks the columns {missing} (has {list(header)}); is it the MIMIC-CXR-JPG 2.0.0 table?")
    try:
        df = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        # The header read above succeeds on an interrupted download; the damage shows here.
        raise DataError(f"{path} is a truncated or corrupt gzip ({type(e).__name__}: {e}); "
                        f"download it again. {DOWNLOAD_HINT}") from e
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}; {DOWNLOAD_HINT}") from e
    for c in columns:
        df[c] = df[c].str.strip()
    return df


def study_datetimes(date: pd.Series, time: pd.Series) -> pd.Series:
    """Datetimes from DICOM StudyDate (YYYYMMDD) and StudyTime (HHMMSS with optional fraction).

    MIMIC-CXR-JPG stores StudyTime as a number, so leading zeros are lost ("5502.0" is
    00:55:02). A missing or unparsable date gives NaT; a missing time counts as midnight.
    """
    day = pd.to_datetime(date.str.slice(0, 8), format="%Y%m%d", errors="coerce")
    t = pd.to_numeric(time, errors="coerce").fillna(0.0).to_numpy(dtype=float)
    hours, rest = np.divmod(t, 10000.0)
    minutes, seconds = np.divmod(rest, 100.0)
    offset = pd.to_timedelta(hours * 3600.0 + minutes * 60.0 + seconds, unit="s")
    return day + pd.Series(offset, index=date.index)


# ---------------------------------------------------------------------------------------
# Reports


class ReportSource(Protocol):
    def read(self, subject_id: str, study_id: str) -> bytes | None: ...

    def where(self, subject_id: str, study_id: str) -> str: ...

    def close(self) -> None: ...


class DirectoryReports:
    """Reports as files under ``base/files/pXX/pNNNNNNNN/sNNNNNNNN.txt``."""

    def __init__(self, base: Path):
        self.base = base

    def where(self, subject_id: str, study_id: str) -> str:
        return str(self.base / report_relpath(subject_id, study_id))

    def read(self, subject_id: str, study_id: str) -> bytes | None:
        try:
            return Path(self.where(subject_id, study_id)).read_bytes()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"DirectoryReports({self.base})"


class ZipReports:
    """Reports read in place from ``mimic-cxr-reports.zip``, whatever folder prefix it uses."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot open the reports zip {path}: {e}; {REPORTS_HINT}") from e
        self._members: dict[str, str] = {}
        for name in self._zip.namelist():
            m = _ZIP_MEMBER.search(name)
            if m:
                self._members[m.group(2)] = name
        if not self._members:
            self._zip.close()
            raise DataError(f"{path} holds no files/pXX/pNNNNNNNN/sNNNNNNNN.txt reports; {REPORTS_HINT}")

    def where(self, subject_id: str, study_id: str) -> str:
        return f"{self.path}:{self._members.get(study_id, report_relpath(subject_id, study_id))}"

    def read(self, subject_id: str, study_id: str) -> bytes | None:
        name = self._members.get(study_id)
        if name is None:
            return None
        return self._zip.read(name)

    def close(self) -> None:
        self._zip.close()

    def __repr__(self) -> str:
        return f"ZipReports({self.path})"


def _directory_base(d: Path) -> Path:
    """Accept the directory that holds files/ or the files/ directory itself."""
    if not (d / "files").is_dir() and d.name == "files":
        return d.parent
    return d


def _hits(source: DirectoryReports, probes: list[tuple[str, str]]) -> int:
    return sum(Path(source.where(s, t)).is_file() for s, t in probes)


def open_reports(root: Path, reports: Path | None, probes: list[tuple[str, str]]) -> ReportSource:
    """Where the reports are: `reports` if given, else the first default location that has them.

    `probes` are (subject_id, study_id) pairs of studies in the tables; a directory counts as
    holding the reports when at least one of their report files is there.
    """
    if reports is not None:
        reports = Path(reports)
        if reports.is_file():
            return ZipReports(reports)
        if reports.is_dir():
            source = DirectoryReports(_directory_base(reports))
            if probes and not _hits(source, probes):
                raise DataError(
                    f"no report files under {reports} for the first {len(probes)} studies "
                    f"(looked for e.g. {source.where(*probes[0])}); {REPORTS_HINT}"
                )
            return source
        raise DataError(f"reports path {reports} does not exist; {REPORTS_HINT}")

    looked: list[str] = []
    candidates: list[Path] = [root, root / REPORTS_ZIP, root / "mimic-cxr-reports"]
    candidates += [root.parent / REPORTS_ZIP, root.parent / "mimic-cxr-reports"]
    if root.parent.name == "mimic-cxr-jpg":  # PhysioNet's layout: .../mimic-cxr-jpg/2.0.0 beside .../mimic-cxr/2.0.0
        sibling = root.parent.parent / "mimic-cxr" / root.name
        candidates += [sibling, sibling / REPORTS_ZIP]
    for c in candidates:
        looked.append(str(c / "files") if c.suffix != ".zip" else str(c))
        if c.suffix == ".zip":
            if c.is_file():
                return ZipReports(c)
        elif c.is_dir():
            source = DirectoryReports(c)
            if _hits(source, probes):
                return source
    raise DataError(f"found no MIMIC-CXR reports; looked in: {', '.join(looked)}; {REPORTS_HINT}")


@dataclass(frozen=True)
class ParsedReport:
    reference: str
    source: str  # "findings", "impression", or "none"
    indication: str


def decode_report(raw: bytes) -> tuple[str, bool]:
    """(text, True) for valid UTF-8; otherwise the stated fallback, UTF-8 with U+FFFD for each
    bad byte sequence, and False. Replacement keeps every valid character where it was, while
    guessing a legacy code page (cp1252) could silently turn valid text into mojibake."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


class ReportCache:
    """Parses each needed report once; None for a report that is not there.

    Reports that were not valid UTF-8 are collected in `repaired`."""

    def __init__(self, source: ReportSource, sections: str = "findings"):
        self.source = source
        self.sections = sections  # which sections make the reference (bench.data.sections.reference_for)
        self._cache: dict[str, ParsedReport | None] = {}
        self.repaired: list[Skipped] = []

    def get(self, subject_id: str, study_id: str) -> ParsedReport | None:
        if study_id not in self._cache:
            raw = self.source.read(subject_id, study_id)
            if raw is None:
                self._cache[study_id] = None
            else:
                text, clean = decode_report(raw)
                if not clean:
                    where = self.source.where(subject_id, study_id)
                    log.warning("%s: %s", where, REASON_NOT_UTF8)
                    self.repaired.append(Skipped(where, REASON_NOT_UTF8))
                sections = parse_sections(text)
                # The paper drops reports with neither findings nor impression, so no last paragraph.
                reference, source = reference_for(sections.get("findings", ""), sections.get("impression", ""),
                                                  self.sections)
                self._cache[study_id] = ParsedReport(reference, source, indication_from_sections(sections))
        return self._cache[study_id]


# ---------------------------------------------------------------------------------------
# Images


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


# ---------------------------------------------------------------------------------------
# The split


def fingerprint(samples: list[Sample], sizes: dict[str, int]) -> str:
    """sha256 over the sorted (id, reference, image file size) triples; first 16 hex digits."""
    rows = sorted((s.id, s.findings, sizes[s.id]) for s in samples)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _normalise_split(split: str) -> str:
    s = SPLIT_ALIASES.get(split.lower(), split.lower())
    if s not in SPLITS:
        raise DataError(f"unknown MIMIC-CXR split {split!r}; choose one of: {', '.join(SPLITS)} (or val)")
    return s


_NS_PER_DAY = 86400 * 10**9


def _nanoseconds(when: pd.Series) -> list[int | None]:
    """Datetimes as integer nanoseconds (exact, and fast to compare), None for NaT."""
    ns = when.to_numpy(dtype="datetime64[ns]").astype("int64").tolist()
    missing = when.isna().to_numpy()
    return [None if m else t for t, m in zip(ns, missing)]


class _History:
    """Each subject's dated studies, for finding the reports written before a given study."""

    def __init__(self, meta: pd.DataFrame, subjects: set[str]):
        studies = meta.loc[meta["subject_id"].isin(subjects) & meta["when"].notna(), ["subject_id", "study_id", "when"]]
        studies = studies.drop_duplicates("study_id").sort_values(["subject_id", "when", "study_id"])
        self._by_subject: dict[str, tuple[list[int], list[str]]] = {}
        for subject, study, t in zip(studies["subject_id"].tolist(), studies["study_id"].tolist(), _nanoseconds(studies["when"])):
            times, ids = self._by_subject.setdefault(subject, ([], []))
            times.append(t)
            ids.append(study)

    def before(self, subject_id: str, when: int | None) -> list[tuple[str, int]]:
        """(study_id, time in ns) of the subject's studies strictly before `when`, most recent first."""
        if when is None or subject_id not in self._by_subject:
            return []
        times, ids = self._by_subject[subject_id]
        k = bisect_left(times, when)  # studies at exactly the same time are not "before"
        return [(ids[i], times[i]) for i in range(k - 1, -1, -1)]


def full_report(text: str) -> str:
    """A report's whole text, every section kept, one line per section heading or paragraph:
    the line wrapping of the source files is layout, not content, and banner lines ("FINAL
    REPORT") say nothing about the patient. Headings are found as the section parser finds
    them, so what is a section here is a section there."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cuts = [0] + [m.start() for m in SECTION_HEADING.finditer(text)] + [len(text)]
    chunks = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    paragraphs = [p for c in chunks for p in re.split(r"\n[ \t]*\n", c)]
    return "\n".join(p for p in (clean_text(p) for p in paragraphs) if p)


def _full_report(subject_id: str, study_id: str, reports: ReportCache, full_texts: dict[str, str]) -> str:
    # ReportCache keeps only the parsed sections; a prior's whole text is read once more,
    # and kept, since one report is a prior of up to `n_priors` later studies.
    if study_id not in full_texts:
        raw = reports.source.read(subject_id, study_id)
        # A non-UTF-8 report was already reported as repaired when it was parsed.
        full_texts[study_id] = full_report(decode_report(raw)[0]) if raw is not None else ""
    return full_texts[study_id]


def _priors(
    subject_id: str, when: int | None, history: _History, reports: ReportCache, n_priors: int,
    full_texts: dict[str, str] | None = None,
) -> tuple[Prior, ...]:
    out: list[Prior] = []
    if n_priors <= 0:
        return ()
    full_texts = {} if full_texts is None else full_texts
    for study_id, then in history.before(subject_id, when):
        parsed = reports.get(subject_id, study_id)
        if parsed is None or not parsed.reference:
            continue  # a prior without usable text tells the model nothing; take the next one
        assert when is not None
        out.append(Prior(study_id=study_id, text=parsed.reference, days_before=(when - then) / _NS_PER_DAY,
                         report=_full_report(subject_id, study_id, reports, full_texts)))
        if len(out) == n_priors:
            break
    return tuple(out)


def load_split(
    root: Path,
    split: str,
    unit: str = "image",
    reports: Path | None = None,
    views: tuple[str, ...] = ("PA", "AP"),
    n_priors: int = 3,
    limit: int | None = None,
    check_images: bool = True,
    sections: str = "findings",
) -> Dataset:
    """Read one official split of MIMIC-CXR-JPG as a `Dataset`.

    unit="image": one sample per kept frontal image, id = dicom_id.
    unit="study": one sample per study, its first usable frontal image in `views` order then
    dicom_id order, id = study_id.
    Samples are ordered by subject, study date, study_id and image. `limit` stops after that
    many samples. Inputs that cannot be used become `Dataset.skipped` entries (one per sample
    that could not be made, or per bad image); the run goes on. `Dataset.dropped` counts every
    selected-split row that did not become a sample, by reason (rows, i.e. images, also at
    study level); kept + dropped = rows of the split.
    """
    root = Path(root)
    split = _normalise_split(split)
    if unit not in UNITS:
        raise DataError(f"unknown unit {unit!r}; choose one of: {', '.join(UNITS)}")
    if not root.is_dir():
        raise DataError(f"MIMIC-CXR-JPG root {root} does not exist; {DOWNLOAD_HINT}")
    views = tuple(v.upper() for v in views)
    check_section_choice(sections)

    split_df = _read_table(_find_table(root, SPLIT_TABLE), _SPLIT_COLUMNS)
    meta = _read_table(_find_table(root, METADATA_TABLE), _METADATA_COLUMNS)
    meta["when"] = study_datetimes(meta["StudyDate"], meta["StudyTime"])
    # A study's time is its earliest image's: priors are compared study to study.
    meta["when"] = meta.groupby("study_id")["when"].transform("min")

    in_split = split_df[split_df["split"] == split]
    wanted = in_split.drop_duplicates("dicom_id")
    dropped: Counter[str] = Counter()
    dropped[REASON_DUPLICATE] += len(in_split) - len(wanted)
    rows = wanted.merge(
        meta[["dicom_id", "ViewPosition", "when"]].drop_duplicates("dicom_id"), on="dicom_id", how="inner"
    )
    n_no_metadata = len(wanted) - len(rows)
    dropped[REASON_NO_METADATA] += n_no_metadata
    view = rows["ViewPosition"].str.upper()
    selected = view.isin(views)
    unknown = ~selected & ~view.isin(KNOWN_VIEWS)
    n_other_view = int((~selected).sum())
    dropped[REASON_UNKNOWN_VIEW] += int(unknown.sum())
    dropped[reason_other_view(views)] += n_other_view - int(unknown.sum())
    if unknown.any():
        values = Counter(view[unknown].tolist()).most_common(5)
        log.warning("MIMIC-CXR %s: %d images have an unrecognised ViewPosition (e.g. %s); not selected",
                    split, int(unknown.sum()), ", ".join(f"{v!r} x{n}" for v, n in values))
    rows = rows[selected].copy()
    # Samples in subject, study-time, study and view-preference order: the order every run and
    # every resample numbering follows, and at study level the first row of a study is its image.
    rows["view_rank"] = rows["ViewPosition"].str.upper().map({v: i for i, v in enumerate(views)})
    rows = rows.sort_values(["subject_id", "when", "study_id", "view_rank", "dicom_id"], na_position="last")
    probes = list(dict.fromkeys(zip(rows["subject_id"], rows["study_id"])))[:_PROBES]
    if not probes:  # nothing selected: probe with any study so that a wrong reports path still fails loudly
        probes = list(dict.fromkeys(zip(meta["subject_id"], meta["study_id"])))[:_PROBES]
    source = open_reports(root, reports, probes)
    log.info("MIMIC-CXR %s: %d %s images selected; reports from %r", split, len(rows), "/".join(views), source)

    history = _History(meta, set(rows["subject_id"]))
    cache = ReportCache(source, sections)
    no_reason = no_reference_reason(sections)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    sizes: dict[str, int] = {}
    n_accounted = 0  # selected rows kept or dropped; the rest were not read because of `limit`
    # Plain lists: iterating pandas groups row by row is ~50x slower at MIMIC scale.
    subjects, studies = rows["subject_id"].tolist(), rows["study_id"].tolist()
    dicoms, view_names, times = rows["dicom_id"].tolist(), rows["ViewPosition"].tolist(), _nanoseconds(rows["when"])
    prior_texts: dict[str, str] = {}  # study_id -> whole report, for the priors (read once each)
    try:
        for (subject_id, study_id), group in groupby(range(len(rows)), key=lambda i: (subjects[i], studies[i])):
            if limit is not None and len(samples) >= limit:
                break
            indices = list(group)
            parsed = cache.get(subject_id, study_id)
            problem = REASON_NO_REPORT if parsed is None else (no_reason if not parsed.reference else None)
            if problem:
                n_lost = 1 if unit == "study" else len(indices)
                skipped += [Skipped(source.where(subject_id, study_id), problem)] * n_lost
                dropped[problem] += len(indices)
                n_accounted += len(indices)
                continue
            assert parsed is not None
            priors = None  # computed once per study, only if an image is kept
            for i in indices:
                if limit is not None and len(samples) >= limit:
                    break
                path = image_path(root, subject_id, study_id, dicoms[i])
                if check_images:
                    size, bad = jpeg_problem(path)
                    if bad:
                        skipped.append(Skipped(str(path), bad))
                        dropped[bad] += 1
                        n_accounted += 1
                        continue
                else:
                    size = _file_size(path)
                if priors is None:
                    priors = _priors(subject_id, times[i], history, cache, n_priors, prior_texts)
                sample = Sample(
                    id=study_id if unit == "study" else dicoms[i],
                    dicom_id=dicoms[i],
                    study_id=study_id,
                    subject_id=subject_id,
                    split=split,
                    view=view_names[i],
                    image_path=path.absolute(),
                    findings=parsed.reference,
                    indication=parsed.indication,
                    priors=priors,
                    reference_section=parsed.source,
                )
                samples.append(sample)
                sizes[sample.id] = size
                n_accounted += 1
                if unit == "study":
                    rest = len(indices) - 1 - indices.index(i)
                    dropped[REASON_STUDY_HAS_IMAGE] += rest
                    n_accounted += rest
                    break
    finally:
        source.close()
    dropped[REASON_LIMIT] += len(rows) - n_accounted
    dropped_counts = {reason: n for reason, n in dropped.most_common() if n}

    # One summary line: every row of the split is either kept or counted under a reason.
    log.info(
        "MIMIC-CXR %s (%s level): %d rows in the split; kept %d; skipped %d; %d rows dropped%s; %d reports repaired",
        split,
        unit,
        len(in_split),
        len(samples),
        len(skipped),
        sum(dropped_counts.values()),
        "".join(f"; {n} {reason}" for reason, n in dropped_counts.items()),
        len(cache.repaired),
    )
    return Dataset(
        name="mimic-cxr",
        root=root,
        split=split,
        unit=unit,
        samples=samples,
        skipped=skipped,
        fingerprint=fingerprint(samples, sizes),
        dropped=dropped_counts,
        repaired=list(cache.repaired),
        sections=sections,
    )
