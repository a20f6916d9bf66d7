"""The syncer: one module per synced resource on a shared informer/workqueue engine."""
