"""Talking to Kubernetes API servers (host and virtual) with raw JSON."""
