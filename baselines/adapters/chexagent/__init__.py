"""CheXagent-2-3b adapter: infer.py runs in the `chexagent` environment (requirements.txt)."""
