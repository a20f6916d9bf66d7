"""One module per synced kind (how pods sync: pods.py); each implements the engine's Syncer
(vnest.syncer.engine.controller) and has one entry in vnest.syncer.registry."""
