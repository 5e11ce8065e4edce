"""The pure webhook rules: Standard Webhooks signatures, secrets, targets and retry timing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from jetgrid.coordinator import webhooks as wh
from jetgrid.events import ConfigError

# The reference vector of the Standard Webhooks libraries (standard-webhooks tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_specifications_vector() -> None:
    assert wh.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    # the whsec_ prefix is optional
    assert wh.sign(SPEC_SECRET.removeprefix("whsec_"), SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG


def test_headers_carry_id_timestamp_and_signature() -> None:
    h = wh.headers(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY)
    assert h["webhook-id"] == SPEC_ID
    assert h["webhook-timestamp"] == str(SPEC_TS)
    assert h["webhook-signature"] == SPEC_SIG
    assert h["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("change", "ok"),
    [
        ({}, True),
        ({"webhook-signature": f"v1,bad= {SPEC_SIG}"}, True),  # one of several matches
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, False),
        ({"webhook-signature": SPEC_SIG.replace("v1,", "v2,")}, False),
        ({"webhook-id": "msg_other"}, False),
        ({"webhook-id": ""}, False),
        ({"webhook-timestamp": "hello"}, False),
        ({"webhook-timestamp": str(SPEC_TS + 1)}, False),
    ],
)
def test_verify(change: dict[str, str], ok: bool) -> None:
    received = {**wh.headers(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY), **change}
    assert wh.verify(SPEC_SECRET, received, SPEC_BODY, now=SPEC_TS) is ok


@pytest.mark.parametrize(("skew", "ok"), [(0, True), (300, True), (-300, True), (301, False),
                                          (-301, False)])  # fmt: skip
def test_verify_refuses_a_timestamp_outside_the_tolerance(skew: int, ok: bool) -> None:
    received = wh.headers(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY)
    assert wh.verify(SPEC_SECRET, received, SPEC_BODY, now=SPEC_TS + skew) is ok


def test_verify_refuses_another_body_and_another_secret() -> None:
    received = wh.headers(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY)
    assert not wh.verify(SPEC_SECRET, received, SPEC_BODY + b" ", now=SPEC_TS)
    other = wh.key_secret("sha256:" + "0" * 64)
    assert not wh.verify(other, received, SPEC_BODY, now=SPEC_TS)


def test_key_secrets_are_per_key_stable_and_well_formed() -> None:
    a, b = wh.key_secret("sha256:" + "a" * 64), wh.key_secret("sha256:" + "b" * 64)
    assert a != b and a == wh.key_secret("sha256:" + "a" * 64)
    assert a.startswith("whsec_") and len(wh.secret_bytes(a)) == 32


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!", "", "whsec_not base64"])
def test_a_secret_that_is_not_base64_is_a_config_error(secret: str) -> None:
    with pytest.raises(ConfigError, match="whsec_"):
        wh.secret_bytes(secret)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/jetgrid",
        "http://example.com:8080/x?y=1",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
    ],
)
def test_public_targets_are_accepted(url: str) -> None:
    assert wh.check_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9000/hook", "non-public address 127.0.0.1"),
        ("http://localhost/hook", "local name 'localhost'"),
        ("http://api.localhost/hook", "local name"),
        ("http://10.1.2.3/hook", "non-public"),
        ("http://192.168.0.5/hook", "non-public"),
        ("http://172.16.0.1/hook", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),  # cloud metadata
        ("http://[::1]/hook", "non-public"),
        ("http://[fe80::1]/hook", "non-public"),
        ("http://[::ffff:127.0.0.1]/hook", "non-public"),
        ("http://0.0.0.0/hook", "non-public"),
        ("http://100.64.0.1/hook", "non-public"),  # carrier-grade NAT
        ("http://224.0.0.1/hook", "non-public"),
    ],
)
def test_private_targets_are_refused_naming_the_url_and_the_setting(url: str, words: str) -> None:
    with pytest.raises(wh.TargetRefused) as err:
        wh.check_url(url, allow_private=False)
    assert words in str(err.value) and url in str(err.value)
    assert wh.ALLOW_SETTING in str(err.value)
    assert wh.check_url(url, allow_private=True) == url  # the operator may allow them


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("https:///nohost", "host name"),
        ("example.com/hook", "http:// or https://"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "x" * 3000, "at most 2048"),
    ],
)
def test_malformed_targets_are_refused_even_when_private_ones_are_allowed(
    url: str, words: str
) -> None:
    for allow in (False, True):
        with pytest.raises(wh.TargetRefused, match=words):
            wh.check_url(url, allow_private=allow)


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["93.184.216.34"], False),
        (["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"], False),
        (["93.184.216.34", "127.0.0.1"], True),  # any private answer refuses
        (["10.0.0.7"], True),
        (["fe80::1%eth0"], True),
        ([], True),
    ],
)
def test_resolved_addresses_are_checked_at_delivery(addresses: list[str], refused: bool) -> None:
    url = "https://hooks.example.com/x"
    if refused:
        with pytest.raises(wh.TargetRefused, match=r"hooks\.example\.com"):
            wh.check_addresses(url, addresses, allow_private=False)
    else:
        wh.check_addresses(url, addresses, allow_private=False)
    wh.check_addresses(url, addresses, allow_private=True)  # allowed: nothing is checked


@pytest.mark.parametrize(
    ("attempt", "status", "action", "delay"),
    [
        (1, 200, "done", 0.0),
        (1, 204, "done", 0.0),
        (3, 299, "done", 0.0),
        (1, 500, "retry", 5.0),
        (2, 503, "retry", 10.0),
        (3, None, "retry", 20.0),
        (4, 302, "retry", 40.0),  # a redirect is not followed: not delivered
        (1, 400, "retry", 5.0),
        (7, 500, "retry", 320.0),
        (8, 500, "give_up", 0.0),
        (8, 200, "done", 0.0),
        (9, None, "give_up", 0.0),
    ],
)
def test_attempt_outcome(attempt: int, status: int | None, action: str, delay: float) -> None:
    assert wh.attempt_outcome(attempt, status, max_attempts=8) == wh.Outcome(action, delay)  # type: ignore[arg-type]


def test_the_back_off_is_capped_at_ten_minutes() -> None:
    out = wh.attempt_outcome(40, 500, max_attempts=100)
    assert out == wh.Outcome("retry", 600.0)


def test_payload_is_compact_json_with_type_timestamp_and_data() -> None:
    body = wh.payload(
        "job.completed", {"id": "j1", "output": "hi"}, timestamp="2026-01-01T00:00:00Z"
    )
    assert json.loads(body) == {
        "type": "job.completed",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"id": "j1", "output": "hi"},
    }
    assert b" " not in body


def test_keys_secret_prints_the_secret_the_service_signs_a_keys_webhooks_with(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from jetgrid.cli import main
    from jetgrid.gateway.auth import hash_key

    keys = tmp_path / "keys"
    added = CliRunner().invoke(main, ["keys", "add", "ci", "--keys-file", str(keys)])
    key = added.stdout.strip().splitlines()[0]
    shown = CliRunner().invoke(main, ["keys", "secret", "ci", "--keys-file", str(keys)])
    assert shown.exit_code == 0 and shown.stdout.strip() == wh.key_secret(hash_key(key))
    missing = CliRunner().invoke(main, ["keys", "secret", "nope", "--keys-file", str(keys)])
    assert missing.exit_code != 0 and "No key named 'nope'" in missing.output


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"JETGRID_WEBHOOK_SECRET": "not-a-secret!"}, "'whsec_' followed by base64"),
        ({"JETGRID_RETENTION_FILES": "soon"}, "retention_files"),
        ({"JETGRID_WEBHOOK_ATTEMPTS": "0"}, "webhook_attempts"),
    ],
)
def test_bad_webhook_and_batch_settings_are_one_line_errors(
    env: dict[str, str], words: str
) -> None:
    from jetgrid.coordinator.settings import Settings

    with pytest.raises(ConfigError, match=words) as err:
        Settings.from_env(env)
    assert "not-a-secret" not in str(err.value)  # a secret is never repeated


@pytest.mark.parametrize(
    ("url", "address", "target", "host"),
    [
        ("https://hooks.example.com/a?b=1", "93.184.216.34", "https://93.184.216.34/a?b=1",
         "hooks.example.com"),
        ("http://hooks.example.com:8080/x", "2606:2800::1", "http://[2606:2800::1]:8080/x",
         "hooks.example.com:8080"),
        ("http://[2001:db8::1]/x", "2001:db8::1", "http://[2001:db8::1]/x", "[2001:db8::1]"),
        ("http://h.example/x", "fe80::1%eth0", "http://[fe80::1]/x", "h.example"),
    ],
)  # fmt: skip
def test_pinned_posts_to_the_checked_address_under_the_urls_host(
    url: str, address: str, target: str, host: str
) -> None:
    assert wh.pinned(url, address) == (target, host)


# Submitter proofs: the gateway's word that a key asked for a webhook on one job.
KEY_SECRET = "whsec_" + "a2V5LW9uZS1zZWNyZXQtYnl0ZXMtZm9yLXRlc3RzIQ=="
OTHER_SECRET = "whsec_" + "a2V5LXR3by1zZWNyZXQtYnl0ZXMtZm9yLXRlc3RzIQ=="
PROVEN = {"job_id": "j1", "submitter": "alice", "webhook": "https://hooks.example.com/a"}


def test_a_proof_holds_for_exactly_its_job_submitter_and_webhook() -> None:
    proof = wh.submitter_proof(KEY_SECRET, "j1", "alice", "https://hooks.example.com/a")
    assert proof.startswith("p1,")
    assert wh.proof_holds(KEY_SECRET, proof, **PROVEN)
    for field, other in [
        ("job_id", "j2"),
        ("submitter", "mallory"),
        ("webhook", "https://evil.example.com/a"),
        ("submitter", None),
        ("webhook", None),
    ]:
        assert not wh.proof_holds(KEY_SECRET, proof, **{**PROVEN, field: other})


@pytest.mark.parametrize("proof", [None, "", "p1,", "p1,AAAA", "p1,bm90IGEgcHJvb2Y=", "é"])
def test_a_missing_or_made_up_proof_does_not_hold(proof: str | None) -> None:
    assert not wh.proof_holds(KEY_SECRET, proof, **PROVEN)


def test_a_tampered_proof_or_another_keys_proof_does_not_hold() -> None:
    proof = wh.submitter_proof(KEY_SECRET, "j1", "alice", "https://hooks.example.com/a")
    flipped = proof[:-2] + ("B" if proof[-2] != "B" else "C") + proof[-1]
    assert not wh.proof_holds(KEY_SECRET, flipped, **PROVEN)
    assert not wh.proof_holds(OTHER_SECRET, proof, **PROVEN)
    theirs = wh.submitter_proof(OTHER_SECRET, "j1", "alice", "https://hooks.example.com/a")
    assert not wh.proof_holds(KEY_SECRET, theirs, **PROVEN)


def test_fields_cannot_be_shifted_between_each_other() -> None:
    a = wh.submitter_proof(KEY_SECRET, "j1", "alice", "https://h.example.com/x")
    assert not wh.proof_holds(
        KEY_SECRET, a, job_id="j1", submitter="alice\nhttps", webhook="//h.example.com/x"
    )


def test_a_proof_is_no_delivery_signature() -> None:
    """A proof is made under a key of its own: the webhook signature of the same content under
    the key's secret is a different value."""
    proof = wh.submitter_proof(KEY_SECRET, "j1", "alice", "https://hooks.example.com/a")
    content = json.dumps(["jetgrid.submitter", "j1", "alice", "https://hooks.example.com/a"])
    raw = hmac.new(wh.secret_bytes(KEY_SECRET), content.encode(), hashlib.sha256).digest()
    assert proof.removeprefix("p1,") != base64.b64encode(raw).decode()
