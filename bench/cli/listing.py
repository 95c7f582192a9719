"""`bench systems` and `bench metrics`: what is registered, with options, and what can run here."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from bench.options import describe_options


def register(app: typer.Typer) -> None:
    app.command("systems", help="List the registered systems (built-in and plug-ins) and their options.")(systems)
    app.command("metrics", help="List the registered metrics, their columns, and whether each can run here.")(metrics)


def _options_text(model) -> str:
    return ", ".join(f"{n}={d}" for n, _, d in describe_options(model)) or "-"


def systems() -> None:
    from bench.systems.registry import available_systems

    t = Table("system", "needs train", "description", "options (default)")
    for name, cls in sorted(available_systems().items()):
        t.add_row(name, "yes" if cls.needs_train else "", cls.description, _options_text(cls.Options))
    Console().print(t)


def metrics() -> None:
    from bench.errors import MetricUnavailable
    from bench.metrics.registry import metric_class, metric_names

    t = Table("metric", "columns", "higher is better", "version", "status")
    for name in metric_names():
        cls = metric_class(name)
        m = cls.from_options()
        try:
            m.check()
            status = "[green]available[/green]"
        except MetricUnavailable as exc:
            status = f"[yellow]unavailable[/yellow]: {exc}"
        cols = ", ".join(f"{c['header']}" for c in cls.metadata()["columns"])
        t.add_row(name, cols, "yes" if cls.higher_is_better else "no", cls.version, status)
    Console().print(t)
