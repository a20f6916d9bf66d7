"""The `vnest` command line (verbs and flags follow vCluster's)."""
