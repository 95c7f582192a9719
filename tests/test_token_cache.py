"""The token cache: round trip, crash recovery, resume without re-encoding, shards, bad images."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.records import Sample
from bench.encoders import (TokenCache, encode_dataset, load_encoder, load_tokens, parse_shard,
                            shard_of)
from bench.errors import BenchError, DataError
from helpers.tiny_dinov2 import save_tiny_dinov2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2"), seed=1)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return load_encoder(tiny_dir, device="cpu")


def _samples(root: Path, n: int, start: int = 0) -> list[Sample]:
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + n):
        path = root / f"img{k:03d}.jpg"
        h, w = rng.integers(50, 90, 2)
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(path)
        out.append(Sample(id=f"d{k:03d}", dicom_id=f"d{k:03d}", study_id=f"s{k}", subject_id="p1",
                          split="test", view="PA", image_path=path, findings="Normal."))
    return out


def _count_images_through_model(encoder) -> list[int]:
    """A forward hook that records the batch size of every model call."""
    seen: list[int] = []
    encoder.model.register_forward_hook(lambda m, args, kwargs, out: seen.append(len(kwargs["pixel_values"])),
                                        with_kwargs=True)
    return seen


def test_round_trip_in_any_order_and_missing_ids(tmp_path):
    cache = TokenCache(tmp_path, "f" * 64, dim=3)
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    with cache.writer() as w:
        w.append(["a", "b"], rows[:2])
        w.append(["c", "d"], rows[2:])
    np.testing.assert_array_equal(load_tokens(tmp_path, "f" * 64, ["d", "a", "c"]), rows[[3, 0, 2]])
    assert TokenCache(tmp_path, "f" * 64).ids() == {"a", "b", "c", "d"}
    with pytest.raises(DataError, match=r"2 of 3 images have no token.*bench encode"):
        load_tokens(tmp_path, "f" * 64, ["a", "x", "y"])
    with pytest.raises(DataError, match="bench encode"):
        load_tokens(tmp_path, "e" * 64, ["a"])  # nothing was ever encoded with this fingerprint
    with pytest.raises(DataError, match="3-d tokens"):
        TokenCache(tmp_path, "f" * 64, dim=5)


def test_a_kill_mid_write_leaves_no_indexed_garbage(tmp_path):
    cache = TokenCache(tmp_path, "a" * 64, dim=2)
    with cache.writer((1, 3)) as w:
        w.append(["x", "y"], np.array([[1, 2], [3, 4]], dtype=np.float32))
        data, index = w.data_path, w.index_path
    # What a kill can leave: rows written but not indexed, and half an index line.
    with open(data, "ab") as f:
        f.write(np.array([[9, 9], [9, 9]], dtype=np.float32).tobytes() + b"\x01\x02")
    with open(index, "a") as f:
        f.write("z\t")
    assert cache.ids() == {"x", "y"}  # readers ignore both
    with cache.writer((1, 3)) as w:  # the next writer cuts them off and carries on
        w.append(["z"], np.array([[5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(cache.get(["x", "y", "z"]), [[1, 2], [3, 4], [5, 6]])
    assert data.stat().st_size == 3 * 2 * 4
    assert index.read_text() == "x\t0\ny\t1\nz\t2\n"


def test_a_second_writer_on_a_shard_waits_for_the_first(tmp_path, caplog):
    cache = TokenCache(tmp_path, "b" * 64, dim=2)
    entered = threading.Event()

    def second() -> None:
        with cache.writer((0, 2)) as w:  # flock conflicts across open files, even in one process
            entered.set()
            w.append(["later"], np.array([[3, 4]], dtype=np.float32))

    with caplog.at_level(logging.INFO, logger="bench.encoders.cache"):
        with cache.writer((0, 2)) as w:
            t = threading.Thread(target=second)
            t.start()
            assert not entered.wait(0.5)  # blocked while the first writer holds the shard
            w.append(["first"], np.array([[1, 2]], dtype=np.float32))
            with cache.writer((1, 2)):  # another shard is not blocked
                pass
        t.join(10)
    assert entered.is_set() and "waiting for it to finish" in caplog.text
    np.testing.assert_array_equal(cache.get(["first", "later"]), [[1, 2], [3, 4]])


def test_resume_after_kill_encodes_exactly_the_rest(tmp_path, tiny_dir):
    samples = _samples(tmp_path, 10)
    enc = load_encoder(tiny_dir, device="cpu")
    seen = _count_images_through_model(enc)

    class Killed(RuntimeError):
        pass

    def kill_after_two(batches_done: int, encoded: int) -> None:
        if batches_done == 2:
            raise Killed

    with pytest.raises(Killed):
        encode_dataset(samples, enc, tmp_path / "cache", batch_size=3, num_workers=2,
                       progress=False, on_batch=kill_after_two)
    assert sum(seen) == 6
    seen.clear()
    report = encode_dataset(samples, enc, tmp_path / "cache", batch_size=3, progress=False)
    assert (report.encoded, report.cached, report.failed) == (4, 6, [])
    assert sum(seen) == 4  # no image went through the model twice
    seen.clear()
    again = encode_dataset(samples, enc, tmp_path / "cache", batch_size=3, progress=False)
    assert (again.encoded, again.cached, sum(seen)) == (0, 10, 0)

    ids = [s.dicom_id for s in samples]
    direct = enc.encode([Image.open(s.image_path) for s in samples])
    np.testing.assert_allclose(load_tokens(tmp_path / "cache", enc.fingerprint, ids), direct,
                               rtol=1e-5, atol=1e-6)


def _encode_shard(samples, tiny_dir, cache_dir, shard) -> int:
    enc = load_encoder(tiny_dir, device="cpu")
    return encode_dataset(samples, enc, cache_dir, batch_size=4, shard=shard, progress=False).encoded


def test_two_processes_two_shards_one_cache_equal_unsharded(tmp_path, tiny_dir, encoder):
    samples = _samples(tmp_path, 12)
    ids = [s.dicom_id for s in samples]
    sharded = tmp_path / "sharded"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.starmap(_encode_shard, [(samples, tiny_dir, sharded, (i, 2)) for i in range(2)])
    expected = [sum(shard_of(i, 2) == k for i in ids) for k in range(2)]
    assert counts == expected and all(counts)  # each process did its own part, and only it

    whole = encode_dataset(samples, encoder, tmp_path / "whole", batch_size=5, progress=False)
    assert whole.encoded == 12
    np.testing.assert_allclose(load_tokens(sharded, encoder.fingerprint, ids),
                               load_tokens(tmp_path / "whole", encoder.fingerprint, ids),
                               rtol=1e-5, atol=1e-6)
    # Shards already in the cache count as cached for an unsharded re-run.
    assert encode_dataset(samples, encoder, sharded, progress=False).cached == 12


def test_corrupt_images_are_reported_and_skipped(tmp_path, encoder):
    samples = _samples(tmp_path, 4)
    garbage = tmp_path / "img001.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    truncated = tmp_path / "img002.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    report = encode_dataset(samples, encoder, tmp_path / "cache", batch_size=2, progress=False)
    assert report.encoded == 2
    assert sorted(Path(f.path).name for f in report.failed) == ["img001.jpg", "img002.jpg"]
    assert all("unreadable image" in f.reason for f in report.failed)
    load_tokens(tmp_path / "cache", encoder.fingerprint, ["d000", "d003"])
    with pytest.raises(DataError, match="1 of 1"):
        load_tokens(tmp_path / "cache", encoder.fingerprint, ["d001"])
    # A re-run tries the failed ones again (they may have been fixed) and nothing else.
    again = encode_dataset(samples, encoder, tmp_path / "cache", progress=False)
    assert (again.encoded, again.cached, len(again.failed)) == (0, 2, 2)


def test_shard_assignment_is_a_stable_partition():
    ids = [f"{k:08x}-dicom" for k in range(1000)]
    parts = [[i for i in ids if shard_of(i, 4) == k] for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert all(200 < len(p) < 300 for p in parts)  # roughly balanced
    # sha256("abc") starts ba7816bf8f01cfea (the FIPS 180-2 test vector), whose first 8 bytes
    # read big-endian are 13436514500253700074: the shard is that number modulo n.
    assert shard_of("abc", 1000) == 74
    assert shard_of("abc", 7) == 13436514500253700074 % 7
    assert shard_of("abc", 1) == 0


def test_parse_shard():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(BenchError, match="shard"):
            parse_shard(bad)
