"""`teleposture-gate verify` and the gate's settings: exit codes and clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent import protocol
from gate import cli
from gate import decision as tokens
from gate.settings import GateSettingsError, load

FP = "cd" * 32


@pytest.fixture(scope="module")
def key():
    return protocol.generate_private_key()


def token(key, decision: str = "allow", lifetime: float = 900, now: float | None = None) -> str:
    return tokens.sign(key, server_key_id="k", device_id="dev-9", device_key_id="dk", decision=decision,
                       since=time.time(), now=now or time.time(), lifetime=lifetime, fingerprints=[FP])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_verify_exit_codes(key, capsys: pytest.CaptureFixture[str]) -> None:
    public = protocol.public_key_b64(key)
    code, out = run(capsys, "--public-key", public, "verify", "--fingerprint", FP, token(key))
    assert code == 0 and out["decision"] == "allow" and out["device_id"] == "dev-9"
    code, out = run(capsys, "--public-key", public, "verify", token(key, "deny"))
    assert code == 1 and out["decision"] == "deny"
    code, out = run(capsys, "--public-key", public, "verify", "--fingerprint", "ef" * 32, token(key))
    assert code == 1 and out == {"valid": False, "code": "wrong_certificate",
                                 "error": "the decision was issued for another certificate"}
    code, out = run(capsys, "--public-key", public, "verify", token(key, now=time.time() - 3600))
    assert code == 1 and out["code"] == "expired"
    other = protocol.public_key_b64(protocol.generate_private_key())
    code, out = run(capsys, "--public-key", other, "verify", token(key))
    assert code == 1 and out["code"] == "bad_signature"


def test_bad_settings_are_named(tmp_path: Path, key, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", "x"]) == 2
    assert "public_key" in capsys.readouterr().err
    config = tmp_path / "gate.toml"
    config.write_text('public_key = "abc"\n')
    with pytest.raises(GateSettingsError, match="public_key"):
        load(config, {}, environ={})
    config.write_text(f'public_key = "{protocol.public_key_b64(key)}"\nrecheck_intervall = "30s"\n')
    with pytest.raises(GateSettingsError, match="unknown setting.*recheck_intervall"):
        load(config, {}, environ={})
    config.write_text(f'public_key = "{protocol.public_key_b64(key)}"\nrecheck_interval = "5m"\n')
    with pytest.raises(GateSettingsError, match="within 60 s"):
        load(config, {}, environ={})
    config.write_text(f'public_key = "{protocol.public_key_b64(key)}"\ncollector_url = "http://collector.example.org"\n')
    with pytest.raises(GateSettingsError, match="plain http"):
        load(config, {}, environ={})
    config.write_text(f'public_key = "{protocol.public_key_b64(key)}"\n')
    settings = load(config, {}, environ={"TELEPOSTURE_GATE_FAIL_OPEN": "4h", "TELEPOSTURE_GATE_LANGUAGE": "ar"})
    assert (settings.fail_open, settings.language, settings.recheck_interval) == (14400.0, "ar", 30.0)
