"""RGER: our RadGraph rewards against the radgraph package's, the metric, and the annotator protocol.

Reward values are checked three ways: against numbers pinned from radgraph 0.1.18's own reward
functions on hand-written annotations (always), against that reward module live when the
radgraph package is installed, and against hand-computed cases.

The RadGraph model itself cannot run here (no weights offline, no GPU). The annotator tests
therefore run our real worker script and protocol against a *scripted stand-in* for the
radgraph package (a module named `radgraph` that returns fixed annotations per text); it tests
the plumbing, caching and fault paths, not RadGraph's output.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import MetricUnavailable
from bench.metrics.radgraph import RgerMetric
from bench.metrics.radgraph.annotator import AnnotatorConfig, RadGraphAnnotator, model_fingerprint
from bench.metrics.radgraph.rewards import (LEVELS, PINNED_VERSION, AnnotationError, entity_keys, reward,
                                            rewards, set_f1)
from bench.stats.bootstrap import bootstrap_distribution

OBS_DP = "Observation::definitely present"
OBS_DA = "Observation::definitely absent"
OBS_U = "Observation::uncertain"
ANAT = "Anatomy::definitely present"


def ann(*entities) -> dict:
    """An annotation in radgraph's format from (tokens, label, [(relation, target id), ...]); ids 1, 2, ..."""
    return {"text": " ".join(e[0] for e in entities),
            "entities": {str(i): {"tokens": tok, "label": lab, "start_ix": i - 1, "end_ix": i - 1,
                                  "relations": [[r, str(t)] for r, t in rels]}
                         for i, (tok, lab, rels) in enumerate(entities, start=1)}}


# (prediction, reference), hand-written to hit each rule: relations present or not, case,
# relation targets, duplicate entities, labels, several relations, empty sides.
PAIRS: dict[str, tuple[dict, dict]] = {
    "identical": (ann(("left", ANAT, []), ("effusion", OBS_DP, [("located_at", 1)])),
                  ann(("left", ANAT, []), ("effusion", OBS_DP, [("located_at", 1)]))),
    "relation_dropped": (
        ann(("left", ANAT, []), ("effusion", OBS_DP, []), ("pneumothorax", OBS_DA, [])),
        ann(("left", ANAT, []), ("effusion", OBS_DP, [("located_at", 1)]), ("pneumothorax", OBS_DA, []))),
    "case_and_target": (
        ann(("Right", ANAT, []), ("Effusion", OBS_DP, [("located_at", 1)]), ("mild", OBS_DP, [("modify", 2)])),
        ann(("right", ANAT, []), ("effusion", OBS_DP, [("located_at", 1)]), ("mild", OBS_DP, [("modify", 2)]))),
    "other_target": (
        ann(("left", ANAT, []), ("right", ANAT, []), ("effusion", OBS_DP, [("located_at", 2)])),
        ann(("left", ANAT, []), ("right", ANAT, []), ("effusion", OBS_DP, [("located_at", 1)]))),
    "duplicates_and_labels": (
        ann(("tube", OBS_DP, []), ("tube", OBS_DP, []), ("edema", OBS_U, []), ("lung", ANAT, [])),
        ann(("tube", OBS_DP, []), ("edema", OBS_DP, []), ("lung", ANAT, []), ("pneumonia", OBS_DA, []))),
    "multi_relation": (
        ann(("lower", ANAT, [("modify", 3)]), ("left", ANAT, [("modify", 3)]), ("lobe", ANAT, []),
            ("opacity", OBS_DP, [("located_at", 3), ("suggestive_of", 5)]), ("pneumonia", OBS_U, [])),
        ann(("lower", ANAT, [("modify", 3)]), ("left", ANAT, [("modify", 3)]), ("lobe", ANAT, []),
            ("opacity", OBS_DP, [("located_at", 3)]), ("atelectasis", OBS_U, []))),
    "disjoint": (ann(("cardiomegaly", OBS_DP, [])),
                 ann(("heart", ANAT, []), ("normal", OBS_DP, [("located_at", 1)]))),
    "empty_prediction": (ann(), ann(("effusion", OBS_DA, []))),
    "empty_reference": (ann(("effusion", OBS_DA, [])), ann()),
    "both_empty": (ann(), ann()),
}

# radgraph 0.1.18, radgraph/rewards.py: compute_reward(prediction, reference, "all") ->
# (simple, partial, complete) on PAIRS, produced by loading that file (it imports nothing)
# from the unpacked sdist (`pip download --no-deps radgraph==0.1.18`) with
# importlib.util.spec_from_file_location and printing repr() of each result.
RADGRAPH_0_1_18 = {
    "identical": (1.0, 1.0, 1.0),
    "relation_dropped": (1.0, 0.6666666666666666, 0.6666666666666666),
    "case_and_target": (0.3333333333333333, 0.3333333333333333, 0.6666666666666666),
    "other_target": (1.0, 1.0, 0.6666666666666666),
    "duplicates_and_labels": (0.5714285714285715, 0.5714285714285715, 0.5714285714285715),
    "multi_relation": (0.8000000000000002, 0.8000000000000002, 0.7272727272727272),
    "disjoint": (0.0, 0.0, 0.0),
    "empty_prediction": (0.0, 0.0, 0.0),
    "empty_reference": (0.0, 0.0, 0.0),
    "both_empty": (0.0, 0.0, 0.0),
}


# -- rewards ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAIRS))
def test_rewards_match_pinned_radgraph_values(name):
    pred, ref = PAIRS[name]
    # Same arithmetic as the package (2PR / (P + R)), hence equal to the last bit.
    assert tuple(rewards(pred, ref).as_dict()[level] for level in LEVELS) == RADGRAPH_0_1_18[name]


def _installed_radgraph_rewards():
    spec = importlib.util.find_spec("radgraph")
    if spec is None or spec.origin is None:
        return None
    from importlib.metadata import version

    if version("radgraph") != PINNED_VERSION:
        pytest.skip(f"installed radgraph is {version('radgraph')}, not {PINNED_VERSION}")
    # Load rewards.py alone: radgraph/__init__ imports the model stack (allennlp copy, torch).
    path = Path(spec.origin).with_name("rewards.py")
    module_spec = importlib.util.spec_from_file_location("radgraph_rewards_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_rewards_match_installed_radgraph_live():
    reference = _installed_radgraph_rewards()
    if reference is None:
        pytest.skip("radgraph is not installed here; the pinned values above stand in for it")
    for name, (pred, ref) in PAIRS.items():
        assert tuple(reference.compute_reward(pred, ref, "all")) == \
            tuple(rewards(pred, ref).as_dict()[level] for level in LEVELS), name
    rng = random.Random(11)
    for _ in range(300):
        pred, ref = _random_annotation(rng), _random_annotation(rng)
        assert tuple(reference.compute_reward(pred, ref, "all")) == \
            tuple(rewards(pred, ref).as_dict()[level] for level in LEVELS)


def test_hand_computed_simple():
    # pred {tube/DP, edema/U, lung/A} (the second "tube" collapses), ref {tube/DP, edema/DP, lung/A,
    # pneumonia/DA}: 2 in common, P = 2/3, R = 2/4, F1 = 2 * (1/3) / (7/6) = 4/7.
    pred, ref = PAIRS["duplicates_and_labels"]
    assert reward(pred, ref, "simple") == pytest.approx(4 / 7)


def test_hand_computed_partial():
    # The reference's "effusion" has a relation, the prediction's not: keys (effusion, DP) and
    # (effusion, DP, True) differ; left and pneumothorax match: P = R = 2/3.
    pred, ref = PAIRS["relation_dropped"]
    assert reward(pred, ref, "simple") == 1.0
    assert reward(pred, ref, "partial") == pytest.approx(2 / 3)
    # A relation to a different target still counts as "has a relation" at the partial level.
    pred, ref = PAIRS["other_target"]
    assert reward(pred, ref, "partial") == 1.0


def test_hand_computed_complete():
    # pred: (lower, modify, lobe), (left, modify, lobe), lobe, (opacity, located_at, lobe),
    # (opacity, suggestive_of, pneumonia), pneumonia/U = 6 keys; ref: the first four + atelectasis
    # = 5 keys; 4 common: P = 4/6, R = 4/5, F1 = 16/22.
    pred, ref = PAIRS["multi_relation"]
    assert reward(pred, ref, "complete") == pytest.approx(16 / 22)
    # Relation keys are lower-cased (so "Effusion" -> right matches), plain keys are not ("Right").
    pred, ref = PAIRS["case_and_target"]
    assert reward(pred, ref, "complete") == pytest.approx(2 / 3)
    assert reward(pred, ref, "simple") == pytest.approx(1 / 3)


@pytest.mark.parametrize("name", ["empty_prediction", "empty_reference", "both_empty"])
def test_empty_sides_score_zero_at_every_level(name):
    pred, ref = PAIRS[name]
    assert rewards(pred, ref).as_dict() == {"simple": 0.0, "partial": 0.0, "complete": 0.0}


def test_entity_keys_per_level():
    a = ann(("left", ANAT, []), ("Effusion", OBS_DP, [("located_at", 1), ("modify", 1)]))
    assert entity_keys(a, "simple") == {("left", ANAT), ("Effusion", OBS_DP)}
    assert entity_keys(a, "partial") == {("left", ANAT), ("Effusion", OBS_DP, True)}
    assert entity_keys(a, "complete") == {("left", ANAT), ("effusion", OBS_DP, "located_at", "left"),
                                          ("effusion", OBS_DP, "modify", "left")}


def test_malformed_annotations_are_named():
    with pytest.raises(AnnotationError, match="entities"):
        reward({"text": "x"}, ann(("a", ANAT, [])), "partial")
    dangling = ann(("effusion", OBS_DP, [("located_at", 7)]))
    with pytest.raises(AnnotationError, match="'7'"):
        reward(dangling, ann(("a", ANAT, [])), "complete")
    with pytest.raises(ValueError, match="reward level"):
        reward(ann(("a", ANAT, [])), ann(("a", ANAT, [])), "exact")


def _random_annotation(rng: random.Random) -> dict:
    n = rng.randint(0, 5)
    entities = []
    for _ in range(n):
        rels = [(rng.choice(["located_at", "modify"]), rng.randint(1, n)) for _ in range(rng.randint(0, 2))]
        entities.append((rng.choice(["left", "Left", "effusion", "lobe", "tube", "edema"]),
                         rng.choice([OBS_DP, OBS_DA, ANAT]), rels))
    return ann(*entities)


def test_reward_properties_on_random_annotations():
    rng = random.Random(7)
    for _ in range(300):
        a, b = _random_annotation(rng), _random_annotation(rng)
        for level in LEVELS:
            value = reward(a, b, level)
            assert 0.0 <= value <= 1.0
            assert value == pytest.approx(reward(b, a, level))  # F1 is symmetric
            assert reward(a, a, level) == (1.0 if a["entities"] else 0.0)
    assert set_f1(set(), {1}) == 0.0


# -- the metric on a stand-in annotator --------------------------------------------

class TableAnnotator:
    """Fixed annotations per text (a stand-in for the model, for the metric's arithmetic)."""

    def __init__(self, table: dict[str, dict]):
        self.table = table
        self.config = AnnotatorConfig()
        self.calls: list[list[str]] = []

    def resolve(self):
        return None

    def annotate(self, texts):
        self.calls.append(list(texts))
        return [self.table.get(t, ann()) for t in texts]


def _table_metric():
    table, refs, preds = {}, [], []
    for name, (pred, ref) in PAIRS.items():
        table[f"pred {name}"], table[f"ref {name}"] = pred, ref
        refs.append(f"ref {name}")
        preds.append(f"pred {name}")
    return RgerMetric(annotator=TableAnnotator(table)), refs, preds


def test_metric_per_sample_and_aggregate():
    metric, refs, preds = _table_metric()
    rows = metric.per_sample(refs, preds)
    assert list(rows.columns) == ["rger_simple", "rger_partial", "rger_complete"]
    expected = np.array([RADGRAPH_0_1_18[name] for name in PAIRS])
    np.testing.assert_array_equal(rows.to_numpy(), expected)
    values = metric.aggregate(rows)
    assert values["rger"] == pytest.approx(expected[:, 1].mean())
    assert values["rger_simple"] == pytest.approx(expected[:, 0].mean())
    assert values["rger_complete"] == pytest.approx(expected[:, 2].mean())
    assert metric.columns == ("rger",)


def test_metric_fast_bootstrap_path_equals_plain_aggregate():
    metric, refs, preds = _table_metric()
    rows = metric.per_sample(refs, preds)
    fast = bootstrap_distribution(metric, rows, n_resamples=200, seed=3)
    slow = bootstrap_distribution(lambda r: metric.aggregate(r), rows, n_resamples=200, seed=3)
    for key in ("rger", "rger_simple", "rger_complete"):
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-12)


def test_metric_empty_report_scores_zero():
    metric = RgerMetric(annotator=TableAnnotator({"a": PAIRS["identical"][0]}))
    rows = metric.per_sample(["a", "a", ""], ["a", "", "a"])
    assert rows["rger_partial"].tolist() == [1.0, 0.0, 0.0]


# -- unavailability -------------------------------------------------------------------

def _fake_radgraph_package(root: Path, version: str = PINNED_VERSION) -> Path:
    """A stand-in `radgraph` distribution: fixed annotations from $FAKE_RADGRAPH_TABLE.

    Like the real RadGraph it prints to stdout, returns {"0": ..., ...} per call, skips texts it
    cannot annotate, and needs <model_cache_dir>/<model_type>/config.json to exist.
    """
    pkg = root / "radgraph"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import json, os
        class RadGraph:
            def __init__(self, model_type=None, model_cache_dir=None, cuda=None, **kw):
                print("Using device: cpu")
                if os.environ.get("FAKE_RADGRAPH_CRASH"):
                    raise RuntimeError("weights.th is corrupt")
                assert os.path.isfile(os.path.join(model_cache_dir, model_type, "config.json"))
                self.table = json.load(open(os.environ["FAKE_RADGRAPH_TABLE"]))
                self.device = "cpu"
            def __call__(self, texts):
                with open(os.environ["FAKE_RADGRAPH_LOG"], "a") as log:
                    log.write(json.dumps(texts) + "\\n")
                return {str(i): self.table[t] for i, t in enumerate(texts) if t in self.table}
    '''))
    dist = root / f"radgraph-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: radgraph\nVersion: {version}\n")
    return root


def _archive(path: Path, encoder_dir: Path, weights: bytes = b"not a real model") -> Path:
    """A radgraph-style .tar.gz (config.json at the top) naming a local encoder directory."""
    src = path.parent / "archive-src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(
        {"model": {"embedder": {"token_embedders": {"bert": {"model_name": str(encoder_dir)}}}}}))
    (src / "weights.th").write_bytes(weights)
    with tarfile.open(path, "w:gz") as tar:
        for f in src.iterdir():
            tar.add(f, arcname=f.name)
    return path


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    site = _fake_radgraph_package(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("FAKE_RADGRAPH_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("SAERAD_RADGRAPH_MODEL", raising=False)
    monkeypatch.setenv("SAERAD_RADGRAPH_PYTHON", sys.executable)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    return tmp_path, _archive(tmp_path / "radgraph-xl.tar.gz", encoder)


def test_unavailable_when_weights_are_missing(fake_env):
    tmp, _ = fake_env
    metric = RgerMetric(cache_dir=str(tmp / "cache"), hf_cache_dir=str(tmp / "hf" / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(MetricUnavailable) as err:
        metric.check()
    assert time.perf_counter() - t0 < 10  # no hub retries offline
    assert "radgraph-xl.tar.gz" in err.value.reason and "offline" in err.value.reason
    assert "hf download StanfordAIMI/RRG_scorers radgraph-xl.tar.gz" in err.value.remedy
    assert "SAERAD_RADGRAPH_MODEL" in err.value.remedy


def test_scoring_reports_rger_unavailable(fake_env):
    from bench.stages.score import score

    tmp, _ = fake_env
    result = score(["s1"], ["No effusion."], ["No effusion."], metrics=["rger"], n_bootstrap=0,
                   metric_options={"rger": {"cache_dir": str(tmp / "cache"), "hf_cache_dir": str(tmp / "hf")}})
    entry = result.metrics["rger"]
    assert entry["status"] == "unavailable" and "radgraph-xl.tar.gz" in entry["reason"]
    assert entry["metadata"]["columns"] == [{"key": "rger", "header": "RGER"}]


def test_unavailable_without_radgraph(tmp_path, monkeypatch):
    monkeypatch.delenv("SAERAD_RADGRAPH_PYTHON", raising=False)
    if importlib.util.find_spec("radgraph") is not None:
        pytest.skip("radgraph is installed in this interpreter")
    with pytest.raises(MetricUnavailable) as err:
        RgerMetric(cache_dir=str(tmp_path)).check()
    assert "radgraph" in err.value.reason and f"radgraph=={PINNED_VERSION}" in err.value.remedy
    monkeypatch.setenv("SAERAD_RADGRAPH_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(MetricUnavailable, match="not an executable"):
        RgerMetric(cache_dir=str(tmp_path)).check()


def test_unavailable_with_another_radgraph_version(tmp_path, monkeypatch):
    site = _fake_radgraph_package(tmp_path / "site", version="0.1.2")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("SAERAD_RADGRAPH_PYTHON", sys.executable)
    with pytest.raises(MetricUnavailable) as err:
        RgerMetric(cache_dir=str(tmp_path)).check()
    assert "0.1.2" in err.value.reason and f"radgraph=={PINNED_VERSION}" in err.value.remedy


def test_unavailable_when_model_path_is_wrong(fake_env):
    tmp, _ = fake_env
    with pytest.raises(MetricUnavailable, match="not found"):
        RgerMetric(model_path=str(tmp / "missing.tar.gz"), cache_dir=str(tmp / "cache")).check()


# -- the subprocess protocol, on the stand-in package -----------------------------------

def _write_table(tmp: Path, monkeypatch) -> tuple[list[str], list[str]]:
    table, refs, preds = {}, [], []
    for name, (pred, ref) in PAIRS.items():
        table[f"Prediction for {name}."], table[f"Reference for {name}."] = pred, ref
        refs.append(f"Reference for {name}.")
        preds.append(f"Prediction for {name}.")
    (tmp / "table.json").write_text(json.dumps(table))
    monkeypatch.setenv("FAKE_RADGRAPH_TABLE", str(tmp / "table.json"))
    return refs, preds


def _calls(tmp: Path) -> list[list[str]]:
    log = tmp / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_subprocess_annotator_end_to_end_with_cache(fake_env, monkeypatch):
    tmp, archive = fake_env
    refs, preds = _write_table(tmp, monkeypatch)
    options = dict(model_path=str(archive), cache_dir=str(tmp / "cache"), chunk=4)
    metric = RgerMetric(**options)
    metric.check()
    rows = metric.per_sample(refs, preds)
    np.testing.assert_array_equal(rows.to_numpy(), np.array([RADGRAPH_0_1_18[n] for n in PAIRS]))
    first = _calls(tmp)
    # 20 distinct texts in chunks of 4: five worker runs, each text sent once.
    assert sorted(t for call in first for t in call) == sorted(refs + preds)
    assert all(len(call) <= 4 for call in first)
    # The archive was unpacked once under the cache, keyed by its fingerprint.
    fp = model_fingerprint(archive, "radgraph-xl")
    assert (tmp / "cache" / "models" / fp / "radgraph-xl" / "config.json").is_file()

    # A new metric object (a later run) answers from the disk cache: no worker call at all.
    again = RgerMetric(**options).per_sample(refs, preds)
    pd.testing.assert_frame_equal(rows, again)
    assert _calls(tmp) == first

    # Other weights are another fingerprint: nothing is reused across models.
    (tmp / "other").mkdir()
    other = _archive(tmp / "other" / "radgraph-xl.tar.gz", tmp / "encoder", weights=b"other weights")
    assert model_fingerprint(other, "radgraph-xl") != fp
    RgerMetric(model_path=str(other), cache_dir=str(tmp / "cache"), chunk=64).per_sample(refs[:1], preds[:1])
    assert len(_calls(tmp)) == len(first) + 1


def test_subprocess_annotator_names_the_text_it_could_not_annotate(fake_env, monkeypatch):
    tmp, archive = fake_env
    refs, preds = _write_table(tmp, monkeypatch)
    annotator = RadGraphAnnotator(AnnotatorConfig(model_path=str(archive), cache_dir=str(tmp / "cache")))
    with pytest.raises(AnnotationError, match="Not in the table"):
        annotator.annotate(refs[:2] + ["Not in the table."])


def test_subprocess_annotator_reports_a_crash(fake_env, monkeypatch):
    tmp, archive = fake_env
    _write_table(tmp, monkeypatch)
    monkeypatch.setenv("FAKE_RADGRAPH_CRASH", "1")
    annotator = RadGraphAnnotator(AnnotatorConfig(model_path=str(archive), cache_dir=str(tmp / "cache")))
    with pytest.raises(AnnotationError, match="weights.th is corrupt"):
        annotator.annotate(["Reference for identical."])


def test_blank_texts_are_not_sent_to_the_model(fake_env, monkeypatch):
    tmp, archive = fake_env
    _write_table(tmp, monkeypatch)
    annotator = RadGraphAnnotator(AnnotatorConfig(model_path=str(archive), cache_dir=str(tmp / "cache")))
    out = annotator.annotate(["", "  \n", "Reference for identical.", "Reference for identical."])
    assert [len(a["entities"]) for a in out] == [0, 0, 2, 2]
    assert _calls(tmp) == [["Reference for identical."]]


# -- the real radgraph package, on a tiny random model (slow; needs a RadGraph environment) --

# Runs in the RadGraph environment: builds a radgraph-style archive around a 1-layer random
# BERT (local directory, so nothing is downloaded), with the DyGIE heads built by radgraph's
# own classes the way radgraph.RadGraph builds them, and saves their random weights.
_TINY_MODEL_BUILDER = textwrap.dedent('''
    import json, sys, tarfile
    from pathlib import Path
    import torch
    from dotmap import DotMap
    from transformers import BertConfig, BertModel
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    out = Path(sys.argv[1]); enc = out / "encoder"; model = out / "model"; voc = model / "vocabulary"
    for d in (enc, voc):
        d.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "1", "2", "no", "pleural", "effusion",
             "left", "mild", "edema", ".", "the", "heart", "is", "normal", "size", "lung", "lungs", "are", "clear"]
    (enc / "vocab.txt").write_text("\\n".join(words) + "\\n")
    (enc / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(enc)
    (voc / "non_padded_namespaces.txt").write_text("*tags\\n*labels\\n")
    (voc / "radgraph-xl__ner_labels.txt").write_text(
        "\\nObservation::definitely present\\nAnatomy::definitely present\\nObservation::definitely absent\\n")
    (voc / "radgraph-xl__relation_labels.txt").write_text("\\nlocated_at\\nmodify\\nsuggestive_of\\n")
    bert = {"model_name": str(enc), "max_length": 128}
    config = {"dataset_reader": {"max_span_width": 4, "token_indexers": {"bert": bert}},
              "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": bert}}, "initializer": {},
                        "module_initializer": {}, "feature_size": 8, "max_span_width": 4, "target_task": "relation",
                        "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.0},
                        "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
                        "modules": {"ner": {}, "relation": {"spans_per_word": 0.5},
                                    "coref": {"spans_per_word": 0.3, "max_antecedents": 10},
                                    "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                               "loss_weights": {"trigger": 1.0, "arguments": 1.0}}}}}
    (model / "config.json").write_text(json.dumps(config))
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(**bert)})
    kwargs = DotMap(config["model"])
    for name in ["type", "embedder", "initializer", "module_initializer"]:
        del kwargs[name]
    net = dygie.DyGIE(vocab=Vocabulary.from_files(str(voc), None, None), embedder=embedder, **kwargs)
    torch.save(net.state_dict(), model / "weights.th")
    with tarfile.open(out / "radgraph-xl.tar.gz", "w:gz") as tar:
        for f in model.iterdir():
            tar.add(f, arcname=f.name)
''')

# Runs in the RadGraph environment: the package's own compute_reward on annotation pairs.
_PACKAGE_REWARDS = textwrap.dedent('''
    import json, sys
    from radgraph.rewards import compute_reward
    pairs = json.load(open(sys.argv[1]))
    print(json.dumps([list(compute_reward(p, r, "all")) for p, r in pairs]))
''')


@pytest.mark.slow
def test_real_radgraph_package_on_a_tiny_random_model(tmp_path, monkeypatch):
    """Our worker driving radgraph 0.1.18 itself (random weights), and our rewards on what it returns
    against the package's compute_reward. About 30 s on two CPU cores."""
    import os
    import subprocess

    python = os.environ.get("SAERAD_RADGRAPH_PYTHON")
    if not python:
        pytest.skip("set SAERAD_RADGRAPH_PYTHON to an environment with radgraph==0.1.18 (docs/metrics-rger.md)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "build.py").write_text(_TINY_MODEL_BUILDER)
    subprocess.run([python, str(tmp_path / "build.py"), str(tmp_path / "tiny")], check=True, capture_output=True)
    metric = RgerMetric(model_path=str(tmp_path / "tiny" / "radgraph-xl.tar.gz"), cache_dir=str(tmp_path / "cache"),
                        device="cpu")
    metric.check()
    refs = ["No pleural effusion.", "Mild edema of the left lung.", "", "The heart is normal in size."]
    preds = ["No pleural effusion.", "Left pleural effusion and mild edema.", "Lungs are clear.", ""]
    rows = metric.per_sample(refs, preds)
    annotations = metric.annotator.annotate(refs + preds)
    assert all("entities" in a for a in annotations)
    pairs = [[p, r] for p, r in zip(annotations[len(refs):], annotations[:len(refs)])]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    done = subprocess.run([python, "-c", _PACKAGE_REWARDS, str(tmp_path / "pairs.json")], check=True,
                          capture_output=True, text=True)
    np.testing.assert_array_equal(rows.to_numpy(), np.array(json.loads(done.stdout.strip().splitlines()[-1])))
    assert rows["rger_partial"].iloc[2] == rows["rger_partial"].iloc[3] == 0.0  # empty sides
