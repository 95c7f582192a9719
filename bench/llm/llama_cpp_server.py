"""`python -m bench.llm.llama_cpp_server ARGS...`: llama-cpp-python's OpenAI-compatible server
with CPU weight repacking off, as the in-process GGUF backend loads models
(bench.llm.local_gguf.disable_weight_repacking says why). The arguments are the server's own."""

import runpy
import sys

from bench.llm.local_gguf import disable_weight_repacking

if __name__ == "__main__":
    disable_weight_repacking()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
