"""`interp serve` (interp.app.serve): the JSON API's contract, its answers to bad input, the report folder
and nothing else, the Host check, and several requests at once."""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_live import D_SAE, tiny_opened

from interp.app.serve import MAX_BODY, LiveModel, ReportServer, check_report
from interp.interventions.intervene import clamp, clean_text, steered_text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    report = root / "report"
    (report / "data").mkdir(parents=True)
    (report / "index.html").write_text("<!DOCTYPE html><title>index</title>")
    (report / "data" / "meta.js").write_text('monoReport.meta = {"d_sae": 96};\n')
    (report / ".hidden").write_text("hidden")
    (root / "secret.txt").write_text("outside the report")
    (report / "link.txt").symlink_to(root / "secret.txt")
    live = LiveModel(tiny_opened())
    srv = ReportServer(report, live, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one raw request: the path is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
    sent = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
    if body is not None:
        sent["Content-Length"] = str(len(body))
    for key, value in sent.items():
        conn.putheader(key, value)
    conn.endheaders()
    if body is not None:
        conn.send(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def generate(server, payload, **kw):
    status, _, data = request(server, "POST", "/api/generate", json.dumps(payload).encode(), **kw)
    return status, json.loads(data)


def test_activations_contract(server):
    status, headers, data = request(server, "GET", "/api/activations?text=" + "def%20f3(x)%3A%0A%20%20%20%20return")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    body = json.loads(data)
    assert set(body) == {"tokens", "features"}
    tokenizer = server.live.opened.model.tokenizer
    ids = tokenizer.encode("def f3(x):\n    return")
    assert len(body["tokens"]) == len(body["features"]) == len(ids)
    assert body["tokens"] == [tokenizer.token_strings()[i] for i in ids]
    for features in body["features"]:
        assert 1 <= len(features) <= 10
        values = [f["activation"] for f in features]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        assert all(isinstance(f["id"], int) and 0 <= f["id"] < D_SAE for f in features)


def test_generate_is_the_clean_model_without_a_steer_and_deterministic_at_temperature_0(server):
    opened = server.live.opened
    status, body = generate(server, {"prompt": "def f1(x):\n", "tokens": 10, "temperature": 0, "steer": {}})
    assert status == 200 and body == {"text": clean_text(opened, "def f1(x):\n", 10)}
    assert generate(server, {"prompt": "def f1(x):\n", "tokens": 10, "temperature": 0})[1] == body
    payload = {"prompt": "def f1(x):\n", "tokens": 10, "temperature": 0, "steer": {"3": 40.0}}
    steered = generate(server, payload)[1]
    assert steered == {"text": steered_text(opened, "def f1(x):\n", [clamp(3, 40.0)], 10)}
    sampled = {"prompt": "x", "tokens": 8, "temperature": 1.0, "seed": 4}
    assert generate(server, sampled)[1] == generate(server, sampled)[1]


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"prompt": "x", "tokens": 5, "steer": {"96": 1.0}}, 400, "unknown feature id '96'"),
        ({"prompt": "x", "tokens": 5, "steer": {"-1": 1.0}}, 400, "unknown feature id"),
        ({"prompt": "x", "tokens": 5, "steer": {"abc": 1.0}}, 400, "unknown feature id"),
        ({"prompt": "x", "tokens": 5, "steer": {"3": 1e9}}, 400, "must lie in"),
        ({"prompt": "x", "tokens": 5, "steer": {"3": "big"}}, 400, "finite number"),
        ({"prompt": "x", "tokens": 0}, 400, "'tokens' must be an integer in 1..256"),
        ({"prompt": "x", "tokens": 5000}, 400, "'tokens' must be an integer"),
        ({"prompt": "x", "tokens": 5, "temperature": -1}, 400, "'temperature'"),
        ({"prompt": 3, "tokens": 5}, 400, "'prompt' must be a string"),
        ({"prompt": "x", "tokens": 5, "colour": 1}, 400, "unknown field(s) ['colour']"),
        ([1, 2], 400, "JSON object"),
        ({"prompt": "def " * 200, "tokens": 5}, 400, "this model reads at most 31"),
    ],
)
def test_bad_generate_requests_get_a_4xx_with_a_message(server, payload, status, message):
    got, body = generate(server, payload)
    assert got == status and message in body["error"]


def test_bad_bodies_and_methods(server):
    status, _, data = request(server, "POST", "/api/generate", b"{not json")
    assert status == 400 and "not JSON" in json.loads(data)["error"]
    status, _, data = request(server, "POST", "/api/generate", b"x" * (MAX_BODY + 1))
    assert status == 413 and "at most" in json.loads(data)["error"]
    status, _, _ = request(server, "POST", "/api/generate", b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415  # a form post from another site cannot reach the model
    status, _, _ = request(server, "POST", "/api/other", b"{}")
    assert status == 404
    status, _, data = request(server, "GET", "/api/activations")
    assert status == 400 and "?text=" in json.loads(data)["error"]
    status, _, data = request(server, "GET", "/api/activations?text=" + "def%20" * 100)
    assert status == 400 and "at most 31" in json.loads(data)["error"]


def test_only_the_report_folder_is_served(server):
    status, headers, data = request(server, "GET", "/")
    assert status == 200 and b"<title>index</title>" in data and headers["Content-Type"].startswith("text/html")
    assert request(server, "GET", "/data/meta.js")[0] == 200
    for path in ("/../secret.txt", "/data/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/link.txt"):
        status, _, data = request(server, "GET", path)
        assert status == 403 and b"outside the report folder" in data, path
        assert b"outside the report" not in data.replace(b"outside the report folder", b"")
    assert request(server, "GET", "/.hidden")[0] == 404
    assert request(server, "GET", "/missing.html")[0] == 404
    assert request(server, "GET", "/a%00b")[0] == 404


def test_requests_naming_another_host_are_refused(server):
    status, _, data = request(server, "GET", "/", headers={"Host": "evil.example:8000"})
    assert status == 421 and b"not this server" in data
    assert request(server, "GET", "/", headers={"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_concurrent_requests_are_all_answered(server):
    texts = [f"def f{i}(x):\n    return x" for i in range(6)]
    expected = {t: request(server, "GET", "/api/activations?text=" + _quote(t))[2] for t in texts}
    payload = {"prompt": "def f2(x):\n", "tokens": 8, "temperature": 0, "steer": {"5": 30.0}}
    steered = generate(server, payload)[1]

    def one(i):
        kind = i % 3
        if kind == 0:
            text = texts[i % len(texts)]
            return request(server, "GET", "/api/activations?text=" + _quote(text))[2] == expected[text]
        if kind == 1:
            return generate(server, payload)[1] == steered
        return request(server, "GET", "/index.html")[0] == 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(24)))
    assert all(results)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_check_report_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="interp report"):
        check_report(tmp_path)
    (tmp_path / "index.html").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.js").write_text("garbage")
    with pytest.raises(ValueError, match=r"meta\.js is not a report's meta file"):
        check_report(tmp_path)
    (tmp_path / "data" / "meta.js").write_text('monoReport.meta = {"d_sae": 5};\n')
    assert check_report(Path(tmp_path))["d_sae"] == 5
