"""RadFact (Bannur et al. 2024): LLM-judged logical precision, recall and F1 of generated reports.

radfact.phrases     report -> phrases (LLM, few-shot, JSON)
radfact.entailment  faithful (one call per phrase) and batched (one call per direction) verdicts
radfact.examples    our few-shot files (radfact/prompts/) and a loader for microsoft/RadFact's
radfact.scores      per-study fractions, NaN-aware means, F1, sufficient statistics
radfact.evaluate    the pipeline over a set of studies
radfact.io          input (JSONL / RadFact test-example JSON) and per-study output
radfact.metric      the "radfact" bench metric
radfact.cli         `bench radfact --predictions FILE --judge SPEC --model NAME`
See docs/radfact.md.
"""
