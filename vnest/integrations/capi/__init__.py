"""vnest as a Cluster API infrastructure (and control plane) provider.

- api.py: the VNestCluster kind, its CRD and the Cluster API contract fields it carries.
- provider.py: the controller that makes a VNestCluster's virtual cluster through vnest's
  lifecycle code and reports it back the way Cluster API's core controller reads it.
- certissuer.py: the part of cert-manager's API that `clusterctl init` and the providers use.
- repository.py: the clusterctl local repository and the clusterctl.yaml that names it.
- local.py: on the KWOK host (no real pods), the controllers run as local processes.
"""
