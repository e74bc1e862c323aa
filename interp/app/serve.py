"""`interp serve`: a report folder over HTTP, unchanged, plus a JSON API on the live model and SAE that
the report's live panels (the prompt view, the steering panel) call.

    GET  /FILE                     a file inside the report folder (nothing outside it, no hidden files)
    GET  /api/info                 {"model", "hook", "d_sae", "limits": {...}}
    GET  /api/activations?text=T   {"tokens": [str, ...], "features": [[{"id": int, "activation": float}, ...], ...]}
                                   the text's tokens (BOS is not shown) and the top 10 features of each
    POST /api/generate             {"prompt": str, "tokens": int, "temperature": float, "seed": int (optional),
                                    "steer": {"<feature id>": value}} -> {"text": str}

The server is the standard library's ThreadingHTTPServer: one thread per request, so pages and data
files keep flowing while the model works, and nothing to install. Model calls take one lock, because
an intervention attaches its hook to the shared model for the length of the call. Bad input gets a
4xx answer {"error": message}; a request body is at most MAX_BODY bytes; bound to a loopback address,
the server answers only requests whose Host names that address (a web page elsewhere cannot reach it
by renaming itself), and a POST must say Content-Type: application/json.
"""

from __future__ import annotations

import json
import math
import mimetypes
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

import torch

from interp.activations.sources import ModelAndSAE
from interp.interventions.intervene import clamp, steered_text
from interp.interventions.splice import spliced
from interp.model.transformer import model_device

MAX_BODY = 64 * 1024  # bytes of a request body
MAX_TEXT = 4000  # characters of a prompt or a text
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 10.0
MAX_STEER = 10_000.0  # |clamp value|, in the SAE's activation units
TOP_FEATURES = 10  # features listed per token
LOOPBACK = ("127.0.0.1", "localhost", "::1")
GENERATE_FIELDS = {"prompt", "tokens", "temperature", "seed", "steer"}


class RequestError(ValueError):
    """Bad input from a client: answered with `status` and the message."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


class LiveModel:
    """A model and its SAE answering the API's questions, one model call at a time."""

    def __init__(self, opened: ModelAndSAE):
        self.opened = opened
        self.d_sae = int(opened.sae.cfg.d_sae)
        self.token_strings = opened.model.tokenizer.token_strings()
        self.lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "model": self.opened.model_spec,
            "sae": str(self.opened.sae_path),
            "hook": self.opened.hook,
            "d_sae": self.d_sae,
            "limits": {
                "text_chars": MAX_TEXT,
                "context_tokens": self.opened.model.context_length,
                "new_tokens": MAX_NEW_TOKENS,
                "temperature": MAX_TEMPERATURE,
                "steer": MAX_STEER,
            },
        }

    def token_ids(self, text: str) -> list[int]:
        """BOS + the text's ids; RequestError when they do not fit the model's context."""
        tokenizer, context = self.opened.model.tokenizer, self.opened.model.context_length
        ids = [tokenizer.bos_id, *tokenizer.encode(text)]
        if len(ids) > context:
            raise RequestError(f"the text is {len(ids) - 1} tokens; this model reads at most {context - 1}.")
        return ids

    @torch.no_grad()
    def activations(self, text: str) -> dict[str, Any]:
        """The text's tokens and the top features of each (activation > 0, strongest first)."""
        ids = self.token_ids(check_text(text, "text"))
        opened, bridge = self.opened, self.opened.model.bridge
        with self.lock, spliced(bridge, opened.sae, at=opened.hook, record=True) as splice:
            bridge(torch.tensor([ids], device=model_device(bridge)))
        f = splice.last.f[1:].float().cpu()  # [tokens, d_sae], BOS left out
        values, features = torch.topk(f, min(TOP_FEATURES, self.d_sae), dim=1)
        return {
            "tokens": [self.token_strings[i] for i in ids[1:]],
            "features": [
                [{"id": int(j), "activation": float(v)} for j, v in zip(row_ids, row_values) if v > 0]
                for row_ids, row_values in zip(features.tolist(), values.tolist())
            ],
        }

    def generate(self, body: Any) -> dict[str, Any]:
        """The continuation a POST /api/generate body asks for."""
        request = check_generate(body, self.d_sae)
        self.token_ids(request["prompt"])
        edits = [clamp(i, v) for i, v in request["steer"].items()]  # checked by check_generate
        with self.lock:
            text = steered_text(
                self.opened,
                request["prompt"],
                edits,
                request["tokens"],
                temperature=request["temperature"],
                seed=request["seed"],
            )
        return {"text": text}


def check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"field {name!r} must be a string, got {type(value).__name__}.")
    if len(value) > MAX_TEXT:
        raise RequestError(f"field {name!r} is {len(value)} characters; at most {MAX_TEXT}.")
    return value


def check_generate(body: Any, d_sae: int) -> dict[str, Any]:
    """The fields of a generate request, checked (RequestError naming the field and the allowed range)."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object with fields prompt, tokens, temperature, seed, steer.")
    unknown = sorted(set(body) - GENERATE_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; the fields are {sorted(GENERATE_FIELDS)}.")
    prompt = check_text(body.get("prompt"), "prompt")
    tokens = body.get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= MAX_NEW_TOKENS:
        raise RequestError(f"field 'tokens' must be an integer in 1..{MAX_NEW_TOKENS}, got {tokens!r}.")
    temperature = body.get("temperature", 0.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= MAX_TEMPERATURE
    ):
        raise RequestError(f"field 'temperature' must be a number in 0..{MAX_TEMPERATURE}, got {temperature!r}.")
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise RequestError(f"field 'seed' must be a non-negative integer, got {seed!r}.")
    steer_in = body.get("steer", {})
    if not isinstance(steer_in, dict):
        raise RequestError("field 'steer' must be an object {\"<feature id>\": value}.")
    steer = {}
    for key, value in steer_in.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < d_sae):
            raise RequestError(f"steer: unknown feature id {key!r}; this SAE has features 0..{d_sae - 1}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestError(f"steer: the value of feature {key} must be a finite number, got {value!r}.")
        if abs(value) > MAX_STEER:
            raise RequestError(f"steer: the value of feature {key} is {value}; it must lie in ±{MAX_STEER:g}.")
        steer[int(key)] = float(value)
    return {"prompt": prompt, "tokens": tokens, "temperature": float(temperature), "seed": seed, "steer": steer}


def check_report(folder: str | Path) -> dict[str, Any]:
    """The header facts (data/meta.js) of the report in `folder`; FileNotFoundError or ValueError
    naming the file when it is not a report."""
    path = Path(folder) / "data" / "meta.js"
    if not (Path(folder) / "index.html").is_file() or not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no report (no index.html or data/meta.js); write one with `interp report`."
        )
    text = path.read_text(encoding="utf-8").strip()
    prefix = "monoReport.meta = "
    try:
        if not text.startswith(prefix):
            raise json.JSONDecodeError("no meta assignment", text, 0)
        meta = json.loads(text[len(prefix) :].rstrip(";"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not a report's meta file ({err}); rebuild the report with `interp report`."
        ) from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path} holds a JSON {type(meta).__name__}, not the object of a report's meta file; rebuild the "
            "report with `interp report`."
        )
    return meta


class ReportServer(ThreadingHTTPServer):
    """Serves `root` (a report folder) and the API of `live` (None: files only, the API answers 503)."""

    daemon_threads = True

    def __init__(self, root: Path, live: LiveModel | None, host: str, port: int, log: TextIO | None = None):
        self.root, self.live, self.log = Path(root).resolve(), live, log
        super().__init__((host, port), ReportHandler)
        self.loopback = host in LOOPBACK or host.startswith("127.")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'localhost' if self.loopback else host}:{port}/"


class ReportHandler(BaseHTTPRequestHandler):
    server: ReportServer

    def do_GET(self) -> None:
        self.respond(self.get)

    def do_POST(self) -> None:
        self.respond(self.post)

    def respond(self, handler) -> None:
        try:
            self.check_host()
            handler(urlsplit(self.path))
        except RequestError as err:
            self.send_json({"error": str(err)}, err.status)
        except Exception as err:  # the page gets a message; the server keeps serving
            self.send_json({"error": f"{type(err).__name__}: {err}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def check_host(self) -> None:
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in LOOPBACK:
            raise RequestError(f"Host {host!r} is not this server's address.", HTTPStatus.MISDIRECTED_REQUEST)

    def get(self, url) -> None:
        if url.path.startswith("/api/"):
            live = self.live_model()
            if url.path == "/api/info":
                return self.send_json(live.info())
            if url.path == "/api/activations":
                text = parse_qs(url.query, keep_blank_values=True).get("text")
                if text is None:
                    raise RequestError("pass the text as ?text=...")
                return self.send_json(live.activations(text[0]))
            raise RequestError(f"no API endpoint {url.path}", HTTPStatus.NOT_FOUND)
        self.send_file(url.path)

    def post(self, url) -> None:
        if url.path != "/api/generate":
            raise RequestError(f"POST goes to /api/generate, not {url.path}", HTTPStatus.NOT_FOUND)
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise RequestError("send the body as Content-Type: application/json", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("a POST needs a Content-Length", HTTPStatus.LENGTH_REQUIRED)
        if int(length) > MAX_BODY:
            raise RequestError(f"the body is {length} bytes; at most {MAX_BODY}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not JSON: {err}") from err
        self.send_json(self.live_model().generate(body))

    def live_model(self) -> LiveModel:
        if self.server.live is None:
            raise RequestError(
                "this server has no model; start it with --model and --sae", HTTPStatus.SERVICE_UNAVAILABLE
            )
        return self.server.live

    def send_file(self, url_path: str) -> None:
        relative = unquote(url_path).lstrip("/") or "index.html"
        if "\x00" in relative:
            raise RequestError(f"no file {url_path}", HTTPStatus.NOT_FOUND)
        path = (self.server.root / relative).resolve()  # symbolic links followed, then checked
        if not path.is_relative_to(self.server.root):
            raise RequestError(f"{url_path} is outside the report folder", HTTPStatus.FORBIDDEN)
        if any(part.startswith(".") for part in path.relative_to(self.server.root).parts):
            raise RequestError(f"no file {url_path}", HTTPStatus.NOT_FOUND)  # hidden: build folders, locks
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            raise RequestError(f"no file {url_path}", HTTPStatus.NOT_FOUND)
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        self.send(HTTPStatus.OK, body, kind)

    def send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
        self.send(status, body, "application/json; charset=utf-8")

    def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log is not None:
            print(f"{self.address_string()} {format % args}", file=self.server.log, flush=True)


def serve(root: str | Path, live: LiveModel | None, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted, logging one line per request to stderr."""
    server = ReportServer(Path(root), live, host, port, log=sys.stderr)
    print(f"serving {server.root} at {server.url} (Ctrl-C stops)", flush=True)
    if not server.loopback:
        print(f"note: bound to {host}: anyone who can reach this address can run the model.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
