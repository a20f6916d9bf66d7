"""The embedded DNS server that answers from the syncer's caches (not built yet)."""
