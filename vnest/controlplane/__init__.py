"""The virtual control plane: PKI, datastore, kube-apiserver, controller manager, scheduler and
their supervisor; the servers' command lines (commands) are shared with the local host."""
