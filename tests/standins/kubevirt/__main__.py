"""The host's stand-in for KubeVirt, for tests (not KubeVirt): its processes' entry point.

``python -m tests.standins.kubevirt controller --kubeconfig FILE [--ready-file FILE]`` runs the
virt-controller and CDI stand-ins (controller.py); ``python -m tests.standins.kubevirt virt-api
--kubeconfig FILE --cert FILE --key FILE --ready-file FILE`` the virt-api stand-in (virtapi.py).
``StandIn.start`` starts both, and KWOK with the stand-in's stages.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from vnest import log


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.standins.kubevirt")
    sub = parser.add_subparsers(dest="command", required=True)
    controller = sub.add_parser("controller", help="virt-controller's and CDI's stand-in")
    controller.add_argument("--kubeconfig", type=Path, required=True)
    controller.add_argument("--ready-file", type=Path)
    virt_api = sub.add_parser("virt-api", help="virt-api's stand-in: the subresources.kubevirt.io API")
    virt_api.add_argument("--kubeconfig", type=Path, required=True)
    virt_api.add_argument("--cert", type=Path, required=True)
    virt_api.add_argument("--key", type=Path, required=True)
    virt_api.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    log.setup()
    if args.command == "controller":
        from . import controller as module

        asyncio.run(module.serve(args.kubeconfig, args.ready_file))
    else:
        from . import virtapi

        asyncio.run(virtapi.serve(args.kubeconfig, args.cert, args.key, args.ready_file))


if __name__ == "__main__":
    main()
