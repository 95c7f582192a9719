"""MAIRA-2 adapter: infer.py runs in the `maira2` environment (requirements.txt)."""
