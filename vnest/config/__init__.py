"""The values file: pydantic models of the vcluster.yaml (v0.20+) keys vnest supports.

`load_config` reads `-f` files and `--set` overrides into a validated `VClusterConfig`;
`to_values` turns it back into vcluster.yaml-shaped data for Helm and for the
`vc-config-NAME` Secret.
"""

from vnest.config.load import UNSUPPORTED, defaults, load_config, load_config_text, to_values
from vnest.config.models import VClusterConfig

__all__ = ["UNSUPPORTED", "VClusterConfig", "defaults", "load_config", "load_config_text", "to_values"]
