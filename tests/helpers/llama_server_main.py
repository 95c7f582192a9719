"""`python tests/helpers/llama_server_main.py ARGS...`: llama_cpp.server with weight repacking
off, as the in-process GGUF backend loads models (bench.llm.local_gguf.disable_weight_repacking
says why)."""

import runpy
import sys

from bench.llm.local_gguf import disable_weight_repacking

if __name__ == "__main__":
    disable_weight_repacking()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
