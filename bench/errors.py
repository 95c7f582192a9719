"""Errors the harness raises for users. Each message says what is wrong and how to fix it."""


class BenchError(Exception):
    """A user-facing error: the CLI prints its message without a traceback."""


class DataError(BenchError):
    """Missing or malformed dataset files."""


class UnknownNameError(BenchError):
    """An unknown system, metric or architecture; the message lists the choices."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.choices)}")


class ModelUnavailableError(BenchError):
    """Model weights that cannot be found locally or downloaded."""


class MetricUnavailable(BenchError):
    """A metric that cannot run here. Reported in tables as unavailable with this reason."""

    def __init__(self, reason: str, remedy: str = ""):
        self.reason, self.remedy = reason, remedy
        super().__init__(reason + (f" ({remedy})" if remedy else ""))
