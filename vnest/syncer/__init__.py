"""The syncer: one module per synced kind (resources/) on a shared engine (engine/), all listed in
one registry (registry.py), with every virtual <-> host name and label in mappings.py."""
