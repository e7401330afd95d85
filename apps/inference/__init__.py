"""Inference: predict API and forms, routing, backends, decision records (the inference issue)."""
