"""API keys, scopes, rate limits and the request-size limit, in each API's error shape."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.gateway.auth import ApiKey, hash_key, key_line, load_keys, parse_keys
from jetgrid.gateway.ratelimit import Bucket, take

H = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("bucket", "now", "rate", "burst", "allowed", "wait"),
    [
        (None, 0.0, 1.0, 2.0, True, 0.0),  # a new bucket starts full
        (Bucket(0.0, 0.0), 0.5, 1.0, 2.0, False, 0.5),  # half a token back after 0.5 s
        (Bucket(0.0, 0.0), 1.0, 1.0, 2.0, True, 0.0),
        (Bucket(0.0, 0.0), 100.0, 1.0, 2.0, True, 0.0),  # refills only up to burst
        (Bucket(0.0, 0.0), 0.0, 0.0, 2.0, True, 0.0),  # rate 0: unlimited
        (Bucket(0.2, 0.0), 0.0, 4.0, 2.0, False, 0.2),
    ],
)
def test_token_bucket(bucket, now, rate, burst, allowed, wait) -> None:  # type: ignore[no-untyped-def]
    new, retry = take(bucket, now, rate, burst)
    assert (retry == 0) is allowed and retry == pytest.approx(wait)
    if rate > 0:
        assert new.tokens <= burst


def test_bucket_never_exceeds_burst_after_a_long_idle() -> None:
    b, _ = take(Bucket(0.0, 0.0), 1e6, 10.0, 3.0)
    assert b.tokens == pytest.approx(2.0)


def test_keys_file_round_trips_and_rejects_bad_lines() -> None:
    key = ApiKey(hash=H, name="ci", pools=("fast",), models=("llama*", "echo"), rate=5.0)
    assert parse_keys(key_line(key)) == [key]
    assert parse_keys(f"# comment\n\n{H}   # trailing\n") == [ApiKey(hash=H)]
    with pytest.raises(ValueError, match="line 2"):
        parse_keys(f"{H}\nsha256:xyz")
    with pytest.raises(ValueError, match="colour=red"):
        parse_keys(f"{H} colour=red")
    with pytest.raises(ValueError, match="rate"):
        parse_keys(f"{H} rate=fast")
    assert [k.name for k in load_keys(None, f"{H}, {hash_key('x')}")] == ["env-1", "env-2"]


def test_keys_add_prints_the_key_once_and_stores_its_hash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    path = tmp_path / "keys"
    args = ["keys", "add", "ci", "--pools", "fast", "--models", "ech*", "--keys-file", str(path)]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert key.startswith("jg_") and key not in path.read_text()
    (stored,) = load_keys(path, None)
    assert stored.hash == hash_key(key) and stored.pools == ("fast",)
    assert stored.models == ("ech*",)
    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "already exists" in again.output
    listed = runner.invoke(main, ["keys", "list", "--keys-file", str(path)])
    assert "ci" in listed.output and key not in listed.output


@pytest.fixture
async def keyed(streams, serve_gateway, start_worker, tmp_path):  # type: ignore[no-untyped-def]
    """A gateway with three keys: full, scoped to pool fast, and limited to 1 request/s."""
    keys = {"full": "k-full", "fast": "k-fast", "slow": "k-slow"}
    path = tmp_path / "api-keys"
    path.write_text(
        "\n".join(
            [
                key_line(ApiKey(hash_key(keys["full"]), "full")),
                key_line(ApiKey(hash_key(keys["fast"]), "fast", pools=("fast",), models=("x*",))),
                key_line(ApiKey(hash_key(keys["slow"]), "slow", rate=0.01)),
            ]
        )
    )
    await start_worker()
    settings = streams.replace(api_keys_file=path, max_request_bytes=2000)
    async with serve_gateway(settings) as base:
        yield base, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


integration = pytest.mark.integration


@integration
async def test_every_route_but_health_needs_a_key(keyed) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/pools"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/v1/models"),
        ]:
            r = await http.request(method, path)
            assert r.status_code == 401, path
            assert r.json()["error"]["field"] == "Authorization"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await http.get("/api/tags", headers=bearer("wrong"))
        assert r.status_code == 401 and r.json() == {"error": "The API key is not valid."}
        ok = await http.get("/v1/jobs", headers=bearer(keys["full"]))
        assert ok.status_code == 200


@integration
async def test_official_clients_raise_their_auth_errors(keyed, wait_model) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    async with ollama.AsyncClient(host=base) as c:
        with pytest.raises(ollama.ResponseError) as err:
            await c.list()
        assert err.value.status_code == 401
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0) as o:
        with pytest.raises(openai.AuthenticationError):
            await o.models.list()
    await wait_model(base, headers=bearer(keys["full"]))
    async with ollama.AsyncClient(host=base, headers=bearer(keys["full"])) as c:
        assert (await c.generate(model="echo", prompt="in", stream=False)).response == "in"
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=keys["full"]) as o:
        done = await o.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "ok"}]
        )
        assert done.choices[0].message.content == "ok"


@integration
async def test_scoped_key_gets_403_naming_the_scope(keyed, wait_model) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    await wait_model(base, headers=bearer(keys["full"]))
    async with httpx.AsyncClient(base_url=base, headers=bearer(keys["fast"])) as http:
        r = await http.post("/v1/jobs", json={"model": "x:1b", "prompt": "p", "pool": "standard"})
        assert r.status_code == 403 and r.json()["error"]["field"] == "pool"
        assert "scoped to pools ['fast']" in r.json()["error"]["message"]
        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "p", "pool": "fast"})
        assert r.status_code == 403 and "models ['x*']" in r.json()["error"]["message"]
        assert (
            await http.post(
                "/v1/jobs?queue_unserved=true",
                json={"model": "x:1b", "prompt": "p", "pool": "fast"},
            )
        ).status_code == 202
        r = await http.post("/api/generate", json={"model": "echo", "prompt": "p"})
        assert r.status_code == 403 and "scoped to" in r.json()["error"]


@integration
async def test_a_scoped_key_sees_only_its_own_pools_and_models(keyed, wait_model) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    await wait_model(base, headers=bearer(keys["full"]))
    async with httpx.AsyncClient(base_url=base) as http:
        full, fast = bearer(keys["full"]), bearer(keys["fast"])
        other = (await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "p"},
                                 headers=full)).json()["id"]  # fmt: skip
        mine = (await http.post("/v1/jobs?queue_unserved=true",
                                json={"model": "x:1b", "prompt": "p", "pool": "fast"},
                                headers=fast)).json()["id"]  # fmt: skip
        # Another tenant's job is as unknown as one that never was, on every read and cancel.
        for method, path in [
            ("GET", f"/v1/jobs/{other}"),
            ("GET", f"/v1/jobs/{other}/result"),
            ("GET", f"/v1/jobs/{other}/events"),
            ("DELETE", f"/v1/jobs/{other}"),
        ]:
            r = await http.request(method, path, headers=fast)
            assert r.status_code == 404 and r.json()["error"]["field"] == "job_id", path
        assert (await http.get(f"/v1/jobs/{other}", headers=full)).status_code == 200
        assert (await http.get(f"/v1/jobs/{mine}", headers=fast)).status_code == 200
        listed = {j["id"] for j in (await http.get("/v1/jobs", headers=fast)).json()["jobs"]}
        assert mine in listed and other not in listed
        everything = {j["id"] for j in (await http.get("/v1/jobs", headers=full)).json()["jobs"]}
        assert {mine, other} <= everything
        # Model lists show what the key may use: echo runs in pool standard, outside its scope.
        assert (await http.get("/v1/models", headers=fast)).json()["data"] == []
        assert (await http.get("/api/tags", headers=fast)).json()["models"] == []
        assert [m["id"] for m in (await http.get("/v1/models", headers=full)).json()["data"]] == [
            "echo"
        ]


@integration
async def test_rate_limit_answers_429_with_retry_after(keyed) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    async with httpx.AsyncClient(base_url=base, headers=bearer(keys["slow"])) as http:
        statuses = [(await http.get("/v1/jobs")) for _ in range(45)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "the key should run out of its burst"
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "rate limit" in limited[0].json()["error"]["message"]


@integration
async def test_too_large_bodies_get_413(keyed) -> None:  # type: ignore[no-untyped-def]
    base, keys = keyed
    big = {"model": "echo", "prompt": "x" * 5000}
    async with httpx.AsyncClient(base_url=base, headers=bearer(keys["full"])) as http:
        r = await http.post("/v1/jobs", json=big)
        assert r.status_code == 413 and "at most 2000" in r.json()["error"]["message"]
        r = await http.post("/api/generate", json=big)
        assert r.status_code == 413 and "at most 2000" in r.json()["error"]

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(5):  # no Content-Length: counted as it arrives
                yield b"x" * 1000

        r = await http.post("/v1/jobs", content=chunks())
        assert r.status_code == 413


@integration
async def test_embeddings_completions_and_model_retrieve_keep_to_the_keys_scope(  # type: ignore[no-untyped-def]
    keyed, wait_model
) -> None:
    base, keys = keyed
    await wait_model(base, headers=bearer(keys["full"]))
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=keys["full"]) as o:
        assert (await o.models.retrieve("echo")).id == "echo"
        assert len((await o.embeddings.create(model="echo", input="e")).data) == 1
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=keys["fast"], max_retries=0) as o:
        with pytest.raises(openai.NotFoundError):  # a model the key may not use is not listed
            await o.models.retrieve("echo")
        with pytest.raises(openai.PermissionDeniedError):
            await o.embeddings.create(model="echo", input="e")
        with pytest.raises(openai.PermissionDeniedError):
            await o.completions.create(model="echo", prompt="p")
    async with ollama.AsyncClient(host=base, headers=bearer(keys["fast"])) as c:
        with pytest.raises(ollama.ResponseError) as err:
            await c.embeddings(model="echo", prompt="e")
        assert err.value.status_code == 403
