"""Host clusters vnest runs virtual clusters on; `local` is the embedded one for machines without a cluster."""
