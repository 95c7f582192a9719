"""The stages of a run, each a command that reads files and writes files:

    generate    dataset -> system -> <run>/predictions.jsonl + manifest.json
    score       predictions file + references from the dataset -> scores.parquet + aggregate.json
    leaderboard aggregate.json of several runs -> tables
    compare     scores.parquet of two runs -> paired tests

`bench run` only sequences generate, score and leaderboard.
"""
