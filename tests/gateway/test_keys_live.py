"""Keys take effect without a restart; nonsense rates and bad keys files are refused clearly."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.app import create_app
from jetgrid.gateway.auth import (
    ApiKey,
    KeyRing,
    KeysFileError,
    check_rate,
    hash_key,
    key_line,
    parse_keys,
    without_key,
)
from tests.helpers import until

H = "sha256:" + "a" * 64


@pytest.mark.parametrize("rate", ["-1", "nan", "inf", "0", "-inf"])
def test_nonsense_rates_in_the_keys_file_are_refused_naming_the_line(rate: str) -> None:
    with pytest.raises(KeysFileError) as err:
        parse_keys(f"{H} name=ci rate={rate}", "api-keys")
    message = str(err.value)
    assert "api-keys line 1" in message and "positive, finite" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf])
def test_check_rate_refuses_what_would_not_limit(value: float) -> None:
    with pytest.raises(KeysFileError, match="positive, finite"):
        check_rate(value)


def test_check_rate_keeps_positive_rates() -> None:
    assert check_rate(0.5) == 0.5


@pytest.mark.parametrize("rate", ["-1", "nan", "inf", "0"])
def test_keys_add_refuses_nonsense_rates_in_one_line(tmp_path: Path, rate: str) -> None:
    path = tmp_path / "keys"
    r = CliRunner().invoke(main, ["keys", "add", "ci", f"--rate={rate}", "--keys-file", str(path)])
    assert r.exit_code == 2, r.output
    assert "positive, finite" in r.output and "Traceback" not in r.output
    assert not path.exists()


def test_without_key_removes_only_that_key() -> None:
    a = key_line(ApiKey(hash_key("a"), "a"))
    b = key_line(ApiKey(hash_key("b"), "b", rate=2.0))
    text = f"# keys\n{a}\n{b}\n"
    rest, removed = without_key(text, "a")
    assert removed == 1 and rest == f"# keys\n{b}\n"
    assert without_key(text, "nobody") == (text, 0)
    with pytest.raises(KeysFileError, match=r"^api-keys line 4: 'sha256:x' is not"):
        without_key(f"{text}sha256:x\n", "a", "api-keys")


def test_keyring_reloads_a_changed_file_at_most_once_per_poll(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    ring = KeyRing(path, None, poll_s=1.0)
    assert ring.current(0.0) == {}
    path.write_text(key_line(ApiKey(hash_key("k"), "k")) + "\n")
    assert ring.current(0.5) == {}  # within the poll interval: not looked at yet
    assert set(ring.current(1.0)) == {hash_key("k")}
    path.write_text(f"{H}\nsha256:nothex\n")  # broken: fail closed, not open
    got = ring.current(2.0)
    assert isinstance(got, KeysFileError) and "line 2" in str(got)
    assert ring.keys() == []
    path.write_text("")
    assert ring.current(3.0) == {}


def test_a_bad_keys_file_stops_the_gateway_from_starting_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    path.write_text(f"{H} rate=-1\n")
    with pytest.raises(KeysFileError) as err:
        create_app(Settings(data_dir=tmp_path, api_keys_file=path))
    assert str(err.value).count("\n") == 0 and "rate -1.0" in str(err.value)


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, ["keys", *args])
    assert r.exit_code == 0, r.output
    return r.stdout.strip()


@pytest.mark.integration
async def test_keys_added_and_revoked_on_a_running_gateway_take_effect(
    streams: Settings, serve_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "api-keys"
    async with serve_gateway(streams.replace(api_keys_file=path)) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/v1/jobs")).status_code == 200  # open: no keys yet

            first = _cli("add", "first", "--keys-file", str(path))

            async def refused() -> bool:
                return (await http.get("/v1/jobs")).status_code == 401

            await until(refused, timeout=10)  # the first key closed the open gateway
            ok = {"Authorization": f"Bearer {first}"}
            assert (await http.get("/v1/jobs", headers=ok)).status_code == 200

            second = _cli("add", "second", "--keys-file", str(path))
            other = {"Authorization": f"Bearer {second}"}
            await until(
                lambda: _status(http, "/v1/jobs", other, 200),
                timeout=10,
            )
            r = CliRunner().invoke(main, ["keys", "revoke", "first", "--keys-file", str(path)])
            assert r.exit_code == 0 and "Revoked key 'first'" in r.output
            await until(lambda: _status(http, "/v1/jobs", ok, 401), timeout=10)
            assert (await http.get("/v1/jobs", headers=other)).status_code == 200

            # A keys file broken while the gateway runs closes it (503 naming the fault).
            path.write_text(path.read_text() + "sha256:nothex\n")
            await until(lambda: _status(http, "/v1/jobs", other, 503), timeout=10)
            r = await http.get("/v1/jobs", headers=other)
            assert "keys file" in r.json()["error"]["message"]
            assert (await http.get("/healthz")).status_code == 200


async def _status(http: httpx.AsyncClient, path: str, headers: dict[str, str], want: int) -> bool:
    return (await http.get(path, headers=headers)).status_code == want


def test_revoke_of_an_unknown_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    _cli("add", "ci", "--keys-file", str(path))
    r = CliRunner().invoke(main, ["keys", "revoke", "cd", "--keys-file", str(path)])
    assert r.exit_code == 1 and "No key named 'cd'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["keys", "revoke", "ci", "--keys-file", str(path)])
    assert r.exit_code == 0 and "open again" in r.output
    assert path.read_text() == "" and oct(path.stat().st_mode)[-3:] == "600"
