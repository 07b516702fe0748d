"""The words of ``teleposture-agent check`` around the results: status words, severities, headers, summary.

Their English texts are the msgids of the agent's catalogue (contexts ``status.``, ``severity.``,
``ui.``), beside the result messages of agent.policy.messages.
"""

from __future__ import annotations

from typing import Any, Mapping

from agent.i18n import Catalogue, catalogue, fill

STATUS_EN: Mapping[str, str] = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "not_applicable": "N/A",
                                "error": "ERROR"}
SEVERITY_EN: Mapping[str, str] = {"critical": "critical", "high": "high", "medium": "medium", "low": "low"}
UI_EN: Mapping[str, str] = {
    "header_rule": "Rule",
    "header_status": "Status",
    "header_reason": "Reason",
    "header_action": "What to do",
    "policy": "Policy: {title} ({id}, version {version})",
    "machine": "Computer: {hostname} ({os})",
    "error_action": "Run the check again as administrator (root). If the error stays, send the output of "
                    "`teleposture-agent check --record FILE` to IT support.",
    "summary_compliant": "Result: COMPLIANT. This computer meets the telework security policy.",
    "summary_not_compliant": "Result: NOT COMPLIANT. Fix what the table lists under \"What to do\".",
    "summary_error": "Result: NOT COMPLIANT. Some rules could not be checked, and a rule that cannot be checked "
                     "is not met.",
    # Said once under the table when a failure is shown without the service's record of when it started.
    "grace_unknown": "Note: grace periods were not taken into account ({why}). A failure is shown as FAIL here, "
                     "even one that the agent's service still counts as within its grace period (WARN).",
    "grace_why_not_enrolled": "the agent's service has recorded nothing in {path}: this computer is not enrolled, "
                              "or the service has not run yet",
    "grace_why_permission_denied": "only the agent's service can read {path}; run the check with sudo, or as "
                                   "administrator, to take them into account",
    "grace_why_state_unreadable": "the agent's state {path} cannot be read: {error}",
    "grace_why_replay": "a recording is judged without this computer's history of failures",
}
SECTIONS: Mapping[str, Mapping[str, str]] = {"status": STATUS_EN, "severity": SEVERITY_EN, "ui": UI_EN}


def catalogue_entries() -> Mapping[str, str]:
    """The English texts of the command line's words by their catalogue context."""
    return {f"{section}.{key}": text for section, table in SECTIONS.items() for key, text in table.items()}


class CommandLineTexts:
    """The command line's words in one language; ``catalogue`` also translates result messages
    (agent.policy.messages.render)."""

    def __init__(self, lang: str) -> None:
        self.catalogue: Catalogue = catalogue(lang)
        self.lang = lang
        self.rtl = self.catalogue.rtl

    def _word(self, section: str, key: str) -> str:
        english = SECTIONS[section].get(key)
        if english is None:
            return key
        return self.catalogue.text(f"{section}.{key}", english)

    def status(self, status: str) -> str:
        return self._word("status", status)

    def severity(self, severity: str) -> str:
        return self._word("severity", severity)

    def ui(self, key: str, **params: Any) -> str:
        return fill(self._word("ui", key), params)

    def pick(self, texts: Mapping[str, str]) -> str:
        """This language's text from a policy's {en, fr, ar} mapping (English if it is missing)."""
        return texts.get(self.lang) or texts.get("en") or next(iter(texts.values()), "")
