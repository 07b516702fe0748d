"""Linux firewall: recorded rulesets parse to the expected verdicts; on this machine, and in network
namespaces loaded with real rulesets, the verdict matches an independent reading of the kernel's ruleset."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.firewall import linux
from agent.probes import LiveHost, ProbeResult, Recording, ReplayHost
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["firewall"]
REPO = Path(__file__).resolve().parents[3]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


EXPECTED: List[Tuple[str, Dict[str, Any]]] = [
    ("debian-12/firewall-none-vm.json", {"enabled": False, "inbound_policy": "accept", "rule_count": 0}),
    ("debian-12/firewall-nftables-default-accept.json",
     {"enabled": False, "backend": "nftables", "inbound_policy": "accept", "rule_count": 0, "frontends": []}),
    ("debian-12/firewall-nftables-workstation-drop.json",
     {"enabled": True, "backend": "nftables", "inbound_policy": "drop", "rule_count": 4, "frontends": []}),
    ("ubuntu-22.04/firewall-iptables-accept-all.json",
     {"enabled": False, "backend": "iptables", "inbound_policy": "accept", "rule_count": 3, "frontends": []}),
    ("ubuntu-22.04/firewall-ufw-active.json",
     {"enabled": True, "backend": "ufw", "inbound_policy": "drop", "rule_count": 104,
      "frontends": [{"name": "ufw", "active": True, "default_incoming": "deny"}]}),
    ("ubuntu-24.04/firewall-ufw-active-nft.json",
     {"enabled": True, "backend": "ufw", "inbound_policy": "drop", "rule_count": 104,
      "frontends": [{"name": "ufw", "active": True, "default_incoming": "deny"}]}),
    ("ubuntu-24.04/firewall-ufw-inactive.json",
     {"enabled": False, "backend": "nftables", "inbound_policy": "accept", "rule_count": 0,
      "frontends": [{"name": "ufw", "active": False, "default_incoming": None}]}),
    ("fedora-40/firewall-firewalld-active.json",
     {"enabled": True, "backend": "firewalld", "inbound_policy": "reject", "rule_count": 57,
      "frontends": [{"name": "firewalld", "active": True}]}),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED, ids=[e[0].replace(".json", "") for e in EXPECTED])
def test_recorded_rulesets(fixture: str, expected: Dict[str, Any]) -> None:
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    assert {k: outcome.facts[k] for k in expected} == expected


def test_not_root_is_an_error_naming_the_probe() -> None:
    outcome = replay("debian-12/firewall-not-root-vm.json")
    assert outcome.state == ERROR
    assert (outcome.reason or "").startswith("nft -j list ruleset: exited with status 1: Operation not permitted")


def test_inactive_ufw_is_not_an_active_firewall() -> None:
    outcome = replay("ubuntu-24.04/firewall-ufw-inactive.json")
    assert outcome.facts["enabled"] is False
    assert "ufw: inactive" in outcome.evidence


def test_firewalld_verdict_comes_from_the_final_reject_through_goto_chains() -> None:
    outcome = replay("fedora-40/firewall-firewalld-active.json")
    assert "IPv4 unsolicited inbound: reject (inet firewalld filter_INPUT)" in outcome.evidence


# -- pure judgement -------------------------------------------------------------------------------

def _chain(name: str, rules: List[linux.Rule], hook: Any = None, policy: Any = None) -> linux.Chain:
    return linux.Chain("inet", "t", name, hook=hook, chain_type="filter" if hook else None, policy=policy, rules=rules)


def _ruleset(*chains: linux.Chain) -> linux.Ruleset:
    return {(c.family, c.table, c.name): c for c in chains}


CATCH_ALL_CASES = [
    ("policy-drop", [], "drop", "drop"),
    ("final-reject", [linux.Rule(False, "accept"), linux.Rule(True, "reject")], "accept", "reject"),
    ("only-conditional-drops", [linux.Rule(False, "drop")], "accept", "accept"),
    ("unconditional-accept-first", [linux.Rule(True, "accept"), linux.Rule(True, "drop")], "accept", "accept"),
    ("jump-to-dropping-chain", [linux.Rule(True, "jump", "deny_all")], "accept", "drop"),
    ("jump-to-chain-with-conditional-return", [linux.Rule(True, "jump", "not_local")], "accept", "accept"),
    ("goto-falls-back-to-policy", [linux.Rule(True, "goto", "empty"), linux.Rule(True, "drop")], "accept", "accept"),
]


@pytest.mark.parametrize(("rules", "policy", "verdict"), [c[1:] for c in CATCH_ALL_CASES], ids=[c[0] for c in CATCH_ALL_CASES])
def test_inbound_verdict_table(rules: List[linux.Rule], policy: str, verdict: str) -> None:
    ruleset = _ruleset(
        _chain("input", rules, hook="input", policy=policy),
        _chain("deny_all", [linux.Rule(True, None), linux.Rule(True, "drop")]),
        _chain("not_local", [linux.Rule(False, "return"), linux.Rule(True, "drop")]),
        _chain("empty", []),
    )
    assert linux.inbound_verdicts(ruleset)["ipv4"][0] == verdict


def test_ipv4_only_filtering_is_mixed_when_ipv6_is_configured() -> None:
    chain = linux.Chain("ip", "filter", "INPUT", hook="input", chain_type="filter", policy="drop")
    facts, evidence = linux.decide(_ruleset(chain), "iptables", [], ipv6_on=True)
    assert facts["enabled"] is False and facts["inbound_policy"] == "mixed"
    facts, _ = linux.decide(_ruleset(chain), "iptables", [], ipv6_on=False)
    assert facts["enabled"] is True and facts["inbound_policy"] == "drop"


def test_iptables_save_counters_and_comments() -> None:
    text = ("*filter\n:INPUT ACCEPT [10:800]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "[5:300] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
            '[7:420] -A INPUT -m comment --comment "catch all" -j REJECT --reject-with icmp-host-prohibited\n'
            "COMMIT\n")
    ruleset = linux.parse_iptables_save(text, "ip")
    rules = ruleset[("ip", "filter", "INPUT")].rules
    assert [(r.unconditional, r.verdict) for r in rules] == [(False, "accept"), (True, "reject")]
    assert linux.inbound_verdicts(ruleset)["ipv4"][0] == "reject"


@pytest.mark.parametrize(("text", "active", "incoming"), [
    ("Status: inactive\n", False, None),
    ("Status: active\nLogging: on (low)\nDefault: reject (incoming), allow (outgoing), deny (routed)\n", True, "reject"),
], ids=["inactive", "active-reject"])
def test_ufw_status(text: str, active: bool, incoming: Any) -> None:
    parsed = linux.parse_ufw_status(text)
    assert parsed["active"] is active and parsed["default_incoming"] == incoming


def test_ufw_status_garbage_and_firewalld_state() -> None:
    with pytest.raises(ParseError):
        linux.parse_ufw_status("ERROR: You need to be root to run this script\n")
    assert linux.parse_firewalld_state("not running\n", 252)["active"] is False
    with pytest.raises(ParseError):
        linux.parse_firewalld_state("", 0)


# -- garbage never crashes ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (linux.parse_nft_json, lambda t: linux.parse_iptables_save(t, "ip"), linux.parse_ufw_status):
        try:
            parse(text)
        except ParseError:
            pass


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                            ["nftables", "metainfo", "chain", "rule", "family", "table", "name", "chain", "expr",
                             "hook", "policy", "type", "jump", "target", "drop"]), inner, max_size=5), max_leaves=30)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSONISH)
def test_structured_garbage_from_nft_is_an_error_outcome(value: Any) -> None:
    rec = Recording.load(FIXTURES / "debian-12/firewall-nftables-workstation-drop.json")
    key = json.dumps(["run", list(linux.NFT_ARGV)], ensure_ascii=False)
    rec.probes[key] = ProbeResult("run", tuple(linux.NFT_ARGV), stdout=json.dumps(value))
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state in (OK, ERROR)


def test_truncated_nft_output_is_an_error() -> None:
    rec = Recording.load(FIXTURES / "fedora-40/firewall-firewalld-active.json")
    key = json.dumps(["run", list(linux.NFT_ARGV)], ensure_ascii=False)
    whole = rec.probes[key].stdout
    rec.probes[key] = ProbeResult("run", tuple(linux.NFT_ARGV), stdout=whole[: len(whole) // 2])
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state == ERROR and "nft -j list ruleset" in (outcome.reason or "")


# -- independent reading of the kernel ruleset ------------------------------------------------------

def independent_verdict(nft_text: str, legacy_save: str, ipv6_on: bool) -> bool:
    """Read `nft list ruleset` text (not JSON) and iptables-legacy-save: is unsolicited inbound dropped?

    Deliberately simpler than the collector: an input filter chain filters when its policy is drop
    or its last statement is a bare drop/reject.
    """
    filtered = set()
    family = ""
    in_input = False
    policy = "accept"
    last = ""
    for raw in nft_text.splitlines():
        line = raw.strip()
        table = re.match(r"table (\w+) ", line)
        if table:
            family = table.group(1)
        elif line.startswith("chain "):
            in_input, policy, last = False, "accept", ""
        elif line.startswith("type filter hook input"):
            in_input = True
            found = re.search(r"policy (\w+);", line)
            policy = found.group(1) if found else "accept"
        elif line == "}" and in_input:
            catch_all = re.fullmatch(r"(counter packets \d+ bytes \d+ )?(drop|reject.*)", last)
            if policy == "drop" or catch_all:
                filtered.update({"ip": {"4"}, "ip6": {"6"}, "inet": {"4", "6"}}.get(family, set()))
            in_input = False
        elif line and in_input:
            last = line
    chain_policy = re.search(r"^:INPUT (\w+)", legacy_save, re.M)
    last_rule = [ln for ln in legacy_save.splitlines() if ln.startswith("-A INPUT ")]
    if (chain_policy and chain_policy.group(1) == "DROP") or (last_rule and re.fullmatch(
            r"-A INPUT -j (DROP|REJECT)( .*)?", last_rule[-1])):
        filtered.add("4")
    return "4" in filtered and ("6" in filtered or not ipv6_on)


def _ipv6_on() -> bool:
    try:
        with open("/proc/net/if_inet6", encoding="utf-8") as handle:
            return any(line.split()[-1] != "lo" for line in handle if line.split())
    except OSError:
        return False


needs_root_nft = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")


@needs_root_nft
def test_this_machine_matches_an_independent_reading() -> None:
    outcome = run_collector(FAMILY, LiveHost())
    assert outcome.state == OK, outcome.reason
    nft_text = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    legacy = ""
    try:
        with open("/proc/net/ip_tables_names", encoding="utf-8") as handle:
            if handle.read().strip() and shutil.which("iptables-legacy-save"):
                legacy = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True, check=True).stdout
    except OSError:
        pass
    assert outcome.facts["enabled"] is independent_verdict(nft_text, legacy, _ipv6_on())


WORKSTATION = """table inet filter {
  chain input { type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
    counter drop
  }
}
"""
FIREWALLD_LIKE = """table inet fw {
  chain zones { iifname "eth0" goto public; goto public; }
  chain public { tcp dport 22 accept; meta l4proto { icmp, ipv6-icmp } accept; }
  chain input { type filter hook input priority filter + 10; policy accept;
    ct state { established, related } accept
    iifname "lo" accept
    jump zones
    reject with icmpx admin-prohibited
  }
}
"""
ACCEPT_ALL = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""
IPTABLES_DROP = ACCEPT_ALL.replace(":INPUT ACCEPT", ":INPUT DROP")


@pytest.fixture()
def netns() -> Iterator[str]:
    name = f"tp-fw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in_netns(name: str, argv: List[str], stdin: str = "") -> str:
    done = subprocess.run(["ip", "netns", "exec", name, *argv], input=stdin, capture_output=True, text=True,
                          check=True, timeout=30, cwd=REPO)
    return done.stdout


COLLECT = ("import json; from agent.checks.collectors import REGISTRY; from agent.checks.base import run_collector; "
           "from agent.probes import LiveHost; print(json.dumps(run_collector(REGISTRY['firewall'], LiveHost()).to_json()))")


@pytest.mark.root
@needs_root_nft
@pytest.mark.parametrize(("loader", "ruleset", "enabled", "policy"), [
    (["nft", "-f", "-"], WORKSTATION, True, "drop"),
    (["nft", "-f", "-"], FIREWALLD_LIKE, True, "reject"),
    (["iptables-nft-restore"], ACCEPT_ALL, False, "accept"),
    (["iptables-nft-restore"], IPTABLES_DROP, True, "drop"),
], ids=["nft-policy-drop", "nft-final-reject-through-goto", "iptables-nft-accept-all", "iptables-nft-input-drop"])
def test_real_rulesets_in_a_network_namespace(netns: str, loader: List[str], ruleset: str, enabled: bool,
                                              policy: str) -> None:
    if not shutil.which(loader[0]):
        pytest.skip(f"{loader[0]} not installed")
    _in_netns(netns, loader, ruleset)
    outcome = json.loads(_in_netns(netns, [sys.executable, "-c", COLLECT]).strip())
    assert outcome["state"] == "ok", outcome["reason"]
    # a fresh namespace has only lo: IPv6 counts as not configured there
    independent = independent_verdict(_in_netns(netns, ["nft", "list", "ruleset"]), "", ipv6_on=False)
    assert outcome["facts"]["enabled"] is independent is enabled
    assert outcome["facts"]["inbound_policy"] == policy


def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "rec.json")
