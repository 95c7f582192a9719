"""Our own RadFact prompt text and few-shot examples, stored as files (see radfact/examples.py)."""
