"""Hybrid Inference Router sidecar: decides, per request, which model endpoint serves it."""
