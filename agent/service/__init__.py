"""The agent service: enrolment, the scheduled check cycles, the outbox of signed reports and
their upload, the state directory, settings, notifications and access renewal."""
