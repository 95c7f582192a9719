"""The CLI paths the docs rely on: one split's tokens for `bench sae train/eval --split`, the
ranked feature list and run directories in `bench features show/grid`, and `--device cuda`
on a torch without CUDA as a one-line error before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data.records import Sample


def bench(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `bench ARGS` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables and one-line errors unwrapped


# -- bench sae train/eval --split -----------------------------------------------------

@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, tiny_encoder):
    """Two phantom datasets whose tokens share one cache, as the default cache does."""
    from bench.data.phantom import generate

    base = tmp_path_factory.mktemp("split")
    a, b, cache = base / "a", base / "b", base / "cache"
    generate(a, n_train=24, n_test=4, seed=3, image_size=64)
    generate(b, n_train=16, n_test=4, seed=4, image_size=64)
    return a, b, cache, tiny_encoder


def _split_tokens(root: Path, split: str, cache: Path, encoder: str) -> np.ndarray:
    """The split's tokens through the harness (RunContext), in the split's sample order."""
    from bench.stages.data import DataConfig, open_context

    ctx, ds = open_context(DataConfig(data_root=root, split=split, cache_dir=cache, encoder=encoder))
    return ctx.tokens(ds.samples, split)


def test_sae_train_split_trains_on_that_split_only(two_datasets, tmp_path, capsys):
    a, b, cache, enc = two_datasets
    _split_tokens(b, "train", cache, enc)  # the other dataset's tokens are in the cache too
    expected = _split_tokens(a, "train", cache, enc)
    cache_dir = next((cache / "tokens").iterdir())
    from saerad.harness_tokens import load_cache_tokens

    assert load_cache_tokens(cache_dir).shape[0] > expected.shape[0]  # the whole cache: both datasets
    np.save(tmp_path / "a_train.npy", expected)
    recipe = ["--d-sae", 8, "--steps", 12, "--batch-size", 8, "--lr", 3e-3, "--eval-tokens", 0, "--log-every", 4]
    rc, _, err = bench(["sae", "train", "--split", "train", "--data-root", a, "--encoder", enc,
                        "--cache-dir", cache, "--out", tmp_path / "by_split", *recipe], capsys)
    assert rc == 0, err
    rc, _, err = bench(["sae", "train", "--tokens", tmp_path / "a_train.npy", "--out", tmp_path / "by_file",
                        *recipe], capsys)
    assert rc == 0, err
    from safetensors.numpy import load_file

    w_split = load_file(tmp_path / "by_split" / "sae.safetensors")
    w_file = load_file(tmp_path / "by_file" / "sae.safetensors")
    assert w_split.keys() == w_file.keys()
    for key in w_split:  # same rows in the same order: the same run, bit for bit
        np.testing.assert_array_equal(w_split[key], w_file[key], err_msg=key)

    rc, out, err = bench(["sae", "eval", "--sae", tmp_path / "by_split", "--split", "test", "--data-root", a,
                          "--encoder", enc, "--cache-dir", cache, "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out[out.index("{"):])["n_tokens"] == _split_tokens(a, "test", cache, enc).shape[0]


@pytest.mark.parametrize("args, message", [
    ([], "one of the two"),
    (["--tokens", "x.npy", "--split", "train"], "one of the two"),
    (["--split", "train", "--ids", "ids.txt"], "--ids selects rows of --tokens"),
    (["--tokens", "x.npy", "--data-root", "."], "go with --split"),
])
def test_sae_train_token_source_errors(args, message, tmp_path, capsys):
    rc, _, err = bench(["sae", "train", "--out", tmp_path / "o", *args], capsys)
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# -- --device without CUDA ------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
@pytest.mark.parametrize("args", [
    ["sae", "train", "--tokens", "missing.npy", "--out", "o", "--device", "cuda"],
    ["sae", "eval", "--sae", "missing", "--tokens", "missing.npy", "--device", "cuda"],
    ["sae", "bench", "--device", "cuda:1"],
    ["features", "index", "--sae", "missing", "--device", "cuda"],
    ["features", "audit", "--run", "missing", "--device", "cuda"],
], ids=lambda a: " ".join(a[:2]))
def test_device_without_cuda_is_one_line_before_work(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, _, err = bench(args, capsys)
    # the device is checked first: the missing files are not what is reported
    assert rc == 2, err
    assert re.search(r"device 'cuda(:1)?' asked for, but this torch build \(.*\) has no CUDA", err), err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


# -- bench features show / grid -------------------------------------------------------

def _index_run(tmp_path: Path):
    """A feature index over random tokens, with feature 0 silenced, and a run directory naming it."""
    from saerad.features.index import build_index
    from saerad.sae import create_sae

    d_in, d_sae, n = 8, 12, 60
    sae = create_sae("hybrid-gated", d_in=d_in, d_sae=d_sae, seed=0)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        sae.b_gate.copy_(torch.randn(d_sae, generator=g) * 0.8 - 0.3)
        sae.b_gate[0] = -1e4  # never fires
    tokens = np.random.default_rng(5).normal(size=(n, d_in)).astype(np.float32)
    samples = [Sample(id=f"d{i}", dicom_id=f"d{i}", study_id=f"s{i}", subject_id=f"p{i}", split="train",
                      view="PA", image_path=tmp_path / f"d{i}.jpg", findings=f"report {i}") for i in range(n)]
    index_dir = tmp_path / "cache" / "sae-x"
    build_index(sae, tokens, samples, k=3).save(index_dir)
    counts = (sae.feature_activations(torch.as_tensor(tokens)).detach().numpy() > 0).sum(0)
    top = int(np.argmax(counts))
    labels = index_dir / "labels-run.json"
    labels.write_text(json.dumps({str(top): "Mild cardiomegaly."}))
    (index_dir / "labels-newer.json").write_text(json.dumps({str(top): "not the run's label"}))
    run = tmp_path / "runs" / "saerad"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(
        {"generate": {"system": {"index_dir": str(index_dir), "labels": str(labels)}}}))
    return run, index_dir, counts


def test_show_without_a_feature_ranks_by_firing(tmp_path, capsys):
    run, _, counts = _index_run(tmp_path)
    rc, out, err = bench(["features", "show", "--sae", run, "--top", 4], capsys)
    assert rc == 0, err
    firing = int((counts > 0).sum())
    assert f"{firing} of 12 features fire on at least one of 60 training images" in out
    rows = re.findall(r"^\W*(\d+)\W+(\d+) \(", out, flags=re.M)
    expected = np.argsort(-counts, kind="stable")[:4]
    assert [int(f) for f, _ in rows] == expected.tolist()
    assert [int(c) for _, c in rows] == counts[expected].tolist()
    assert "Mild cardiomegaly." in out and "not the run's label" not in out  # the run's labels file


def test_show_and_grid_of_a_silent_feature(tmp_path, capsys):
    run, index_dir, counts = _index_run(tmp_path)
    assert counts[0] == 0
    rc, out, err = bench(["features", "show", 0, "--sae", run], capsys)
    assert rc == 0 and "it never fires on the training images" in out
    rc, _, err = bench(["features", "grid", 0, "--sae", index_dir, "--out", tmp_path / "g.png"], capsys)
    assert rc == 2 and "feature 0 never fires" in err and "bench features show --sae" in err
    assert not (tmp_path / "g.png").exists()
    live = int(np.argmax(counts))
    rc, out, err = bench(["features", "grid", live, "--sae", run, "--out", tmp_path / "g.png"], capsys)
    assert rc == 0, err
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_an_index_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"generate": {"system": {}}}))
    rc, _, err = bench(["features", "show", "--sae", run], capsys)
    assert rc == 2 and "names no feature index" in err
