"""CheXagent-2-3b findings through the ReXrank contract; runs in the `chexagent` environment.

    python infer.py [--model DIR|HUB_ID] [--device cuda] [--batch-size N] INPUT_JSON OUTPUT_JSON IMG_ROOT

As the model card and the CheXbench findings-generation script do: up to two images of the
study (ours: the frontal image first), the findings instruction with the study's indication,
the model's chat template with its system turn, greedy decoding (one beam) with at most 512
new tokens, the completion decoded up to its end-of-sequence token. Batches are left-padded.

Prompt construction and output parsing are the pure functions below (tested offline); torch
and transformers are imported only to load and run the model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rexrank_contract: standard library only
import rexrank_contract as contract  # noqa: E402
from rexrank_contract import AdapterError  # noqa: E402

CARD = contract.ModelCard(
    name="chexagent", title="CheXagent", hub_id="StanfordAIMI/CheXagent-2-3b", weights_env="SAERAD_CHEXAGENT_PATH",
    licence_step=("StanfordAIMI/CheXagent-2-3b is released under CC-BY-NC-4.0 (research, non-commercial): read and "
                  "accept its terms on its Hugging Face page"),
    max_new_tokens=512)  # the model card's generation length
MAX_IMAGES = 2  # CheXbench's findings generation gives the model at most two images of a study
SYSTEM_TURN = "You are a helpful assistant."


# -- prompt construction (pure) --------------------------------------------------------------
def findings_instruction(indication: str) -> str:
    """The model's findings-generation instruction, with the indication as its demo and
    benchmark pass it (an empty indication stays empty, as there)."""
    return f'Given the indication: "{indication.strip()}", write a structured findings section for the CXR.'


def list_format(record_id: str, record: dict[str, Any], img_root: str | Path) -> list[dict[str, str]]:
    """The items its tokenizer's `from_list_format` takes: image paths, then the instruction."""
    paths = record.get("image_path") or []
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise AdapterError("no image_path")
    images = []
    for rel in paths[:MAX_IMAGES]:
        p = contract.image_file(img_root, rel)
        if not p.is_file():
            raise AdapterError(f"image {p} does not exist")
        images.append({"image": str(p)})
    return [*images, {"text": findings_instruction(str(record.get("indication") or ""))}]


def conversation(query: str) -> list[dict[str, str]]:
    """The chat its template renders: the system turn, then the query as the human turn."""
    return [{"from": "system", "value": SYSTEM_TURN}, {"from": "human", "value": query}]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids padded on the left to one length (a decoder continues from the right end),
    and their attention masks."""
    width = max(len(s) for s in seqs)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
    return ids, mask


# -- output parsing (pure) -------------------------------------------------------------------
def completion(row: Sequence[int], prompt_len: int, stop_ids: set[int]) -> list[int]:
    """The generated tokens of one output row: after the prompt, up to (not including) the
    first end-of-sequence token. (The model card drops the last token unconditionally, which
    cuts a real token when generation stopped at the length limit.)"""
    out = []
    for t in list(row)[prompt_len:]:
        if t in stop_ids:
            break
        out.append(int(t))
    return out


def stop_ids(*given) -> set[int]:
    """End-of-sequence ids from the tokenizer and the generation config (an id or a list of ids)."""
    out: set[int] = set()
    for g in given:
        out.update(x for x in (g if isinstance(g, (list, tuple)) else [g]) if isinstance(x, int))
    return out


def clean(text: str) -> str:
    return text.strip()


# -- the model -------------------------------------------------------------------------------
def load(args) -> Any:
    path = contract.weights_for(CARD, args)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, torch_dtype=getattr(torch, args.dtype))
    model = model.to(args.device).eval()
    return tok, model, args


def generate(loaded: Any, items: list[list[dict[str, str]]]) -> list[str]:
    import torch

    tok, model, args = loaded
    prompts = [tok.apply_chat_template(conversation(tok.from_list_format(it)), add_generation_prompt=True)
               for it in items]
    stop = stop_ids(tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None))
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(stop))
    ids, mask = left_pad(prompts, pad)
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor(ids, device=args.device),
                             attention_mask=torch.tensor(mask, device=args.device),
                             do_sample=False, num_beams=1, temperature=1.0, top_p=1.0, use_cache=True,
                             max_new_tokens=args.max_new_tokens, pad_token_id=pad)
    width = len(ids[0])
    return [clean(tok.decode(completion(row.tolist(), width, stop))) for row in out]


def body(argv: list[str] | None = None) -> int:
    p = contract.argument_parser(CARD)
    args = p.parse_args(argv)
    return contract.run(CARD.name, args, prepare=lambda i, r: list_format(i, r, args.img_root),
                        load=lambda: load(args), generate=generate)


if __name__ == "__main__":
    contract.main(CARD.name, body)
