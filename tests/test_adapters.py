"""The CheXagent and MAIRA-2 adapters offline: prompt construction and output parsing as pure
functions, the contract loop (check first, resume, batches, atomic writes), and the scripts
run as real processes up to where weights or a GPU are needed, which are one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from baselines.adapters.chexagent import infer as chexagent
from baselines.adapters.maira2 import infer as maira2

ADAPTERS = Path(chexagent.__file__).resolve().parent.parent
AdapterError = chexagent.AdapterError  # the scripts' own (they import the contract module by path)
contract = chexagent.contract


@pytest.fixture
def study(tmp_path) -> Path:
    for rel in ["f/front.jpg", "f/side.jpg", "f/old.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"jpeg")
    return tmp_path


# -- CheXagent ---------------------------------------------------------------------------------
def test_chexagent_prompt_has_the_indication_and_at_most_two_images_frontal_first(study):
    rec = {"image_path": ["f/front.jpg", "f/side.jpg", "f/old.jpg"], "indication": "  cough, fever  "}
    items = chexagent.list_format("d1", rec, study)
    assert items == [{"image": str(study / "f/front.jpg")}, {"image": str(study / "f/side.jpg")},
                     {"text": 'Given the indication: "cough, fever", write a structured findings section for the CXR.'}]
    one = chexagent.list_format("d1", {"image_path": "f/front.jpg"}, study)
    assert one[0] == {"image": str(study / "f/front.jpg")} and 'indication: ""' in one[1]["text"]
    conv = chexagent.conversation("QUERY")
    assert conv == [{"from": "system", "value": "You are a helpful assistant."}, {"from": "human", "value": "QUERY"}]


def test_chexagent_refuses_a_record_without_its_image(study):
    with pytest.raises(AdapterError, match=r"image .*f/missing.jpg does not exist"):
        chexagent.list_format("d1", {"image_path": ["f/missing.jpg"]}, study)
    with pytest.raises(AdapterError, match="no image_path"):
        chexagent.list_format("d1", {"indication": "x"}, study)


def test_left_padding_and_completion_parsing():
    ids, mask = chexagent.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids == [[5, 6, 7], [0, 0, 8]] and mask == [[1, 1, 1], [0, 0, 1]]
    # after the (padded) prompt, up to the first end-of-sequence token
    assert chexagent.completion([0, 0, 8, 11, 12, 2, 0, 0], prompt_len=3, stop_ids={2}) == [11, 12]
    # stopped by the length limit: the last token is real and kept
    assert chexagent.completion([5, 6, 7, 11, 12, 13], prompt_len=3, stop_ids={2}) == [11, 12, 13]
    assert chexagent.clean("  No acute findings.\n") == "No acute findings."
    assert chexagent.stop_ids(2, [2, 7], None) == {2, 7}


# -- MAIRA-2 -----------------------------------------------------------------------------------
def test_maira2_inputs_frontal_only(study):
    kw = maira2.reporting_inputs("d1", {"image_path": ["f/front.jpg"], "views": ["PA"], "indication": "cough",
                                        "priors": [{"text": "old", "days_before": 3}]}, study)
    assert kw == {"current_frontal": study / "f/front.jpg", "current_lateral": None, "prior_frontal": None,
                  "indication": "cough", "technique": None, "comparison": None,
                  # MAIRA-2's prompt shows a prior report only beside a prior frontal image
                  "prior_report": None}


def test_maira2_inputs_with_lateral_prior_image_and_sections(study):
    rec = {"image_path": ["f/front.jpg", "f/side.jpg"], "views": ["AP", "LATERAL"], "indication": " ",
           "technique": "PA and lateral views.", "comparison": "Prior from 2150.",
           "priors": [{"text": "older", "report": "", "days_before": 400, "image_path": "f/front.jpg"},
                      {"text": "newer findings", "report": "FINDINGS: newer findings", "days_before": 12.5,
                       "image_path": "f/old.jpg"}]}
    kw = maira2.reporting_inputs("d1", rec, study)
    assert kw["current_lateral"] == study / "f/side.jpg"
    assert kw["prior_frontal"] == study / "f/old.jpg" and kw["prior_report"] == "FINDINGS: newer findings"
    assert kw["indication"] is None and kw["technique"] == "PA and lateral views."
    assert kw["comparison"] == "Prior from 2150."
    assert maira2.reporting_inputs("d1", rec, study, lateral="off")["current_lateral"] is None


def test_maira2_lateral_asked_for_but_absent_or_missing_is_an_error(study):
    no_lateral = {"image_path": ["f/front.jpg"], "views": ["PA"]}
    with pytest.raises(AdapterError, match="lateral image was required .* the study has none"):
        maira2.reporting_inputs("d1", no_lateral, study, lateral="require")
    named_but_gone = {"image_path": ["f/front.jpg", "f/gone.jpg"], "views": ["PA", "LL"]}
    with pytest.raises(AdapterError, match=r"lateral image .*f/gone.jpg does not exist"):
        maira2.reporting_inputs("d1", named_but_gone, study)
    with pytest.raises(AdapterError, match="first must be the frontal image"):
        maira2.reporting_inputs("d1", {"image_path": ["f/side.jpg"], "views": ["LATERAL"]}, study)
    with pytest.raises(AdapterError, match="prior frontal image .*nowhere.jpg does not exist"):
        maira2.reporting_inputs("d1", {"image_path": ["f/front.jpg"],
                                       "priors": [{"text": "x", "days_before": 1, "image_path": "nowhere.jpg"}]}, study)
    with pytest.raises(AdapterError, match="--lateral 'sometimes'"):
        maira2.reporting_inputs("d1", no_lateral, study, lateral="sometimes")


def test_maira2_output_to_plain_findings():
    assert maira2.plain_findings("  Lungs are clear. ") == "Lungs are clear."
    grounded = [("Small left effusion.", [(0.1, 0.5, 0.3, 0.9)]), ("No pneumothorax.", None), ("", None)]
    assert maira2.plain_findings(grounded) == "Small left effusion. No pneumothorax."


# -- the contract loop ---------------------------------------------------------------------------
def _args(tmp_path, batch_size=2):
    import argparse

    return argparse.Namespace(input_json=str(tmp_path / "in.json"), output_json=str(tmp_path / "out.json"),
                              img_root=str(tmp_path), batch_size=batch_size)


def test_contract_checks_every_record_before_loading_resumes_and_writes_after_each_batch(tmp_path, capsys):
    (tmp_path / "in.json").write_text(json.dumps({f"d{i}": {"n": i} for i in range(5)}))
    (tmp_path / "out.json").write_text(json.dumps({"d0": "kept from before"}))
    seen_batches, snapshots = [], []

    def generate(model, batch):
        seen_batches.append([r["n"] for r in batch])
        snapshots.append(sorted(json.loads((tmp_path / "out.json").read_text())))
        return [f"{model} report {r['n']}" for r in batch]

    rc = contract.run("t", _args(tmp_path), prepare=lambda i, r: r, load=lambda: "M", generate=generate)
    assert rc == 0 and seen_batches == [[1, 2], [3, 4]]
    assert snapshots == [["d0"], ["d0", "d1", "d2"]]  # written after every batch
    out = json.loads((tmp_path / "out.json").read_text())
    assert out == {"d0": "kept from before", **{f"d{i}": f"M report {i}" for i in range(1, 5)}}
    assert "5 samples, 1 already in" in capsys.readouterr().err

    # bad input: reported by id before anything is loaded
    (tmp_path / "out.json").unlink()

    def prepare(i, r):
        if r["n"] in (1, 3):
            raise AdapterError("no image")
        return r

    def never():
        raise AssertionError("the model must not be loaded")

    with pytest.raises(AdapterError, match="2 input records cannot be used: d1: no image; d3: no image"):
        contract.run("t", _args(tmp_path), prepare=prepare, load=never, generate=generate)
    assert not (tmp_path / "out.json").exists()


# -- the scripts as processes ----------------------------------------------------------------------
def _script(name, tmp_path, records, *args, out=None, env=None):
    (tmp_path / "in.json").write_text(json.dumps(records))
    if out is not None:
        (tmp_path / "out.json").write_text(json.dumps(out))
    e = {k: v for k, v in os.environ.items() if k not in ("SAERAD_CHEXAGENT_PATH", "SAERAD_MAIRA2_PATH")}
    e.update({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, str(ADAPTERS / name / "infer.py"), *args, str(tmp_path / "in.json"),
                           str(tmp_path / "out.json"), str(tmp_path)], capture_output=True, text=True, env=e,
                          timeout=120)


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def test_missing_weights_is_one_line_naming_model_licence_and_where_to_put_them(study):
    rec = {"d1": {"image_path": ["f/front.jpg"], "indication": "cough"}}
    line = _error_line(_script("chexagent", study, rec, "--device", "cpu"))
    assert line.startswith("error: chexagent: weights of StanfordAIMI/CheXagent-2-3b are not in the Hugging Face cache")
    assert "CC-BY-NC-4.0" in line and "hf auth login" in line and "SAERAD_CHEXAGENT_PATH=/path/to/weights" in line
    line = _error_line(_script("maira2", study, rec, "--device", "cpu"))
    assert line.startswith("error: maira2: weights of microsoft/maira-2 are not in the Hugging Face cache")
    assert "accept its research licence" in line and "SAERAD_MAIRA2_PATH=/path/to/weights" in line
    line = _error_line(_script("maira2", study, rec, "--device", "cpu", "--model", str(study / "nowhere")))
    assert "weights directory" in line and "does not exist" in line
    # a directory that is not a checkpoint
    line = _error_line(_script("chexagent", study, rec, "--device", "cpu", env={"SAERAD_CHEXAGENT_PATH": str(study / "f")}))
    assert "has no config.json: not a CheXagent checkpoint" in line


def test_no_gpu_is_one_line(study):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU message cannot be provoked")
    line = _error_line(_script("chexagent", study, {"d1": {"image_path": ["f/front.jpg"]}}, "--device", "cuda"))
    assert line.startswith("error: chexagent: no CUDA GPU here") and "--opt chexagent.device=cpu" in line


def test_bad_input_fails_before_the_model_and_a_finished_output_needs_no_weights(study):
    rec = {"d1": {"image_path": ["f/front.jpg"], "views": ["PA"]}, "d2": {"image_path": ["f/gone.jpg"]}}
    line = _error_line(_script("maira2", study, rec, "--device", "cpu", "--lateral", "require"))
    assert "2 input records cannot be used: d1: a lateral image was required" in line and "d2: frontal image" in line
    assert not (study / "out.json").exists()
    # every id already generated: nothing to load, nothing to fail on
    done = _script("chexagent", study, {"d1": {"image_path": ["f/front.jpg"]}}, "--device", "cuda",
                   out={"d1": "Lungs clear."})
    assert done.returncode == 0, done.stderr
    assert "1 already in" in done.stderr


def test_the_systems_pass_what_their_scripts_expect():
    """The harness-side systems and the scripts name the same model, weights variable and length."""
    from baselines.adapters.systems import CheXagentSystem, Maira2System

    for system, script in [(CheXagentSystem, chexagent), (Maira2System, maira2)]:
        card = script.CARD
        assert (system.name, system.hub_id, system.weights_env) == (card.name, card.hub_id, card.weights_env)
        assert system.Options.model_fields["max_new_tokens"].default == card.max_new_tokens
        assert system.requirements == ADAPTERS / card.name / "requirements.txt" and system.requirements.is_file()
        parsed = script.contract.argument_parser(card).parse_args(["i", "o", "r", "--dtype", "float32"])
        assert parsed.dtype in system.Options.model_fields["dtype"].annotation.__args__


def test_hub_failures_are_said_in_a_few_words():
    from huggingface_hub.errors import LocalEntryNotFoundError

    long = LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub and we cannot find "
                                   "the appropriate snapshot folder. Please check your internet connection and ...")
    assert contract._hub_reason(long) == "the hub cannot be reached and they are not in the Hugging Face cache"
    assert contract._hub_reason(ValueError("bad revision 'x'. More text.\nline 2")) == "ValueError: bad revision 'x'"
