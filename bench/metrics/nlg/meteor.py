"""METEOR 1.5 through the jar that ships inside pycocoevalcap, with our own client.

The jar is started once per batch as pycocoevalcap starts it
(`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`) and spoken to over its line
protocol:

* `SCORE ||| reference ||| hypothesis` answers one line of 23 sufficient statistics
  (`METEOR_STAT_FIELDS`);
* `EVAL ||| stats ||| stats ...` answers one score per stats line, then one score computed
  from the *summed* statistics (the corpus score pycocoevalcap reports).

We fetch each sample's statistics once and keep them as per-sample columns; the corpus score
of any multiset of samples (a bootstrap resample) is `meteor_from_stats(sum_meteor_stats(rows))`,
which accumulates and scores the statistics as the jar's EVAL does (one quirk: a sample whose
texts match perfectly adds no fragmentation chunk), with the jar's parameters (task "rank" parameters for English: alpha 0.85, beta 0.2,
gamma 0.6, delta 0.75; module weights exact 1.0, stem 0.6, synonym 0.8, paraphrase 0.6).
A test checks it against the jar's own corpus score.

Robustness: "|||" and line breaks would break the protocol, so they are removed from the text
first (normalisation already splits "|||" into "| | |" and turns line breaks and control
characters into spaces; `sanitise_for_meteor` is the protocol's own guard); every reply is
awaited with a timeout, and a dead or silent jar raises an error instead of hanging
(pycocoevalcap's wrapper blocks forever in that case). `restart()` replaces a jar whose state
is unknown after such an error; `MeteorMetric` uses it to fail one sample, not the batch.
"""

from __future__ import annotations

import logging
import math
import os
import select
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.errors import BenchError, MetricUnavailable

log = logging.getLogger(__name__)

MODULES = ("exact", "stem", "synonym", "paraphrase")
METEOR_STAT_FIELDS: tuple[str, ...] = (
    ("test_len", "ref_len", "test_function_words", "ref_function_words")
    + tuple(
        f"{module}_{field}"
        for module in MODULES
        for field in ("test_content", "ref_content", "test_function", "ref_function")
    )
    + ("chunks", "test_word_matches", "ref_word_matches")
)


@dataclass(frozen=True)
class MeteorParams:
    """METEOR 1.5's parameters for English, task "rank" (the jar's default)."""

    alpha: float = 0.85
    beta: float = 0.2
    gamma: float = 0.6
    delta: float = 0.75
    module_weights: tuple[float, ...] = (1.0, 0.6, 0.8, 0.6)


def _is_perfect_match(s: dict[str, float]) -> bool:
    """Every word of both texts matched, in one chunk: the jar's special case for identical texts."""
    test_total = sum(s[f"{m}_test_content"] + s[f"{m}_test_function"] for m in MODULES)
    ref_total = sum(s[f"{m}_ref_content"] + s[f"{m}_ref_function"] for m in MODULES)
    return test_total == s["test_len"] and ref_total == s["ref_len"] and s["chunks"] == 1


def meteor_from_stats(stats: Sequence[float], params: MeteorParams = MeteorParams()) -> float:
    """METEOR score from one stats vector: a sample's, or a corpus sum from `sum_meteor_stats`."""
    s = dict(zip(METEOR_STAT_FIELDS, (float(v) for v in stats), strict=True))
    d = params.delta
    test_weighted_len = d * (s["test_len"] - s["test_function_words"]) + (1.0 - d) * s["test_function_words"]
    ref_weighted_len = d * (s["ref_len"] - s["ref_function_words"]) + (1.0 - d) * s["ref_function_words"]
    test_matches = ref_matches = 0.0
    # Same summation order as the jar: content matches of all modules, then function matches.
    for module, weight in zip(MODULES, params.module_weights):
        test_matches += s[f"{module}_test_content"] * weight * d
    for module, weight in zip(MODULES, params.module_weights):
        ref_matches += s[f"{module}_ref_content"] * weight * d
    for module, weight in zip(MODULES, params.module_weights):
        test_matches += s[f"{module}_test_function"] * weight * (1.0 - d)
    for module, weight in zip(MODULES, params.module_weights):
        ref_matches += s[f"{module}_ref_function"] * weight * (1.0 - d)
    try:
        precision = test_matches / test_weighted_len
        recall = ref_matches / ref_weighted_len
        f_mean = 1.0 / (((1.0 - params.alpha) / precision) + (params.alpha / recall))
    except ZeroDivisionError:
        return 0.0  # the jar gets NaN or infinity here and reports 0
    if _is_perfect_match(s):
        fragmentation = 0.0
    else:
        word_matches = (s["test_word_matches"] + s["ref_word_matches"]) / 2
        if word_matches == 0:
            return 0.0
        fragmentation = s["chunks"] / word_matches
    score = f_mean * (1.0 - params.gamma * fragmentation**params.beta)
    return max(score, 0.0)


def sum_meteor_stats(rows: Sequence[Sequence[float]]) -> list[float]:
    """Corpus statistics as the jar's EVAL accumulates them.

    All fields are summed, except that a perfectly matched sample (identical texts: all words
    matched in one chunk) contributes no chunk; otherwise identical pairs would add
    fragmentation to the corpus score.
    """
    totals = [0.0] * len(METEOR_STAT_FIELDS)
    chunks = METEOR_STAT_FIELDS.index("chunks")
    for row in rows:
        perfect = _is_perfect_match(dict(zip(METEOR_STAT_FIELDS, row, strict=True)))
        for i, value in enumerate(row):
            if not (i == chunks and perfect):
                totals[i] += float(value)
    return totals


def sanitise_for_meteor(text: str) -> str:
    """Remove what breaks the line protocol ('|||', line breaks) and squeeze spaces."""
    return " ".join(text.replace("|||", " ").split())


def find_meteor_jar() -> Path:
    """The meteor-1.5.jar bundled with the installed pycocoevalcap."""
    try:
        import pycocoevalcap
    except ImportError as exc:  # pragma: no cover - pycocoevalcap is a hard dependency
        raise MetricUnavailable("METEOR 1.5 needs the pycocoevalcap package", "pip install pycocoevalcap==1.2") from exc
    for root in pycocoevalcap.__path__:
        jar = Path(root) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    raise MetricUnavailable("meteor-1.5.jar is missing from pycocoevalcap", "reinstall pycocoevalcap==1.2")


class MeteorProcess:
    """One long-lived METEOR 1.5 jar in -stdio mode. Use as a context manager."""

    def __init__(self, jar: Path | None = None, java: str = "java", memory: str = "2G", timeout_s: float = 120.0):
        self.jar = jar or find_meteor_jar()
        self.java = java
        self.memory = memory
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._buffer = b""

    def __enter__(self) -> "MeteorProcess":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Start the jar (it then takes seconds to load its tables before the first answer)."""
        # pycocoevalcap's command, plus a fixed locale so that the jar parses "0.5" the same
        # way on every machine (its EVAL reads numbers with a locale-dependent scanner).
        cmd = [
            self.java, "-Duser.language=en", "-Duser.country=US", "-jar", f"-Xmx{self.memory}",
            self.jar.name, "-", "-", "-stdio", "-l", "en", "-norm",
        ]
        log.debug("starting %s in %s", cmd, self.jar.parent)
        self._buffer = b""
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=self.jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise MetricUnavailable("METEOR 1.5 needs a Java runtime", "install one, e.g. apt-get install default-jre-headless") from exc

    def stop(self, kill: bool = False) -> None:
        """End the jar: politely (close its input) or, for a jar in an unknown state, kill it."""
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is None:
            return
        if not kill:
            try:
                proc.stdin.close()
                proc.wait(timeout=10)
                return
            except (OSError, subprocess.TimeoutExpired):
                pass
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def restart(self) -> None:
        """A fresh jar after a failed call.

        A jar that timed out may still answer later, and one that choked on a line may have
        answered partly: either would shift every later answer by one, so the old process is
        killed and its unread output dropped rather than reused.
        """
        self.stop(kill=True)
        self.start()

    def _send(self, line: str) -> None:
        assert self._proc is not None, "use MeteorProcess as a context manager"
        try:
            # errors="replace": a lone surrogate cannot be encoded, and must not raise here.
            self._proc.stdin.write(line.encode("utf-8", errors="replace") + b"\n")
            self._proc.stdin.flush()
        except OSError as exc:  # BrokenPipeError, or a pipe closed by a kill
            raise BenchError(f"the METEOR jar exited (code {self._proc.poll()}); is the Java runtime working?") from exc

    def _read_line(self) -> str:
        # Our own buffered reader over the raw pipe, so that a silent jar times out.
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], self.timeout_s)
            if not ready:
                raise BenchError(f"the METEOR jar gave no answer within {self.timeout_s:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BenchError(f"the METEOR jar exited (code {self._proc.poll()}) before answering")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", errors="replace").strip()

    def stats(self, reference: str, prediction: str) -> list[float]:
        """The 23 statistics of one prediction against one reference (texts are sanitised)."""
        self._send(f"SCORE ||| {sanitise_for_meteor(reference)} ||| {sanitise_for_meteor(prediction)}")
        reply = self._read_line()
        values = reply.split()
        if len(values) != len(METEOR_STAT_FIELDS):
            raise BenchError(f"unexpected reply from the METEOR jar to SCORE: {reply[:200]!r}")
        try:
            parsed = [float(v) for v in values]
        except ValueError as exc:
            raise BenchError(f"unparseable reply from the METEOR jar to SCORE: {reply[:200]!r}") from exc
        if not all(math.isfinite(v) and v >= 0 for v in parsed):
            raise BenchError(f"implausible statistics from the METEOR jar: {reply[:200]!r}")
        return parsed

    def evaluate(self, stats: Sequence[Sequence[float]]) -> tuple[list[float], float]:
        """The jar's per-sample scores and its corpus score for a list of stats vectors."""
        if not stats:
            raise BenchError("METEOR EVAL needs at least one sample")
        self._send("EVAL ||| " + " ||| ".join(" ".join(repr(float(v)) for v in row) for row in stats))
        per_sample = [float(self._read_line()) for _ in stats]
        return per_sample, float(self._read_line())


def java_available(java: str = "java") -> bool:
    return shutil.which(java) is not None
