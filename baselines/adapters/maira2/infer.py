"""MAIRA-2 findings through the ReXrank contract; runs in the `maira2` environment.

    python infer.py [--model DIR|HUB_ID] [--lateral auto|off|require] [--batch-size N] INPUT_JSON OUTPUT_JSON IMG_ROOT

As its model card does, through its own processor (`format_and_preprocess_reporting_input`):
the current frontal image, the current lateral image when the study has one, the prior
frontal image and the prior report when an earlier study with an image is given, and the
indication, technique and comparison sections (missing ones become the processor's "N/A");
findings without grounding (`get_grounding=False`), greedy, at most 300 new tokens; the
completion decoded without special tokens and turned into plain text by the processor's
`convert_output_to_plaintext_or_grounded_sequence`. MAIRA-2's prompt shows a prior report
only beside a prior frontal image, so without one no prior report is passed.

Prompt inputs and output parsing are the pure functions below (tested offline); torch,
PIL and transformers are imported only to load and run the model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rexrank_contract: standard library only
import rexrank_contract as contract  # noqa: E402
from rexrank_contract import AdapterError  # noqa: E402

CARD = contract.ModelCard(
    name="maira2", title="MAIRA-2", hub_id="microsoft/maira-2", weights_env="SAERAD_MAIRA2_PATH",
    licence_step=("microsoft/maira-2 is gated: log in on its Hugging Face page and accept its research licence "
                  "(Microsoft Research License Agreement)"),
    max_new_tokens=300)  # the model card's length for findings without grounding
FRONTAL_VIEWS = {"PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD", "FRONTAL"}
LATERAL_VIEWS = {"LATERAL", "LL", "RL", "LAT"}
LATERAL_MODES = ("auto", "off", "require")


# -- prompt inputs (pure) --------------------------------------------------------------------
def reporting_inputs(record_id: str, record: dict[str, Any], img_root: str | Path,
                     lateral: str = "auto") -> dict[str, Any]:
    """The keyword arguments of the processor's reporting input, images as paths (checked to
    exist). `lateral`: auto (use the study's lateral when it has one), off, or require (a study
    without one is an error). A lateral or prior image that is named but missing is an error:
    an input is never silently dropped."""
    if lateral not in LATERAL_MODES:
        raise AdapterError(f"--lateral {lateral!r}: choose one of {', '.join(LATERAL_MODES)}")
    paths = record.get("image_path") or []
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise AdapterError("no image_path")
    views = [str(v or "").upper() for v in record.get("views") or []]
    views += [""] * (len(paths) - len(views))
    if views[0] in LATERAL_VIEWS:
        raise AdapterError(f"its first image ({paths[0]}) is a {views[0]} view; the first must be the frontal image")
    frontal = _existing(img_root, paths[0], "frontal image")

    lateral_rel = record.get("lateral_image_path") or next(
        (p for p, v in zip(paths[1:], views[1:]) if v in LATERAL_VIEWS), None)
    current_lateral = None
    if lateral == "require" and lateral_rel is None:
        raise AdapterError("a lateral image was required (--lateral require) but the study has none")
    if lateral != "off" and lateral_rel is not None:
        current_lateral = _existing(img_root, lateral_rel, "lateral image")

    prior_frontal, prior_report = None, None
    priors = sorted((p for p in record.get("priors") or [] if isinstance(p, dict)),
                    key=lambda p: float(p.get("days_before") or 0.0))
    with_image = next((p for p in priors if p.get("image_path")), None)
    if with_image is not None:
        prior_frontal = _existing(img_root, with_image["image_path"], "prior frontal image")
        prior_report = _section(with_image.get("report")) or _section(with_image.get("text"))
    return {"current_frontal": frontal, "current_lateral": current_lateral, "prior_frontal": prior_frontal,
            "indication": _section(record.get("indication")), "technique": _section(record.get("technique")),
            "comparison": _section(record.get("comparison")), "prior_report": prior_report}


def _existing(img_root: str | Path, rel: Any, what: str) -> Path:
    if isinstance(rel, list):
        rel = rel[0] if rel else ""
    p = contract.image_file(img_root, str(rel))
    if not str(rel) or not p.is_file():
        raise AdapterError(f"{what} {p} does not exist")
    return p


def _section(text: Any) -> str | None:
    """A section's text, or None when absent or blank (the processor writes N/A for None)."""
    return text.strip() if isinstance(text, str) and text.strip() else None


# -- output parsing (pure) -------------------------------------------------------------------
def plain_findings(converted: Any) -> str:
    """Findings text from the processor's conversion: plain text as is; for a grounded
    sequence (phrases with boxes, which a findings-only prompt should not give), the phrases
    joined in order, boxes dropped."""
    if isinstance(converted, str):
        return converted.strip()
    if isinstance(converted, (list, tuple)):
        return " ".join(str(item[0]).strip() for item in converted if item and str(item[0]).strip())
    raise TypeError(f"unexpected processor output {type(converted).__name__}")


# -- the model -------------------------------------------------------------------------------
def load(args) -> Any:
    path = contract.weights_for(CARD, args)
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, torch_dtype=getattr(torch, args.dtype))
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return processor, model.eval().to(args.device), args


def generate(loaded: Any, prepared: list[dict[str, Any]]) -> list[str]:
    import torch
    from PIL import Image

    processor, model, args = loaded

    def images(kw: dict[str, Any]) -> dict[str, Any]:
        return {k: (Image.open(v) if isinstance(v, Path) else v) for k, v in kw.items()}

    if len(prepared) == 1:  # exactly the model card's call
        inputs = processor.format_and_preprocess_reporting_input(**images(prepared[0]), get_grounding=False,
                                                                 return_tensors="pt")
    else:  # the same prompts, tokenised together with left padding
        texts, stacked = [], []
        for kw in prepared:
            text, imgs = processor.format_reporting_input(**images(kw), get_grounding=False)
            texts.append(text)
            stacked.extend(imgs)
        processor.tokenizer.padding_side = "left"
        inputs = processor(text=texts, images=stacked, padding=True, return_tensors="pt")
    inputs = inputs.to(args.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, args.dtype))
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, use_cache=True, do_sample=False)
    prompt_len = inputs["input_ids"].shape[-1]
    texts_out = []
    for row in out:
        decoded = processor.decode(row[prompt_len:], skip_special_tokens=True).lstrip()
        texts_out.append(plain_findings(processor.convert_output_to_plaintext_or_grounded_sequence(decoded)))
    return texts_out


def body(argv: list[str] | None = None) -> int:
    p = contract.argument_parser(CARD)
    p.add_argument("--lateral", default="auto", choices=LATERAL_MODES)
    args = p.parse_args(argv)
    return contract.run(CARD.name, args, prepare=lambda i, r: reporting_inputs(i, r, args.img_root, args.lateral),
                        load=lambda: load(args), generate=generate)


if __name__ == "__main__":
    contract.main(CARD.name, body)
