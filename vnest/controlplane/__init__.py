"""The virtual control plane: PKI, datastore, kube-apiserver, controller manager, supervisor."""
