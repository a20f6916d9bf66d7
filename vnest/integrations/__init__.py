"""Integrations with host add-ons: KubeVirt and Cluster API are issues 13 and 14, still to come."""
