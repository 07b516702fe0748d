"""Consequences of posture: the noncompliance ladder, the events outbox and its sinks (docs/actions.md).

- ``events``: event types, their OCSF shape, ``emit_event`` (write into the outbox in the caller's transaction);
- ``ladder``: steps per (device, rule), deadlines, blocks, exceptions; called by ingest in its transaction;
- ``sinks``: webhook (Standard Webhooks), e-mail (SMTP) and syslog (RFC 5424) senders;
- ``delivery``: claims pending deliveries and sends them, at least once and in order per device;
- ``worker``: the background loop (due ladder steps, expired exceptions, delivery) started by server.app.
"""
