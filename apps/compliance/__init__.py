"""Compliance: consent, explanations, review, erasure, bias reports (the compliance issue)."""
