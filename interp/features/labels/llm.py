"""Optional: explanations and their scores from a language model behind any OpenAI-compatible
chat-completions endpoint (POST {base_url}/chat/completions). Off unless asked for (`interp label --llm`).

Settings come from the command line or the environment: MONOSEMANTIC_LLM_BASE_URL (e.g.
http://localhost:8000/v1), MONOSEMANTIC_LLM_MODEL, MONOSEMANTIC_LLM_API_KEY (sent as a Bearer token;
never written to disk). Every response is cached on disk under the sha256 of (base URL, request
body), so a re-run asks nothing twice.

The key goes to the configured URL only: redirects are refused (urllib would re-send the header to
the host redirected to). A reply is read within an overall deadline of timeout_s and at most
MAX_REPLY_BYTES. A reply that is not what was asked for is recorded as that feature's error and the
others go on; an endpoint that cannot be reached stops the run, after the rule labels are saved.

Explain: the model sees the feature's build top examples (the same split as `interp.features.labels`), peak
token marked «like this», and answers with a short phrase. Score (detection): it sees held-out
examples and as many held-out random tokens where the feature does not fire, shuffled, each with its
token marked, and gives each a probability that the feature fires there; the score is the AUROC of
those probabilities against the truth.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interp.features.analysis.artifact import Analysis
from interp.features.labels.config import CACHE_DIR, ENV_API_KEY, ENV_BASE_URL
from interp.features.labels.evidence import Evidence
from interp.features.labels.labeller import Label
from interp.features.labels.rules import auroc
from sae.files import read_json, write_json
from sae.progress import progress_bar

MAX_REPLY_BYTES = 4 << 20  # a chat completion of a short phrase or a list of numbers is a few kB


class MalformedReply(ValueError):
    """The endpoint answered, but not with what was asked for (recorded per feature)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirect to {newurl} refused: set the base URL to the final address", headers, fp
        )


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass
class LLMConfig:
    base_url: str
    model: str
    api_key: str | None = None
    cache_dir: Path | None = None  # None: <analysis folder>/llm_cache
    features: int = 50  # features explained, the most often firing first
    examples: int = 8  # build top examples shown to explain
    timeout_s: float = 60.0


class ChatClient:
    """POST chat completions with urllib; responses cached as JSON files in `cache_dir`."""

    def __init__(self, cfg: LLMConfig, cache_dir: Path):
        self.cfg, self.cache_dir = cfg, cache_dir
        self.requests = 0  # requests actually sent (cache misses)

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.cfg.model, "messages": messages, "temperature": 0}
        key = hashlib.sha256(json.dumps([self.cfg.base_url, body], sort_keys=True).encode()).hexdigest()
        cached = self.cache_dir / f"{key}.json"
        if cached.is_file():
            return read_json(cached, fix="delete it to ask the endpoint again")["content"]
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        self.requests += 1
        deadline = time.monotonic() + self.cfg.timeout_s
        try:
            with _OPENER.open(request, timeout=self.cfg.timeout_s) as response:
                raw = _read_within(response, deadline, MAX_REPLY_BYTES, url)
        except urllib.error.HTTPError as err:
            detail = err.msg if err.code in (301, 302, 303, 307, 308) else err.read(300).decode(errors="replace")
            raise ValueError(
                f"the chat endpoint {url} answered HTTP {err.code}: {detail}; check --llm-base-url, "
                f"--llm-model and {ENV_API_KEY}."
            ) from None
        except (urllib.error.URLError, TimeoutError) as err:
            raise ValueError(
                f"cannot reach the chat endpoint {url} ({err}); check --llm-base-url / {ENV_BASE_URL}."
            ) from None
        try:
            content = json.loads(raw.decode())["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise MalformedReply(
                f"the chat endpoint {url} answered without a JSON choices[0].message.content string ({err!r}): "
                f"{raw[:200]!r}"
            ) from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(cached, {"request": body, "content": content}, indent=None)
        return content


def _read_within(response: Any, deadline: float, limit: int, url: str) -> bytes:
    """The reply body, read in chunks: at most `limit` bytes, done by `deadline` (time.monotonic)."""
    chunks, size = [], 0
    while block := response.read(65536):
        chunks.append(block)
        size += len(block)
        if size > limit:
            raise MalformedReply(f"the chat endpoint {url} sent more than {limit:,} bytes; refusing the reply.")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reply from {url} took longer than the deadline")
    return b"".join(chunks)


def marked_text(ctx_row: np.ndarray, L: int, vocab: list[str]) -> str:
    """A context [L + 2] as text with the token at column L marked «like this»."""

    def text(t: int) -> str:
        return vocab[t] if 0 <= t < len(vocab) else ""

    before = "".join(text(int(t)) for t in ctx_row[:L])
    return before + "«" + text(int(ctx_row[L])) + "»" + text(int(ctx_row[L + 1]))


def parse_probabilities(content: str, n: int) -> list[float]:
    """The first JSON list of n numbers in the reply, clipped to [0, 1]."""
    match = re.search(r"\[[^\[\]]*\]", content)
    try:
        values = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != n or not all(isinstance(v, (int, float)) for v in values):
        raise MalformedReply(f"the language model's reply is not a JSON list of {n} numbers: {content[:200]!r}")
    return [min(max(float(v), 0.0), 1.0) for v in values]


class LLMLabeller:
    """Adds an explanation and its detection score to the labels of the most often firing features."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.client: ChatClient | None = None

    def annotate(self, analysis: Analysis, labels: list[Label], progress: bool = True) -> dict[str, Any]:
        """Puts facts["llm"] = {explanation, score, items} on up to cfg.features labels; returns the
        labels.json header fields that say which endpoint and model wrote them."""
        cache = self.cfg.cache_dir or Path(analysis.path or ".") / CACHE_DIR
        self.client = ChatClient(self.cfg, Path(cache))
        data = Evidence(analysis)
        order = np.argsort(-data.arrays["fire_count"], kind="stable")[: self.cfg.features]
        for i in progress_bar(order.tolist(), desc="llm", disable=not progress, leave=False):
            if data.arrays["fire_count"][i] == 0:
                continue
            try:
                explanation = self.explain(data, i)
                score, items = self.score(data, i, explanation)
            except MalformedReply as err:
                labels[i].facts["llm"] = {"error": str(err)}
                continue
            labels[i].facts["llm"] = {"explanation": explanation, "score": score, "items": items}
        return {"llm": {"base_url": self.cfg.base_url, "model": self.cfg.model}}

    def explain(self, data: Evidence, i: int) -> str:
        ex = data.examples(i)
        ctx = data.example_contexts(ex.tokens)
        build_top = np.nonzero(ex.is_top & ~ex.held_out)[0][: self.cfg.examples]
        lines = [
            f"{k + 1}. (activation {ex.value[j]:.3g}) {marked_text(ctx[j], data.left, data.vocab)}"
            for k, j in enumerate(build_top)
        ]
        prompt = (
            "These text snippets are where one feature of a neural network is most active; the token it is "
            "active on is marked «like this».\n\n"
            + "\n".join(lines)
            + "\n\nExplain in one short phrase (at most 12 words) what the feature detects. Reply with the phrase only."
        )
        reply = self.client.complete([{"role": "user", "content": prompt}])
        return reply.strip().splitlines()[0].strip() if reply.strip() else ""

    def score(self, data: Evidence, i: int, explanation: str) -> tuple[float | None, int]:
        ex = data.examples(i)
        positives = data.example_contexts(ex.tokens)[ex.held_out]
        rows = data.random_rows[True]
        quiet = rows[data.random_activations(i)[rows] == 0]
        rng = np.random.default_rng(i)
        negatives = (
            data.random_ctx[rng.choice(quiet, size=min(len(quiet), len(positives)), replace=False)]
            if len(quiet)
            else positives[:0]
        )
        if not len(positives) or not len(negatives):
            return None, 0
        items = np.concatenate([positives, negatives])
        truth = np.concatenate([np.ones(len(positives), bool), np.zeros(len(negatives), bool)])
        order = rng.permutation(len(items))
        items, truth = items[order], truth[order]
        lines = [f"{k + 1}. {marked_text(row, data.left, data.vocab)}" for k, row in enumerate(items)]
        prompt = (
            f"A feature of a neural network is described as: {explanation}\n\nFor each snippet below, give the "
            "probability that the feature is active on the token marked «like this».\n\n"
            + "\n".join(lines)
            + f"\n\nReply with a JSON list of {len(items)} numbers between 0 and 1, in order, and nothing else."
        )
        probabilities = np.array(
            parse_probabilities(self.client.complete([{"role": "user", "content": prompt}]), len(items))
        )
        return auroc(probabilities[truth], probabilities[~truth]), len(items)
