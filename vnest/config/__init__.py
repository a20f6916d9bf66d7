"""The values file: models of the vcluster.yaml shape that vnest supports (not built yet)."""
