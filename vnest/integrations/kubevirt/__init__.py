"""KubeVirt: tenants' virtual machines, run by the host's KubeVirt (`integrations.kubeVirt`).

- `kinds`: which KubeVirt (and CDI) kinds sync, behind which config key, and the start-up that
  serves the host's CRDs in the virtual cluster;
- `translate`: what a tenant's VM spec becomes on the host (names, isolation guards);
- `syncers`: VirtualMachines, their instances, migrations, pools, clones, DataVolumes,
  instancetypes and preferences, to the host and status back;
- `launchers`: the host's `virt-launcher` pods, reflected as virtual pods;
- `subresources`: `subresources.kubevirt.io` (start, stop, console, ...) served in the virtual
  cluster and forwarded to the host's virt-api.
"""
