from pathlib import Path

import pytest

from baselines.constant import ConstantSystem
from bench.context import RunContext
from bench.data.records import Dataset, Prior, Sample
from bench.errors import BenchError, UnknownNameError
from bench.systems.registry import available_systems, get_system


def sample(i: int, findings: str, split: str = "test", root: Path = Path("/data")) -> Sample:
    return Sample(id=f"d{i}", dicom_id=f"d{i}", study_id=f"s{i}", subject_id=f"p{i}", split=split, view="PA",
                  image_path=root / f"files/p1/p{i}/s{i}/d{i}.jpg", findings=findings, indication="dyspnea",
                  priors=(Prior("s0", "old text", 3.5),))


class FakeCtx(RunContext):
    """A context whose datasets are given, not read from disk."""

    def __init__(self, tmp: Path, datasets: dict[str, Dataset]):
        super().__init__(data_root=tmp, dataset_name="test", cache_dir=tmp / "cache", work_dir=tmp / "run")
        self._datasets.update(datasets)


def test_registry_lists_builtins_and_rejects_unknown():
    names = set(available_systems())
    assert {"nn", "reference", "constant", "external"} <= names
    with pytest.raises(UnknownNameError) as exc:
        get_system("nope")
    assert "choose one of" in str(exc.value) and "nn" in str(exc.value)


def test_unknown_option_is_an_error_listing_the_valid_ones():
    with pytest.raises(BenchError, match="system reference: unknown option.*temperature.*takes no options"):
        get_system("reference", {"temperature": "0"})
    with pytest.raises(BenchError, match="unknown option.*taux.*valid options: .*tau"):
        get_system("saerad", {"taux": "0.1"})
    with pytest.raises(BenchError, match="tau='high'.*valid number"):
        get_system("saerad", {"tau": "high"})


def test_queries_carry_no_findings():
    q = sample(1, "Lungs clear.").query()
    assert not hasattr(q, "findings") and q.indication == "dyspnea" and q.priors[0].text == "old text"


def test_reference_reads_test_findings_only_because_it_declares_it(tmp_path):
    s = sample(1, "Lungs clear.")
    ctx = FakeCtx(tmp_path, {"test": Dataset("t", tmp_path, "test", "image", [s])})
    ctx.eval_split = "test"
    with pytest.raises(BenchError, match="reads_test_findings"):
        ctx.test_findings(s.id)
    with pytest.raises(BenchError, match="may not read the test split"):
        ctx.dataset("test")
    ctx.allow_test_findings = get_system("reference").reads_test_findings
    preds = list(get_system("reference").generate([s.query()], ctx))
    assert preds[0].findings == "Lungs clear."
    assert not get_system("constant").reads_test_findings and not get_system("nn").reads_test_findings


def test_constant_picks_the_most_common_findings_ignoring_case_and_spacing(tmp_path):
    train = [sample(1, "Lungs clear."), sample(2, "lungs  clear."), sample(3, "Effusion."),
             sample(4, "Lungs clear."), sample(5, "Effusion.")]
    ctx = FakeCtx(tmp_path, {"train": Dataset("t", tmp_path, "train", "image", train)})
    sys_ = ConstantSystem()
    sys_.fit(ctx)
    assert sys_.text == "Lungs clear." and sys_.support == 3
    out = list(sys_.generate([sample(9, "Pneumothorax.").query()], ctx))
    assert out[0].findings == "Lungs clear." and "reference" not in out[0].to_json()


def test_constant_tie_goes_to_first_seen(tmp_path):
    train = [sample(1, "B."), sample(2, "A."), sample(3, "A."), sample(4, "B.")]
    s = ConstantSystem()
    s.fit(FakeCtx(tmp_path, {"train": Dataset("t", tmp_path, "train", "image", train)}))
    assert s.text == "B."


# The external runner's tests are in test_external_runner.py.


def test_a_device_that_is_not_here_is_a_one_line_error():
    import torch

    from bench.devices import check_device

    assert check_device("cpu") == "cpu"
    with pytest.raises(BenchError, match="not a device name"):
        check_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="cuda.*asked for, but .*use --device cpu"):
            check_device("cuda")
        with pytest.raises(BenchError, match="cuda"):
            get_system("saerad", {"device": "cuda"})
