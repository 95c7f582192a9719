"""LLMClient: cache, concurrency limit and retries around one backend.

    client = LLMClient(backend, ResponseCache("runs/llm-cache.sqlite"), max_concurrency=8)
    answers = client.chat_many([ChatRequest(messages=[{"role": "user", "content": "Hi"}])])
    manifest["llm"] = client.manifest()

Retries: timeouts, connection errors, 429 and 5xx (and bodies that are not a readable
completion) are retried up to `max_retries` times with exponential backoff and jitter;
a 429's Retry-After is honoured instead of the backoff. Other 4xx answers are final.
The semaphore is held only while an attempt is in flight, never while backing off.

A request that fails for good is never written to the cache (only answers are), so a
run against a server that was down asks again once it is up. An empty completion is a
failed attempt (retried, never cached); a flagged refusal is final and never cached.
`probe()` asks the backend, before any real request, whether it can answer at all.

Bounds, so that a judge that hangs or dies cannot stall a run for hours:
- `request_deadline`: all attempts of one request together, from its first attempt
  (default: timeout x (max_retries + 1), at most 10 minutes, never below timeout);
- `run_deadline`: from the client's first request (default: none); once passed, requests
  not answered from the cache fail at once;
- `breaker_failures`: after that many connection failures in a row (default 8), across
  requests, the endpoint is taken for dead and later attempts fail at once.
Each of these is a failure (`LLMDeadlineExceeded`, `LLMEndpointDown`), never an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import replace
from typing import Any, Iterator, Sequence

from bench.errors import BenchError
from bench.llm.base import (ChatRequest, ChatResponse, LLMBackend, LLMDeadlineExceeded, LLMEndpointDown, LLMError,
                            LLMRefusal, LLMRequestError, LLMTransientError, Usage)
from bench.llm.cache import CacheCorruptError, ResponseCache, cache_key
from bench.llm.jsonx import parses_as_json

log = logging.getLogger(__name__)

# The default request deadline is timeout x (max_retries + 1) capped here: with the default
# 120 s x 5 attempts that is exactly 10 minutes, beyond which a judge is not worth waiting on.
REQUEST_DEADLINE_CAP_S = 600.0
# Connection failures in a row (refused, reset, DNS) after which the endpoint counts as dead.
# Eight is two requests' worth of retries at the default max_retries: a blip does not trip
# it, a server that is gone does within seconds.
BREAKER_FAILURES = 8
# finish_reason values that mean the model declined rather than answered.
REFUSAL_FINISH_REASONS = ("content_filter", "refusal")


def default_request_deadline(timeout: float, max_retries: int) -> float:
    return max(timeout, min(timeout * (max_retries + 1), REQUEST_DEADLINE_CAP_S))


class LLMClient:
    def __init__(self, backend: LLMBackend, cache: ResponseCache | None = None, *, max_concurrency: int = 8,
                 max_retries: int = 4, timeout: float = 120.0, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, max_retry_after_s: float = 300.0,
                 jitter_seed: int | None = None, request_deadline: float | None = None,
                 run_deadline: float | None = None, breaker_failures: int | None = BREAKER_FAILURES):
        if max_concurrency < 1:
            raise BenchError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise BenchError(f"max_retries must be 0 or more, got {max_retries}")
        if timeout <= 0:
            raise BenchError(f"timeout must be positive, got {timeout}")
        if request_deadline is not None and request_deadline <= 0:
            raise BenchError(f"request_deadline must be positive (or None for the default), got {request_deadline}")
        if run_deadline is not None and run_deadline <= 0:
            raise BenchError(f"run_deadline must be positive (or None for no limit), got {run_deadline}")
        if breaker_failures is not None and breaker_failures < 1:
            raise BenchError(f"breaker_failures must be at least 1 (or None to disable), got {breaker_failures}")
        self.backend = backend
        self.cache = cache if cache is not None else ResponseCache(None)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.request_deadline = (request_deadline if request_deadline is not None
                                 else default_request_deadline(timeout, max_retries))
        self.run_deadline = run_deadline
        self.breaker_failures = breaker_failures
        self._run_started: float | None = None  # monotonic time of the first request
        self._connection_failures = 0  # in a row, across requests
        self._breaker_reason: str | None = None  # set once the breaker opens; it stays open
        self.usage = Usage()
        self._rng = random.Random(jitter_seed)
        # Per event loop: asyncio primitives belong to the loop they were first used in,
        # and chat_many starts a fresh loop each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        # Managed servers (bench.llm.servers) behind this client's endpoints, and the
        # endpoint file it came from; set by make_client for `@FILE` specs.
        self.servers: list[Any] = []
        self.source: Any = None

    def probe(self, timeout: float = 5.0) -> None:
        """Raise LLMUnavailable (with a reason) if the backend cannot answer: unreachable,
        key rejected, model not served. Quick, and makes no chat request where the server
        lists its models; nothing is cached or counted in `usage`."""
        t0 = time.perf_counter()
        stopped = [srv for srv in self.servers if not srv.running]
        if stopped:
            # A managed server starts with the work that needs it: before that, only what
            # can be known without it (the program exists, the port is free).
            from bench.llm.base import LLMUnavailable
            from bench.llm.servers import ServerError

            for srv in stopped:
                try:
                    srv.preflight()
                except ServerError as e:
                    raise LLMUnavailable(str(e), kind="server") from e
            if len(stopped) == len(self.servers):
                return
        self.backend.probe(timeout)
        log.debug("LLM backend %s:%s answered the probe in %.2f s", self.backend.kind, self.backend.model,
                  time.perf_counter() - t0)

    # -- one request ---------------------------------------------------------
    async def chat(self, req: ChatRequest) -> ChatResponse:
        """The answer to `req`, from the cache or the backend; raises LLMError when it fails."""
        self._bind_loop()
        if self._run_started is None:
            self._run_started = time.monotonic()
        self.usage.requests += 1
        key = cache_key(self.backend.kind, self.backend.model, req)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
            self.usage.cached_prompt_tokens += hit.prompt_tokens
            self.usage.cached_completion_tokens += hit.completion_tokens
            return ChatResponse(text=hit.text, prompt_tokens=hit.prompt_tokens,
                                completion_tokens=hit.completion_tokens, cached=True,
                                backend=self.backend.kind, model=self.backend.model,
                                finish_reason=hit.finish_reason)
        if key in self._inflight:
            # The same request is already being asked in this batch: share its answer.
            resp = await asyncio.shield(self._inflight[key])
            self.usage.cache_hits += 1
            # Its tokens were paid once, by the request in flight: count them as cached, as
            # for a hit from the store, so requests x tokens add up either way.
            self.usage.cached_prompt_tokens += resp.prompt_tokens
            self.usage.cached_completion_tokens += resp.completion_tokens
            return replace(resp, cached=True, attempts=0, latency_s=0.0)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            resp = await self._call_with_retries(req)
            self.cache.put(key, self.backend.kind, self.backend.model, req, resp)
            fut.set_result(resp)
            return resp
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else LLMError("cancelled"))
            fut.exception()  # mark retrieved: nobody may be waiting on it
            raise
        finally:
            del self._inflight[key]

    async def _call_with_retries(self, req: ChatRequest) -> ChatResponse:
        assert self._sem is not None
        attempt = 0
        started: float | None = None  # the request deadline runs from the first attempt
        last: LLMTransientError | None = None
        while True:
            attempt += 1
            async with self._sem:
                now = time.monotonic()
                if started is None:
                    started = now
                # Checked after the semaphore: a request queued behind others when the run
                # deadline passes or the breaker opens must not be sent.
                self._stop_if_needed(attempt - 1, last, started, now, 0.0)
                left = self._time_left(started, now)
                t0 = time.perf_counter()
                try:
                    self.usage.calls += 1
                    # The backend enforces `timeout` itself (httpx's connect/read limits);
                    # this outer limit only catches one that hangs past it, with a grace
                    # period so that slow set-up (first TLS context, model load) is not cut.
                    # Either is shortened to what the deadlines leave.
                    resp = await asyncio.wait_for(self.backend.complete(req, min(self.timeout, left)),
                                                  min(self.timeout + max(5.0, 0.5 * self.timeout), left))
                except TimeoutError:
                    err: LLMTransientError = LLMTransientError(
                        f"no answer within {min(self.timeout, left):g} s (plus grace)", kind="timeout")
                except LLMTransientError as e:
                    err = e
                except LLMError as e:  # final: a 4xx, a refusal, an error the backend calls final
                    self._note_answer()
                    raise self._final(e, attempt, _final_kind(e))
                except Exception as e:  # a bug or an unmapped library error: report it, do not retry
                    log.exception("unexpected error from the %s backend", self.backend.kind)
                    wrapped = LLMError(f"{type(e).__name__}: {e}")
                    raise self._final(wrapped, attempt, type(e).__name__) from e
                else:
                    elapsed = time.perf_counter() - t0
                    self.usage.call_seconds += elapsed
                    self.usage.prompt_tokens += resp.prompt_tokens
                    self.usage.completion_tokens += resp.completion_tokens
                    self._note_answer()
                    if resp.finish_reason in REFUSAL_FINISH_REASONS:
                        raise self._final(LLMRefusal(f"the model refused to answer (finish_reason "
                                                     f"{resp.finish_reason!r})"), attempt, "refusal")
                    if resp.text.strip():
                        if req.response_format == "json" and not parses_as_json(resp.text):
                            self.usage.invalid_json += 1
                        return replace(resp, attempts=attempt, latency_s=elapsed, cached=False)
                    # An empty completion is no answer (an overloaded server, a stop hit at
                    # once): retried like a failure and never cached.
                    err = LLMTransientError(f"empty completion (finish_reason {resp.finish_reason!r})",
                                            kind="empty")
                spent = time.perf_counter() - t0
            if err.kind != "empty":  # an empty answer's time is already counted
                self.usage.call_seconds += spent
            self._count_error(err.kind)
            if err.malformed:
                self.usage.malformed += 1
            if err.kind == "connection":
                self._note_connection_failure(err)
            elif err.kind != "timeout":
                self._note_answer()  # the server answered, if badly: it is not dead
            last = err
            if attempt > self.max_retries:
                self.usage.failures += 1
                final = LLMError(f"gave up after {attempt} attempt{'s' if attempt > 1 else ''}: {err}")
                final.attempts = attempt  # type: ignore[attr-defined]
                raise final from err
            delay = self._delay(attempt, err.retry_after)
            # Give up now rather than sleep into a deadline or knock on a dead endpoint.
            self._stop_if_needed(attempt, err, started, time.monotonic(), delay)
            self.usage.retries += 1
            log.info("LLM attempt %d failed (%s); retrying in %.2f s", attempt, err, delay)
            await asyncio.sleep(delay)

    def _time_left(self, started: float, now: float) -> float:
        """Seconds the request and run deadlines leave from `now` (inf when neither applies)."""
        left = started + self.request_deadline - now
        if self.run_deadline is not None and self._run_started is not None:
            left = min(left, self._run_started + self.run_deadline - now)
        return left

    def _stop_if_needed(self, attempts: int, last: LLMTransientError | None, started: float, now: float,
                        wait: float) -> None:
        """Raise the final error when the breaker is open, or when a deadline has passed or
        would pass during the `wait` before the next attempt."""
        tail = f" after {attempts} attempt{'s' if attempts != 1 else ''}; last error: {last}" if attempts else \
            "; the request was not sent"
        if self._breaker_reason is not None:
            raise self._final(LLMEndpointDown(f"the LLM endpoint stopped answering ({self._breaker_reason}); no "
                                              f"more requests are sent to it in this run{tail}"),
                              attempts, "endpoint_down")
        if self.run_deadline is not None and self._run_started is not None \
                and now + wait >= self._run_started + self.run_deadline:
            raise self._final(LLMDeadlineExceeded(f"the run deadline of {self.run_deadline:g} s (run_deadline) "
                                                  f"has passed{tail}", "run"), attempts, "run_deadline")
        if now + wait >= started + self.request_deadline:
            raise self._final(LLMDeadlineExceeded(f"no answer within the request deadline of "
                                                  f"{self.request_deadline:g} s (request_deadline){tail}",
                                                  "request"), attempts, "request_deadline")

    def _final(self, e: LLMError, attempts: int, kind: str) -> LLMError:
        """Count a request that failed for good and return its error, ready to raise."""
        self._count_error(kind)
        self.usage.failures += 1
        e.attempts = attempts  # type: ignore[attr-defined]
        return e

    def _note_connection_failure(self, err: LLMTransientError) -> None:
        self._connection_failures += 1
        if (self.breaker_failures is not None and self._breaker_reason is None
                and self._connection_failures >= self.breaker_failures):
            self._breaker_reason = f"{self._connection_failures} connection failures in a row; last: {err}"
            log.error("LLM endpoint %s:%s stopped answering (%s); failing the remaining requests at once",
                      self.backend.kind, self.backend.model, self._breaker_reason)

    def _note_answer(self) -> None:
        self._connection_failures = 0

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        # Exponential backoff with jitter in [50%, 100%] of the step, so that many
        # clients that failed together do not all come back at the same instant.
        step = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return step * (0.5 + 0.5 * self._rng.random())

    def _count_error(self, kind: str) -> None:
        self.usage.errors[kind] = self.usage.errors.get(kind, 0) + 1

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._inflight = {}

    # -- many requests -------------------------------------------------------
    async def achat_many(self, reqs: Sequence[ChatRequest], progress: bool = False,
                         description: str = "LLM") -> list[ChatResponse]:
        """Answers in the order of `reqs`; a request that fails gives a response with `error`
        set instead of aborting the batch."""
        bar = _Bar(len(reqs), f"{description} ({self.backend.kind}:{self.backend.model})", progress)

        async def one(req: ChatRequest) -> ChatResponse:
            try:
                return await self.chat(req)
            except CacheCorruptError:
                raise  # the cache file, not this request: stop the batch with its message
            except Exception as e:  # collected per item, never raised out of the batch
                return ChatResponse(text="", backend=self.backend.kind, model=self.backend.model,
                                    attempts=getattr(e, "attempts", 0), error=str(e))
            finally:
                bar.advance()

        with bar:
            return list(await asyncio.gather(*(one(r) for r in reqs)))

    def chat_many(self, reqs: Sequence[ChatRequest], progress: bool = True,
                  description: str = "LLM") -> list[ChatResponse]:
        """Synchronous `achat_many`: runs its own event loop (so not from async code)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise BenchError("LLMClient.chat_many was called inside a running event loop; "
                             "use `await client.achat_many(...)` there")

        if reqs and self.servers and not all(srv.running for srv in self.servers):
            # Started on first use when no caller wrapped the work in serving(); close() stops them.
            self.start_servers()

        async def main() -> list[ChatResponse]:
            try:
                return await self.achat_many(reqs, progress=progress, description=description)
            finally:
                await self.backend.aclose()

        out = asyncio.run(main())
        n_failed = sum(not r.ok for r in out)
        if n_failed:
            log.warning("%d of %d LLM requests failed (first error: %s)", n_failed, len(out),
                        next(r.error for r in out if not r.ok))
        return out

    async def aclose(self) -> None:
        await self.backend.aclose()

    def start_servers(self) -> None:
        """Start this client's managed servers (none for an unmanaged endpoint) and wait until
        they answer; a server that fails raises ServerError with its log's tail."""
        started = []
        try:
            for srv in self.servers:
                srv.start()
                started.append(srv)
        except BaseException:
            for srv in started:
                srv.stop()
            raise

    def stop_servers(self) -> None:
        for srv in reversed(self.servers):
            srv.stop()

    @contextlib.contextmanager
    def serving(self) -> Iterator["LLMClient"]:
        """Managed servers up for the body and stopped after it, whatever happens; a no-op for
        endpoints that are not managed."""
        self.start_servers()
        try:
            yield self
        finally:
            self.stop_servers()

    def close(self) -> None:
        self.stop_servers()
        self.cache.close()

    def manifest(self) -> dict[str, Any]:
        """What the run manifest records: backend, cache and the usage counters."""
        return {"backend": self.backend.describe(), "cache": self.cache.describe(),
                "max_concurrency": self.max_concurrency, "max_retries": self.max_retries,
                "timeout_s": self.timeout, "request_deadline_s": self.request_deadline,
                "run_deadline_s": self.run_deadline, "breaker_failures": self.breaker_failures,
                "usage": self.usage.as_dict(),
                **({"endpoint_file": self.source.describe()} if self.source is not None else {}),
                **({"servers": [srv.describe() for srv in self.servers]} if self.servers else {})}


def _final_kind(e: LLMError) -> str:
    """The usage-counter label of an error that ends a request at once."""
    if isinstance(e, LLMRequestError):
        return f"http_{e.status}" if e.status else "request"
    if isinstance(e, (LLMRefusal, LLMDeadlineExceeded, LLMEndpointDown)):
        return e.kind
    return type(e).__name__


class _Bar:
    """A rich progress bar, or nothing when disabled (tests, logs to a file)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self._progress = None
        self._task = None

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
