"""Writes the generated files derived from the config models.

`python -m vnest.config.schema` (re)writes the JSON Schema shipped inside the package, the
same schema for the Helm chart, and the chart's values.yaml with every default. A unit test
compares the committed files with `generated()`, so they cannot drift from the models.
"""

from __future__ import annotations

import json
import pathlib

import yaml

from vnest.config.load import defaults
from vnest.config.models import VClusterConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE_SCHEMA = pathlib.Path(__file__).resolve().parent / "vcluster.schema.json"
CHART_SCHEMA = ROOT / "chart" / "values.schema.json"
CHART_VALUES = ROOT / "chart" / "values.yaml"

_VALUES_HEADER = """\
# Default values of the vnest chart, in the vcluster.yaml (v0.20+) shape.
# Generated from vnest/config/models.py by `python -m vnest.config.schema`; do not edit.
# Override with `vnest create NAME -f values.yaml` or `--set KEY=VALUE`.
"""


def schema_text() -> str:
    """The JSON Schema of a values file, as written to disk."""
    return json.dumps(VClusterConfig.model_json_schema(by_alias=True), indent=2) + "\n"


def values_text() -> str:
    """The chart's values.yaml: the header, then every default."""
    return _VALUES_HEADER + yaml.safe_dump(defaults(), sort_keys=False, default_flow_style=False)


def generated() -> dict[pathlib.Path, str]:
    """Each generated file and the text it must hold."""
    schema = schema_text()
    return {PACKAGE_SCHEMA: schema, CHART_SCHEMA: schema, CHART_VALUES: values_text()}


def main() -> None:
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
