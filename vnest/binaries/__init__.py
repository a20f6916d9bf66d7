"""The pinned upstream binaries, built from Go modules into a cache outside the repo.

``ensure()`` returns a :class:`Binaries` whose attributes are paths to
kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm,
kine and etcd; it builds them first when the cache for the current pins is empty.
``ensure_conformance()`` does the same, on demand only, for Kubernetes' e2e.test and
ginkgo (conformance runs).
"""

from vnest.binaries.build import Binaries, bin_dir, ensure, helm, pins
from vnest.binaries.conformance import Conformance, conformance_dir, ensure_conformance

__all__ = [
    "Binaries",
    "Conformance",
    "bin_dir",
    "conformance_dir",
    "ensure",
    "ensure_conformance",
    "helm",
    "pins",
]
