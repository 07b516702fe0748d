"""The collector's policy assignment counter (server/store/assignment.py), on SQLite and PostgreSQL:
every change of the applying policy raises it in the same transaction, and each bundle carries it signed
for the one device that asked."""

from __future__ import annotations

from typing import Any

import pytest

from agent import protocol
from agent.policy import baseline
from benchmarks.collector_sim import SimDevice
from server.store import policies
from tests.server.conftest import Collector


@pytest.fixture(autouse=True)
def _forget_parsed_policies() -> None:
    # The store caches parsed versions per primary key for the process (versions are immutable in one
    # database); tests reuse primary keys across database copies, so a version another test pushed
    # under the same key must not answer here.
    with policies._parsed_lock:
        policies._parsed.clear()


def _fetch(collector: Collector, device: SimDevice) -> tuple[dict[str, Any], int]:
    response = collector.client.get("/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy"))
    assert response.status_code == 200, response.text
    bundle = response.json()
    server_key = protocol.load_public_key(_server_key(collector))
    assert device.device_id
    counter = protocol.open_assignment(bundle, server_key, device.device_id)
    assert counter is not None
    return bundle, counter


def _server_key(collector: Collector) -> str:
    return protocol.public_key_b64(protocol.load_private_key(collector.settings.server_key_path))


def _push(collector: Collector, policy_id: str, version: int) -> None:
    document = baseline().to_json()
    document.update(id=policy_id, version=version)
    answer = collector.admin("POST", "/policies", json={"document": protocol.canonical_json(document)})
    assert answer.status_code in (200, 201), answer.text


def test_every_assignment_change_raises_the_counter(collector: Collector) -> None:
    device, other = collector.enroll(), collector.enroll()
    bundle, start = _fetch(collector, device)
    assert protocol.open_assignment(bundle, protocol.load_public_key(_server_key(collector)),
                                    str(device.device_id)) == start
    with pytest.raises(protocol.ProtocolError, match="another device"):
        protocol.open_assignment(bundle, protocol.load_public_key(_server_key(collector)), str(other.device_id))
    _push(collector, "finance-telework", 1)
    _, after_push = _fetch(collector, device)
    assert after_push == start + 1
    assert collector.admin("PUT", "/org-units/Finance/policy", json={"policy_id": "finance-telework"}).status_code == 200
    assigned, after_assign = _fetch(collector, device)
    assert after_assign == start + 2 and '"id":"finance-telework"' in assigned["payload"]
    _push(collector, "finance-telework", 1)  # the same document again: nothing changes, no new count
    assert _fetch(collector, device)[1] == after_assign
    assert collector.admin("PUT", "/org-units/Finance/policy", json={"policy_id": None}).status_code == 200
    back, after_back = _fetch(collector, device)
    assert after_back == start + 3 and '"id":"finance-telework"' not in back["payload"]
