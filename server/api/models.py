"""Request and response models published in /openapi.json."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

# No NUL character (PostgreSQL cannot store it; SQLite would): the same answer on both databases.
NO_NUL = r"^[^\x00]*$"


class DeviceIdentity(BaseModel):
    hostname: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    machine_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    serial: str = Field(default="", max_length=200, pattern=NO_NUL)
    platform: Literal["linux", "darwin", "windows"]
    os_name: str = Field(default="", max_length=200, pattern=NO_NUL)
    os_version: str = Field(default="", max_length=100, pattern=NO_NUL)
    user: str = Field(default="", max_length=200, pattern=NO_NUL,
                      description="the laptop's main user, for search in the dashboard")


class ReenrolProof(BaseModel):
    """The previous device key's signature over the new public key (agent.protocol.reenrol_proof)."""

    device_id: str = Field(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z-]+$")
    timestamp: str = Field(min_length=1, max_length=20, pattern=r"^[0-9]+$")
    signature: str = Field(min_length=1, max_length=100, pattern=NO_NUL)


class EnrollRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    previous: Optional[ReenrolProof] = Field(
        default=None, description="when this machine re-enrols: its previous device key's consent; without it "
                                  "a re-enrolment of a known machine waits for an admin's approval")
    public_key: str = Field(min_length=1, max_length=100, description="Ed25519 public key, base64 (32 bytes)")
    device: DeviceIdentity


class PolicyBundle(BaseModel):
    payload: str = Field(description="canonical JSON policy document")
    signature: str
    key_id: str
    assignment: Optional[str] = Field(default=None, description="canonical JSON {schema, device_id, digest, counter}: "
                                                               "the policy assignment counter for this device")
    assignment_signature: Optional[str] = None


class EnrollResponse(BaseModel):
    device_id: str
    server_key: str = Field(description="the collector's Ed25519 public key, base64: pin it")
    policy: PolicyBundle
    intervals: dict[str, int]
    replaced: Optional[str] = Field(default=None, description="earlier device id of this machine, now replaced")
    state: Literal["active", "pending"] = Field(
        default="active", description="pending: this machine already has an active device; an admin must approve "
                                      "the replacement before reports are accepted")


class ReportBatch(BaseModel):
    """Documented shape of POST /api/v1/reports (the route parses the body itself, gzip allowed)."""

    envelopes: list[dict[str, str]] = Field(description="[{device_id, payload, signature}]")


class EnvelopeAnswer(BaseModel):
    status: str = Field(description="accepted | duplicate | rejected: <reason>")
    device_id: Optional[str] = None
    seq: Optional[int] = None
    reason: Optional[str] = None
    compliance: Optional[str] = None
    last_seq: Optional[int] = Field(None, description="the device's last accepted seq after this envelope")
    last_report_id: Optional[str] = Field(None, description="report_id of that report (duplicates): an agent "
                                                            "whose report_id differs numbers its report again")
    actions: Optional[list[dict[str, Any]]] = Field(
        default=None, description="running noncompliance ladders of the device: rule_id, severity, started_at, "
                                  "step, steps, last_action, next_action, next_at, block_at, blocked_since "
                                  "(docs/actions.md)")


class ReportResponse(BaseModel):
    results: list[EnvelopeAnswer]
    accepted: int
    duplicate: int
    rejected: int
    server_time: Optional[float] = Field(None, description="the collector's clock (epoch seconds): agents "
                                                           "measure their clock skew with it")
    access: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per accepted device: its signed access decision (docs/access.md)")


class Problem(BaseModel):
    detail: Any


class Ping(BaseModel):
    ok: bool


class RuleCounts(BaseModel):
    # "pass" is a Python keyword: the JSON key is "pass" through the alias.
    pass_: int = Field(default=0, alias="pass")
    warn: int = 0
    fail: int = 0
    not_applicable: int = 0
    error: int = 0

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class FleetSummaryModel(BaseModel):
    devices: int
    reporting: int
    by_compliance: dict[str, int]
    compliant_percent: Optional[float]
    stale: int
    never_seen: int
    revoked: int
    stale_after_seconds: float
    rules: dict[str, RuleCounts]
    counted_at: Optional[float] = Field(
        default=None, description="when the collector's maintenance job made these counts (epoch seconds): "
        "set for a fleet in scope above overview_live_limit devices, whose counts are kept rather than made "
        "on each request; null when counted live for this answer")
    counts_age_seconds: Optional[float] = Field(
        default=None, description="how old the counts are (now - counted_at); null when counted live. Devices "
        "that enrolled or reported since are not in them yet")


class DeviceModel(BaseModel):
    id: str
    hostname: str
    serial: str
    username: str
    platform: str
    os_name: str
    os_version: str
    agent_version: Optional[str]
    org_unit_id: int
    org_unit: str
    state: str
    compliance: str
    compliance_since: Optional[float]
    fail_count: int
    warn_count: int
    error_count: int
    disagreements: int
    last_seen: Optional[float]
    last_report_at: Optional[float]
    enrolled_at: float
    policy_ref: Optional[str]
    agent_policy_ref: Optional[str]
    revoked_at: Optional[float]
    replaced_by: Optional[str]
    replaces: Optional[str]
    stale: bool


class DevicePage(BaseModel):
    items: list[DeviceModel]
    total: int
    page: int
    per_page: int
    pages: int


class CheckModel(BaseModel):
    rule_id: str
    check: str
    severity: str
    status: str
    since: float
    failing_since: Optional[float]
    reason: str
    message: dict[str, Any]
    evidence: list[str]
    agent_status: Optional[str]
    disagrees: bool
    updated_at: float
    title: dict[str, str]
    remediation: dict[str, str]


class TransitionModel(BaseModel):
    rule_id: str
    check_id: str
    old_status: Optional[str]
    new_status: str
    at: float
    recorded_at: float
    seq: int
    reason: str
    # {key, params} of the engine's message catalogue, to show the reason in another language; null on
    # changes recorded before the collector kept it
    message: Optional[dict[str, Any]] = None


class TransitionPage(BaseModel):
    items: list[TransitionModel]
    total: int
    page: int
    per_page: int
    pages: int


class ReportModel(BaseModel):
    seq: int
    report_id: str
    created_at: float
    received_at: float
    compliance: str
    policy_ref: str


class DeviceDetail(BaseModel):
    device: DeviceModel
    checks: list[CheckModel]
    history: TransitionPage
    reports: list[ReportModel]


class EnrollTokenCreate(BaseModel):
    org_unit: str = Field(min_length=1, max_length=200)
    uses: Optional[int] = Field(default=None, ge=1, le=1_000_000, description="omit for unlimited uses until expiry")
    expires: str = Field(default="7d", max_length=20, description="lifetime: 3600, 90m, 12h, 7d, 2w")


class EnrollTokenModel(BaseModel):
    id: int
    prefix: str
    org_unit_id: int
    org_unit: str
    uses_allowed: Optional[int]
    uses: int
    expires_at: float
    created_at: float
    created_by: Optional[str]
    revoked_at: Optional[float]


class EnrollTokenCreated(EnrollTokenModel):
    token: str = Field(description="the secret: shown once, stored only hashed")


class PolicyVersionModel(BaseModel):
    id: int
    policy_id: str
    version: int
    digest: str
    title: str
    created_at: float
    created_by: Optional[str]
    latest: bool
    default: bool
    assigned_to: list[str]


class PolicyPush(BaseModel):
    document: str = Field(min_length=1, max_length=1_000_000, description="policy document, YAML or JSON text")
    make_default: bool = False


class PolicyPushed(BaseModel):
    id: int
    policy_id: str
    version: int
    digest: str
    created: bool


class PolicyAssign(BaseModel):
    policy_id: Optional[str] = Field(default=None, max_length=200, description="null: back to the default policy")


class EnrolmentSetting(BaseModel):
    replace_within_org_unit: bool = Field(
        description="true: a re-enrolment of a machine already in this org unit, with this org unit's token, replaces "
                    "the old device at once; false (default): it waits for an admin's approval unless the old device "
                    "key signed it")


class DefaultPolicy(BaseModel):
    policy_id: str = Field(min_length=1, max_length=200)


class OrgUnitModel(BaseModel):
    id: int
    name: str
    policy_id: Optional[str]
    created_at: float


class AuditEntry(BaseModel):
    id: int
    at: float
    actor: str
    action: str
    target: Optional[str]
    org_unit_id: Optional[int]
    outcome: str
    details: dict[str, Any]
    remote_addr: Optional[str]


class AuditPageModel(BaseModel):
    items: list[AuditEntry]
    total: int
    page: int
    per_page: int


class TrendDay(BaseModel):
    day: str
    devices: int
    compliant: int
    not_compliant: int
    error: int
    unknown: int
    stale: int


class RuleTrendDay(BaseModel):
    """One day of one rule's rollups, summed over the org units asked for (docs/collector.md)."""

    day: str
    rule_id: str
    passing: int
    warning: int
    failing: int
    errors: int
    not_applicable: int
    new_failures: int
    fixed: int
    fix_seconds_median: Optional[float]
    compliant_share: Optional[float]
