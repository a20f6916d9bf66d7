"""What vnest plugs into: Cluster API (capi/), KubeVirt (kubevirt/)."""
