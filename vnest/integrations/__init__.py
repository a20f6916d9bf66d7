"""Integrations with host add-ons such as KubeVirt and Cluster API (not built yet)."""
