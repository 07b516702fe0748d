"""Firewall on linux: collector (probes) and pure parsers.

The kernel's loaded ruleset is the truth; front-ends (ufw, firewalld) are only evidence and names.
Inbound traffic is filtered when some base chain on the ``input`` hook (family ip/ip6/inet)
either has a drop policy, or has an accept policy but ends in a catch-all drop/reject rule
(firewalld's ``reject with icmpx admin-prohibited``, an iptables ``-A INPUT -j REJECT``),
directly or through an unconditional jump. IPv4 and IPv6 are judged separately.

Sources: ``nft -j list ruleset`` when nft exists (it also shows rules iptables-nft loaded), plus
``iptables-legacy-save`` when legacy x_tables are loaded (``/proc/net/ip_tables_names``);
``iptables-save``/``ip6tables-save`` on machines without nft. Reading a ruleset needs root.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.checks._values import load_json
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import NOT_FOUND, Host

CHECK = "firewall"

NFT_ARGV = ["nft", "-j", "list", "ruleset"]
TERMINAL = ("accept", "drop", "reject")
# nft expressions that neither match nor decide: a rule made only of these plus a verdict is catch-all.
NFT_PASSIVE = frozenset({"counter", "log"})


@dataclass(frozen=True)
class Rule:
    unconditional: bool
    verdict: Optional[str]  # accept | drop | reject | jump | goto | return | None (no verdict)
    target: Optional[str] = None


@dataclass
class Chain:
    family: str  # ip | ip6 | inet | bridge | arp | netdev
    table: str
    name: str
    hook: Optional[str] = None
    chain_type: Optional[str] = None
    policy: Optional[str] = None
    rules: List[Rule] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.family} {self.table} {self.name}"


Ruleset = Dict[Tuple[str, str, str], Chain]


# -- nft -j --------------------------------------------------------------------------------------

def _nft_rule(exprs: Any) -> Rule:
    if not isinstance(exprs, list):
        raise ParseError("nft -j: a rule's 'expr' should be a list")
    verdict: Optional[str] = None
    target: Optional[str] = None
    unconditional = True
    for item in exprs:
        if not isinstance(item, dict) or len(item) != 1:
            raise ParseError(f"nft -j: expected one-key expression objects, found {str(item)[:60]!r}")
        (kind, value), = item.items()
        if kind in ("accept", "drop", "reject", "return"):
            verdict = kind
        elif kind in ("jump", "goto"):
            verdict = kind
            target = value.get("target") if isinstance(value, dict) else None
            if not isinstance(target, str):
                raise ParseError(f"nft -j: {kind} without a target chain")
        elif kind not in NFT_PASSIVE:
            unconditional = False  # match, vmap, limit, xt ...: decides only for some packets
    return Rule(unconditional=unconditional, verdict=verdict, target=target)


def parse_nft_json(text: str) -> Ruleset:
    """``nft -j list ruleset`` -> chains keyed by (family, table, name)."""
    data = load_json(text, "nft -j list ruleset", dict)
    if not isinstance(data.get("nftables"), list):
        raise ParseError("nft -j list ruleset: expected an object with an 'nftables' list")
    if not any(isinstance(i, dict) and "metainfo" in i for i in data["nftables"]):
        raise ParseError("nft -j list ruleset: no metainfo object; output looks truncated or foreign")
    chains: Ruleset = {}
    for item in data["nftables"]:
        if not isinstance(item, dict):
            raise ParseError("nft -j list ruleset: expected objects in the 'nftables' list")
        if "chain" in item:
            raw = item["chain"]
            key = _nft_key(raw, "name")
            chains[key] = Chain(key[0], key[1], key[2], hook=raw.get("hook"), chain_type=raw.get("type"),
                                policy=raw.get("policy"))
        elif "rule" in item:
            raw = item["rule"]
            key = _nft_key(raw, "chain")
            chain = chains.get(key)
            if chain is None:  # nft lists a chain before its rules; be lenient anyway
                chain = chains[key] = Chain(key[0], key[1], key[2])
            chain.rules.append(_nft_rule(raw.get("expr", [])))
    return chains


def _nft_key(raw: Any, name_field: str) -> Tuple[str, str, str]:
    if not isinstance(raw, dict):
        raise ParseError("nft -j list ruleset: a chain or rule is not an object")
    key = (raw.get("family"), raw.get("table"), raw.get(name_field))
    if not all(isinstance(k, str) and k for k in key):
        raise ParseError(f"nft -j list ruleset: expected family, table and {name_field}, found {str(raw)[:80]!r}")
    return key  # type: ignore[return-value]


# -- iptables-save -------------------------------------------------------------------------------

def _iptables_rule(tokens: List[str]) -> Rule:
    rest: List[str] = []
    i = 0
    while i < len(tokens):
        # comments and counters neither match nor decide
        if tokens[i] == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "comment":
            i += 2
            continue
        if tokens[i] == "--comment" and i + 1 < len(tokens):
            i += 2
            continue
        if tokens[i] == "-c" and i + 2 < len(tokens):
            i += 3
            continue
        rest.append(tokens[i])
        i += 1
    verdict: Optional[str] = None
    target: Optional[str] = None
    jump_at = next((n for n, t in enumerate(rest) if t in ("-j", "-g", "--jump", "--goto")), None)
    if jump_at is not None and jump_at + 1 < len(rest):
        name = rest[jump_at + 1]
        if name.lower() in ("accept", "drop", "reject", "return"):
            verdict = name.lower()
        elif name in ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE", "AUDIT"):
            verdict = None  # non-terminating targets
        else:
            verdict = "goto" if rest[jump_at] in ("-g", "--goto") else "jump"
            target = name
    unconditional = jump_at == 0 and (verdict == "reject" or len(rest) == 2)
    return Rule(unconditional=unconditional, verdict=verdict, target=target)


def parse_iptables_save(text: str, family: str) -> Ruleset:
    """iptables-save / ip6tables-save output -> chains of the filter table (family ip or ip6)."""
    chains: Ruleset = {}
    table: Optional[str] = None
    saw_table = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table, saw_table = line[1:], True
            continue
        if line == "COMMIT":
            table = None
            continue
        if table is None:
            raise ParseError(f"iptables-save line {number}: expected '*table', ':chain', '-A' or COMMIT, "
                             f"found {line[:60]!r}")
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ParseError(f"iptables-save line {number}: malformed chain line {line[:60]!r}")
            hook = parts[0].lower() if parts[0] in ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING") else None
            policy = parts[1].lower() if parts[1] != "-" else None
            chains[(family, table, parts[0])] = Chain(family, table, parts[0], hook=hook,
                                                      chain_type="filter" if table == "filter" else table,
                                                      policy=policy)
            continue
        if line.startswith("["):  # iptables-save -c: "[packets:bytes] -A CHAIN ..."
            line = line.split("]", 1)[-1].strip()
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise ParseError(f"iptables-save line {number}: cannot split {line[:60]!r}: {exc}") from exc
        if len(tokens) < 2 or tokens[0] not in ("-A", "--append"):
            raise ParseError(f"iptables-save line {number}: expected '-A CHAIN ...', found {line[:60]!r}")
        key = (family, table, tokens[1])
        if key not in chains:
            raise ParseError(f"iptables-save line {number}: rule for undeclared chain {tokens[1]!r}")
        chains[key].rules.append(_iptables_rule(tokens[2:]))
    if text.strip() and not saw_table:
        raise ParseError("iptables-save: expected '*table' sections, found none")
    return chains


# -- judgement -----------------------------------------------------------------------------------

def chain_outcome(ruleset: Ruleset, chain: Chain, seen: Tuple[str, ...] = ()) -> Optional[str]:
    """What a chain does with traffic no earlier rule matched: its first catch-all verdict.

    None when the chain falls through (for a base chain that means its policy applies). In a
    called chain, a conditional ``return`` before the catch-all sends part of the traffic back to
    the caller, so that chain cannot be said to decide for all traffic (ufw's ``ufw-not-local``).
    """
    if chain.name in seen:
        return None  # a jump loop; nft refuses these, be safe anyway
    called = bool(seen)
    for rule in chain.rules:
        if rule.verdict is None:
            continue
        if not rule.unconditional:
            if called and rule.verdict == "return":
                return None
            continue
        if rule.verdict in TERMINAL:
            return rule.verdict
        if rule.verdict == "return":
            return None
        if rule.verdict in ("jump", "goto") and rule.target:
            callee = ruleset.get((chain.family, chain.table, rule.target))
            decided = chain_outcome(ruleset, callee, seen + (chain.name,)) if callee else None
            if decided is not None:
                return decided
            if rule.verdict == "goto":
                return None
    return None


def input_chains(ruleset: Ruleset) -> List[Chain]:
    return [c for c in ruleset.values()
            if c.hook == "input" and c.chain_type == "filter" and c.family in ("ip", "ip6", "inet")]


def inbound_verdicts(ruleset: Ruleset) -> Dict[str, Tuple[str, str]]:
    """Per address family (ipv4, ipv6): (drop|reject|accept, deciding chain label)."""
    result: Dict[str, Tuple[str, str]] = {}
    for chain in input_chains(ruleset):
        decided = chain_outcome(ruleset, chain)
        verdict = decided or chain.policy or "accept"
        families = {"ip": ("ipv4",), "ip6": ("ipv6",), "inet": ("ipv4", "ipv6")}[chain.family]
        for fam in families:
            # Any base chain that drops unsolicited traffic filters it, whatever the others accept.
            if fam not in result or (result[fam][0] == "accept" and verdict != "accept"):
                result[fam] = (verdict, chain.label)
    return result


def parse_ufw_status(text: str) -> Dict[str, Any]:
    """``ufw status verbose``: Status line and, when active, the default incoming policy."""
    status: Optional[str] = None
    incoming: Optional[str] = None
    for line in text.splitlines():
        if line.startswith("Status:"):
            status = line.split(":", 1)[1].strip()
        elif line.startswith("Default:"):
            for part in line.split(":", 1)[1].split(","):
                words = part.split()
                if len(words) >= 2 and words[1] == "(incoming)":
                    incoming = words[0]
    if status not in ("active", "inactive"):
        raise ParseError(f"ufw status verbose: expected 'Status: active|inactive', found {text[:60]!r}")
    return {"name": "ufw", "active": status == "active", "default_incoming": incoming}


def parse_firewalld_state(stdout: str, rc: Optional[int]) -> Dict[str, Any]:
    """``firewall-cmd --state``: 'running' (rc 0) or 'not running' (rc 252)."""
    state = stdout.strip()
    if state == "running" and rc == 0:
        return {"name": "firewalld", "active": True}
    if state == "not running":
        return {"name": "firewalld", "active": False}
    raise ParseError(f"firewall-cmd --state: expected 'running' or 'not running', found {state[:60]!r}")


def ipv6_configured(if_inet6: Optional[str]) -> bool:
    """/proc/net/if_inet6 lists IPv6 addresses; absent or only loopback means IPv6 is off."""
    if if_inet6 is None:
        return False
    return any(line.split()[-1] != "lo" for line in if_inet6.splitlines() if line.split())


def decide(ruleset: Ruleset, source: str, frontends: Sequence[Mapping[str, Any]],
           ipv6_on: bool) -> Tuple[Dict[str, Any], List[str]]:
    """Facts and evidence from a ruleset and front-end states (pure)."""
    verdicts = inbound_verdicts(ruleset)
    v4 = verdicts.get("ipv4", ("accept", "no input chain"))
    v6 = verdicts.get("ipv6", ("accept", "no input chain"))
    # The verdict lines first: reports show the first evidence line beside the status.
    evidence = [f"IPv4 unsolicited inbound: {v4[0]} ({v4[1]})",
                f"IPv6 unsolicited inbound: {v6[0]} ({v6[1]})" + ("" if ipv6_on else " (IPv6 not configured)")]
    evidence += [f"{source}: input chain {c.label}: policy {c.policy or '-'}, {len(c.rules)} rules"
                 for c in input_chains(ruleset)]
    filtered4 = v4[0] in ("drop", "reject")
    filtered6 = v6[0] in ("drop", "reject") or not ipv6_on
    if filtered4 and filtered6:
        inbound = v4[0]
    elif filtered4 or v6[0] in ("drop", "reject"):
        inbound = "mixed"
    else:
        inbound = "accept"
    enabled = filtered4 and filtered6
    active = [f["name"] for f in frontends if f.get("active")]
    tables = {k[1] for k in ruleset}
    if "ufw" in active or any(name.startswith("ufw-") for _, _, name in ruleset):
        backend = "ufw"
    elif "firewalld" in active or "firewalld" in tables:
        backend = "firewalld"
    else:
        backend = source
    for front in frontends:
        if front.get("active") and not enabled:
            evidence.append(f"{front['name']} reports active but the loaded ruleset does not filter all inbound traffic")
    facts = {
        "enabled": enabled,
        "backend": backend,
        "inbound_policy": inbound,
        "rule_count": sum(len(c.rules) for c in ruleset.values()),
        "frontends": [dict(f) for f in frontends],
    }
    return facts, evidence


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    ruleset: Ruleset = {}
    if host.which("nft"):
        probe = host.run(NFT_ARGV, timeout=10)
        if not probe.ok:
            return CheckOutcome.probe_failed(CHECK, probe)
        ruleset.update(parse_nft_json(probe.stdout))
        source = "nftables"
        legacy = host.read_text("/proc/net/ip_tables_names")
        if legacy.ok and legacy.stdout.strip() and host.which("iptables-legacy-save"):
            # Legacy x_tables rules are invisible to nft: read them too.
            for argv, family in ((["iptables-legacy-save"], "ip"), (["ip6tables-legacy-save"], "ip6")):
                saved = host.run(argv, timeout=10)
                if not saved.ok:
                    return CheckOutcome.probe_failed(CHECK, saved)
                for key, chain in parse_iptables_save(saved.stdout, family).items():
                    chain.table = f"legacy-{chain.table}"
                    ruleset[(key[0], chain.table, key[2])] = chain
            source = "nftables+iptables-legacy"
    else:
        source = "iptables"
        for argv, family in ((["iptables-save"], "ip"), (["ip6tables-save"], "ip6")):
            saved = host.run(argv, timeout=10)
            if saved.error == NOT_FOUND and family == "ip":
                return CheckOutcome.error(CHECK, message("firewall_no_tool", failure=saved.failure_message()))
            if not saved.ok:
                return CheckOutcome.probe_failed(CHECK, saved)
            ruleset.update(parse_iptables_save(saved.stdout, family))

    frontends: List[Dict[str, Any]] = []
    if host.which("ufw"):
        ufw = host.run(["ufw", "status", "verbose"], timeout=10)
        if ufw.ok:
            frontends.append(parse_ufw_status(ufw.stdout))
        else:
            frontends.append({"name": "ufw", "active": None, "error": ufw.describe_failure()})
    if host.which("firewall-cmd"):
        state = host.run(["firewall-cmd", "--state"], timeout=10)
        if state.error is None and state.stdout.strip() in ("running", "not running"):
            frontends.append(parse_firewalld_state(state.stdout, state.rc))
        else:
            frontends.append({"name": "firewalld", "active": None, "error": state.describe_failure()})
    for front in frontends:
        evidence.append(f"{front['name']}: " + ("active" if front.get("active") else
                                                 "inactive" if front.get("active") is False else
                                                 str(front.get("error"))))

    if6 = host.read_text("/proc/net/if_inet6")
    facts, decided = decide(ruleset, source, frontends, ipv6_configured(if6.stdout if if6.ok else None))
    return CheckOutcome(CHECK, facts=facts, evidence=decided + evidence)
