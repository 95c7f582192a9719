"""LLMClient: cache, concurrency limit and retries around one backend.

    client = LLMClient(backend, ResponseCache("runs/llm-cache.sqlite"), max_concurrency=8)
    answers = client.chat_many([ChatRequest(messages=[{"role": "user", "content": "Hi"}])])
    manifest["llm"] = client.manifest()

Retries: timeouts, connection errors, 429 and 5xx (and bodies that are not a readable
completion) are retried up to `max_retries` times with exponential backoff and jitter;
a 429's Retry-After is honoured instead of the backoff. Other 4xx answers are final.
The semaphore is held only while an attempt is in flight, never while backing off.

A request that fails for good is never written to the cache (only answers are), so a
run against a server that was down asks again once it is up. `probe()` asks the
backend, before any real request, whether it can answer at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from typing import Any, Sequence

from bench.errors import BenchError
from bench.llm.base import (ChatRequest, ChatResponse, LLMBackend, LLMError, LLMRequestError,
                            LLMTransientError, Usage)
from bench.llm.cache import ResponseCache, cache_key
from bench.llm.jsonx import parses_as_json

log = logging.getLogger(__name__)


class LLMClient:
    def __init__(self, backend: LLMBackend, cache: ResponseCache | None = None, *, max_concurrency: int = 8,
                 max_retries: int = 4, timeout: float = 120.0, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, max_retry_after_s: float = 300.0,
                 jitter_seed: int | None = None):
        if max_concurrency < 1:
            raise BenchError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise BenchError(f"max_retries must be 0 or more, got {max_retries}")
        if timeout <= 0:
            raise BenchError(f"timeout must be positive, got {timeout}")
        self.backend = backend
        self.cache = cache if cache is not None else ResponseCache(None)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.usage = Usage()
        self._rng = random.Random(jitter_seed)
        # Per event loop: asyncio primitives belong to the loop they were first used in,
        # and chat_many starts a fresh loop each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Future] = {}

    def probe(self, timeout: float = 5.0) -> None:
        """Raise LLMUnavailable (with a reason) if the backend cannot answer: unreachable,
        key rejected, model not served. Quick, and makes no chat request where the server
        lists its models; nothing is cached or counted in `usage`."""
        t0 = time.perf_counter()
        self.backend.probe(timeout)
        log.debug("LLM backend %s:%s answered the probe in %.2f s", self.backend.kind, self.backend.model,
                  time.perf_counter() - t0)

    # -- one request ---------------------------------------------------------
    async def chat(self, req: ChatRequest) -> ChatResponse:
        """The answer to `req`, from the cache or the backend; raises LLMError when it fails."""
        self._bind_loop()
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
        while True:
            attempt += 1
            t0 = time.perf_counter()
            try:
                async with self._sem:
                    self.usage.calls += 1
                    t0 = time.perf_counter()
                    # The backend enforces `timeout` itself (httpx's connect/read limits);
                    # this outer limit only catches one that hangs past it, with a grace
                    # period so that slow set-up (first TLS context, model load) is not cut.
                    resp = await asyncio.wait_for(self.backend.complete(req, self.timeout),
                                                  self.timeout + max(5.0, 0.5 * self.timeout))
            except TimeoutError:
                err: LLMTransientError = LLMTransientError(
                    f"no answer within {self.timeout:g} s (plus grace)", kind="timeout")
            except LLMTransientError as e:
                err = e
            except LLMRequestError as e:
                self._count_error(e.status and f"http_{e.status}" or "request")
                self.usage.failures += 1
                e.attempts = attempt  # type: ignore[attr-defined]
                raise
            except LLMError as e:
                self._count_error(type(e).__name__)
                self.usage.failures += 1
                e.attempts = attempt  # type: ignore[attr-defined]
                raise
            except Exception as e:  # a bug or an unmapped library error: report it, do not retry
                self._count_error(type(e).__name__)
                self.usage.failures += 1
                log.exception("unexpected error from the %s backend", self.backend.kind)
                wrapped = LLMError(f"{type(e).__name__}: {e}")
                wrapped.attempts = attempt  # type: ignore[attr-defined]
                raise wrapped from e
            else:
                elapsed = time.perf_counter() - t0
                self.usage.call_seconds += elapsed
                self.usage.prompt_tokens += resp.prompt_tokens
                self.usage.completion_tokens += resp.completion_tokens
                if req.response_format == "json" and not parses_as_json(resp.text):
                    self.usage.invalid_json += 1
                return replace(resp, attempts=attempt, latency_s=elapsed, cached=False)
            self.usage.call_seconds += time.perf_counter() - t0
            self._count_error(err.kind)
            if err.malformed:
                self.usage.malformed += 1
            if attempt > self.max_retries:
                self.usage.failures += 1
                final = LLMError(f"gave up after {attempt} attempt{'s' if attempt > 1 else ''}: {err}")
                final.attempts = attempt  # type: ignore[attr-defined]
                raise final from err
            self.usage.retries += 1
            delay = self._delay(attempt, err.retry_after)
            log.info("LLM attempt %d failed (%s); retrying in %.2f s", attempt, err, delay)
            await asyncio.sleep(delay)

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

    def close(self) -> None:
        self.cache.close()

    def manifest(self) -> dict[str, Any]:
        """What the run manifest records: backend, cache and the usage counters."""
        return {"backend": self.backend.describe(), "cache": self.cache.describe(),
                "max_concurrency": self.max_concurrency, "max_retries": self.max_retries,
                "timeout_s": self.timeout, "usage": self.usage.as_dict()}


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
