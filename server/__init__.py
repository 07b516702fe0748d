"""Teleposture collector: receives signed posture reports, keeps fleet state, serves the dashboard and API."""
