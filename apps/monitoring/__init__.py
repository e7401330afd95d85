"""Monitoring: live dashboard, drift, alerts, incident controls (the monitoring issue)."""
