"""Bad data on disk is isolated and counted, never fatal and never lost silently.

Each test writes a small phantom (MIMIC-CXR-JPG layout) and damages it: undecodable images,
NaN/Inf tokens, rows the reader drops, reports that are not UTF-8, truncated tables, and two
processes encoding into one token cache.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing as mp
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.mimic import (METADATA_TABLE, REASON_IMAGE_BAD, REASON_IMAGE_MISSING, REASON_NO_METADATA,
                              REASON_NO_REFERENCE, REASON_NO_REPORT, REASON_NOT_UTF8, REASON_UNKNOWN_VIEW,
                              SPLIT_TABLE, jpeg_problem, load_split, reason_other_view, report_relpath)
from bench.data.phantom import generate
from bench.encoders import TokenCache, encode_dataset, load_encoder, load_tokens
from bench.encoders.encode import REASON_NON_FINITE
from bench.errors import DataError


@pytest.fixture
def phantom(tmp_path: Path) -> Path:
    root = tmp_path / "phantom"
    generate(root, n_train=12, n_test=12, seed=3, image_size=64)
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from helpers.tiny_dinov2 import save_tiny_dinov2

    return load_encoder(save_tiny_dinov2(tmp_path_factory.mktemp("enc"), seed=2), device="cpu")


def _garbage_jpeg(path: Path) -> None:
    """Valid start and end markers around bytes no decoder accepts."""
    rng = np.random.default_rng(0)
    path.write_bytes(b"\xff\xd8\xff" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes() + b"\xff\xd9")


def _read_gz(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write_gz(df: pd.DataFrame, path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


# --- 1. undecodable image ----------------------------------------------------------------


def test_undecodable_image_is_listed_and_load_tokens_names_it(phantom, encoder, tmp_path):
    ds = load_split(phantom, "test")
    bad = ds.samples[1]
    _garbage_jpeg(bad.image_path)
    assert jpeg_problem(bad.image_path)[1] is None  # the reader's cheap check lets it through

    cache = tmp_path / "cache"
    report = encode_dataset(ds.samples, encoder, cache, batch_size=3, progress=False)
    assert report.encoded == len(ds) - 1
    assert [(f.path, f.reason.startswith("unreadable image")) for f in report.failed] == [(str(bad.image_path), True)]
    # The harness writes asdict(report) into the manifest: it must be JSON as it is.
    manifest = json.loads(json.dumps(asdict(report)))
    assert manifest["failed"][0]["path"] == str(bad.image_path)

    good = [s.dicom_id for s in ds.samples if s is not bad]
    assert load_tokens(cache, encoder.fingerprint, good).shape == (len(good), encoder.dim)
    with pytest.raises(DataError, match="undecodable") as e:
        load_tokens(cache, encoder.fingerprint, [s.dicom_id for s in ds.samples])
    assert bad.dicom_id in str(e.value) and "unreadable image" in str(e.value)


# --- 2. NaN / Inf tokens -----------------------------------------------------------------


def test_non_finite_tokens_are_refused_and_listed(phantom, encoder, tmp_path, monkeypatch):
    ds = load_split(phantom, "test")
    real_forward = encoder.forward

    def poisoned(pixel_values):
        out = real_forward(pixel_values)
        out[0, 3] = np.nan
        out[1, 0] = np.inf
        return out

    monkeypatch.setattr(encoder, "forward", poisoned)
    cache = tmp_path / "cache"
    report = encode_dataset(ds.samples, encoder, cache, batch_size=len(ds), progress=False)
    first_two = {str(s.image_path) for s in ds.samples[:2]}
    assert {f.path for f in report.failed} == first_two
    assert all(f.reason == REASON_NON_FINITE for f in report.failed)
    assert report.encoded == len(ds) - 2

    tc = TokenCache(cache, encoder.fingerprint)
    assert tc.ids() == {s.dicom_id for s in ds.samples[2:]}
    data_file = next(tc.root.glob("*.f32"))
    assert data_file.stat().st_size == (len(ds) - 2) * encoder.dim * 4  # never written, not even unindexed
    assert np.isfinite(tc.get([s.dicom_id for s in ds.samples[2:]])).all()
    with pytest.raises(DataError, match="NaN or Inf"):
        load_tokens(cache, encoder.fingerprint, [ds.samples[0].dicom_id])


# --- 3. every dropped row is counted -----------------------------------------------------


def test_every_dropped_row_is_counted_by_reason(phantom, caplog):
    split = _read_gz(phantom / (SPLIT_TABLE + ".gz"))
    meta = _read_gz(phantom / (METADATA_TABLE + ".gz"))
    test = split[split["split"] == "test"].merge(meta[["dicom_id", "ViewPosition"]], on="dicom_id")
    frontal = test[test["ViewPosition"].isin(["PA", "AP"])]
    per_study = frontal.groupby("study_id")["dicom_id"].transform("size")
    singles = frontal[per_study == 1].reset_index(drop=True)
    assert len(singles) >= 7, "the phantom should have enough single-image studies"
    n_lateral = int((~test["ViewPosition"].isin(["PA", "AP"])).sum())
    row = {k: singles.iloc[k] for k in range(7)}

    def img(r) -> Path:
        return phantom / "files" / f"p{r.subject_id[:2]}" / f"p{r.subject_id}" / f"s{r.study_id}" / f"{r.dicom_id}.jpg"

    meta.loc[meta["dicom_id"] == row[0].dicom_id, "ViewPosition"] = "UPSIDE DOWN"  # unrecognised
    meta = meta[meta["dicom_id"] != row[1].dicom_id]  # no metadata
    _write_gz(meta, phantom / (METADATA_TABLE + ".gz"))
    (phantom / report_relpath(row[2].subject_id, row[2].study_id)).unlink()
    (phantom / report_relpath(row[3].subject_id, row[3].study_id)).write_text("INDICATION: cough.\n")
    img(row[4]).unlink()
    path5 = img(row[5])
    path5.write_bytes(path5.read_bytes()[:100])  # truncated download
    _garbage_jpeg(img(row[6]))  # passes the marker check: found only at encode time

    with caplog.at_level(logging.INFO, logger="bench.data.mimic"):
        ds = load_split(phantom, "test", n_priors=0)
    assert ds.dropped == {
        reason_other_view(("PA", "AP")): n_lateral,
        REASON_UNKNOWN_VIEW: 1,
        REASON_NO_METADATA: 1,
        REASON_NO_REPORT: 1,
        REASON_NO_REFERENCE: 1,
        REASON_IMAGE_MISSING: 1,
        REASON_IMAGE_BAD: 1,
    }
    assert len(ds) + sum(ds.dropped.values()) == len(test)  # every row of the split accounted for
    summaries = [r.getMessage() for r in caplog.records if "rows in the split" in r.getMessage()]
    assert len(summaries) == 1 and f"kept {len(ds)}" in summaries[0] and REASON_UNKNOWN_VIEW in summaries[0]
    assert "UPSIDE DOWN" in caplog.text  # the unrecognised value is shown


def test_limit_and_study_level_rows_are_counted(phantom):
    full = load_split(phantom, "test", unit="image")
    n_rows = len(full) + sum(full.dropped.values())
    limited = load_split(phantom, "test", limit=2)
    assert len(limited) == 2 and len(limited) + sum(limited.dropped.values()) == n_rows
    assert limited.dropped["not read: limit reached"] > 0
    studies = load_split(phantom, "test", unit="study")
    assert len(studies) + sum(studies.dropped.values()) == n_rows


# --- 4. report text that is not UTF-8 ----------------------------------------------------


def test_non_utf8_report_is_decoded_with_replacement_and_listed(phantom):
    ds = load_split(phantom, "test", n_priors=0)
    s = ds.samples[0]
    report = phantom / report_relpath(s.subject_id, s.study_id)
    raw = report.read_bytes()
    # A cp1252 e-acute inside the findings, as a legacy export would write it.
    report.write_bytes(raw.replace(b"FINDINGS:", b"FINDINGS: Caf\xe9 sign.", 1))

    again = load_split(phantom, "test", n_priors=0)
    sample = next(x for x in again.samples if x.id == s.id)
    assert "Caf\ufffd sign." in sample.findings
    assert [(r.path, r.reason) for r in again.repaired] == [(str(report), REASON_NOT_UTF8)]
    assert len(again) == len(ds)  # used, not dropped


# --- 5. truncated tables -----------------------------------------------------------------


@pytest.mark.parametrize("table", [SPLIT_TABLE, METADATA_TABLE])
def test_truncated_table_is_a_clean_data_error(phantom, table):
    path = phantom / (table + ".gz")
    df = _read_gz(path)
    # Large enough that the header decompresses fine and the damage shows only later.
    rng = np.random.default_rng(1)
    big = pd.concat([df] * 3000, ignore_index=True)
    big["dicom_id"] = [f"{x:032x}" for x in rng.integers(0, 2**62, len(big))]
    _write_gz(big, path)
    data = path.read_bytes()
    assert len(data) > 500_000
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as e:
        load_split(phantom, "test")
    assert str(path) in str(e.value)


def test_tiny_truncated_table_is_a_clean_data_error(phantom):
    path = phantom / (SPLIT_TABLE + ".gz")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        load_split(phantom, "test")


# --- 6. the write lock -------------------------------------------------------------------


def test_a_fully_cached_run_does_not_take_the_lock(phantom, encoder, tmp_path):
    ds = load_split(phantom, "test")
    cache = tmp_path / "cache"
    encode_dataset(ds.samples, encoder, cache, progress=False)
    result = {}
    with TokenCache(cache, encoder.fingerprint, encoder.dim).writer((0, 1)):  # someone else writing
        t = threading.Thread(target=lambda: result.update(r=encode_dataset(ds.samples, encoder, cache,
                                                                           progress=False)))
        t.start()
        t.join(30)
        assert not t.is_alive(), "a run with everything cached blocked on the write lock"
    assert result["r"].cached == len(ds) and result["r"].encoded == 0


class _Flag(logging.Handler):
    """Touches a file when the cache logs that it waits for the lock."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for it to finish" in record.getMessage():
            self.path.touch()


def _encode_in_child(root: str, split: str, encoder_dir: str, cache: str, flag: str) -> tuple[int, int]:
    logging.getLogger("bench.encoders.cache").addHandler(_Flag(Path(flag)))
    logging.getLogger("bench.encoders.cache").setLevel(logging.INFO)
    ds = load_split(Path(root), split)
    enc = load_encoder(encoder_dir, device="cpu")
    r = encode_dataset(ds.samples, enc, cache, batch_size=4, num_workers=1, progress=False)
    return r.encoded, r.cached


@pytest.mark.parametrize("splits", [("test", "test"), ("train", "test")], ids=["same", "different"])
def test_two_processes_encoding_into_one_cache_both_finish(phantom, tmp_path, tiny_encoder, splits):
    enc = load_encoder(tiny_encoder, device="cpu")
    cache = tmp_path / "cache"
    flags = [tmp_path / f"waiting-{k}" for k in range(2)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        # Hold the lock until both children are waiting for it, so that the wait is exercised
        # every time, not only when the timing happens to overlap.
        with TokenCache(cache, enc.fingerprint, enc.dim, encoder_name=enc.name).writer((0, 1)):
            job = pool.starmap_async(_encode_in_child, [(str(phantom), sp, tiny_encoder, str(cache), str(f))
                                                        for sp, f in zip(splits, flags)])
            deadline = time.monotonic() + 120
            while not all(f.exists() for f in flags):
                assert time.monotonic() < deadline, "the children never reached the lock"
                assert not job.ready(), f"a child finished without waiting: {job.get()}"
                time.sleep(0.1)
        results = job.get(timeout=300)

    ids = {s.dicom_id for sp in set(splits) for s in load_split(phantom, sp).samples}
    tc = TokenCache(cache, enc.fingerprint)
    lines = [line.split("\t")[0] for f in tc.root.glob("*.index.tsv") for line in f.read_text().splitlines()]
    assert sorted(lines) == sorted(ids)  # every id exactly once
    assert sum(e for e, _ in results) == len(ids)
    if splits[0] == splits[1]:
        assert sorted(results) == [(0, len(ids)), (len(ids), 0)]  # the second found it all done
