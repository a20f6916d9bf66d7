"""The pinned upstream binaries, built from Go modules into a cache outside the repo.

``ensure()`` returns a :class:`Binaries` whose attributes are paths to
kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm,
kine and etcd; it builds them first when the cache for the current pins is empty.
"""

from vnest.binaries.build import Binaries, bin_dir, ensure, helm, pins

__all__ = ["Binaries", "bin_dir", "ensure", "helm", "pins"]
