import hashlib

import pytest

from vnest import lifecycle, naming
from vnest.errors import UsageError


def test_host_names_follow_the_seed():
    assert (
        naming.host_name("nginx-vcluster1-694d446f64-ld6qb", "nginx1", "my-vcluster")
        == "nginx-vcluster1-694d446f64-ld6qb-x-nginx1-x-my-vcluster"
    )
    assert (
        naming.host_cluster_scoped_name("fast", "vcluster1", "my-vcluster")
        == "vnest-fast-x-vcluster1-x-my-vcluster"
    )


def test_long_names_are_cut_and_hashed():
    name, ns, vc = "a" * 40, "b" * 20, "my-vcluster"
    joined = f"{name}-x-{ns}-x-{vc}"
    short = naming.host_name(name, ns, vc)
    assert short == f"{joined[:52]}-{hashlib.sha256(joined.encode()).hexdigest()[:10]}"
    assert len(short) == 63
    assert naming.host_name(name, ns, "other") != short

    # Cluster-scoped names hash the same way: the same cluster name in another host namespace differs.
    joined = f"vnest-{name}-x-{ns}-x-{vc}"
    short = naming.host_cluster_scoped_name(name, ns, vc)
    assert short == f"{joined[:52]}-{hashlib.sha256(joined.encode()).hexdigest()[:10]}"
    assert len(short) == 63
    assert naming.host_cluster_scoped_name(name, "other", vc) != short


def test_kube_context_and_its_parent():
    ctx = naming.kube_context("my-vcluster", "vcluster1", "kubernetes-admin@kubernetes")
    assert ctx == "vnest_my-vcluster_vcluster1_kubernetes-admin@kubernetes"
    assert lifecycle.parent_of(ctx) == "kubernetes-admin@kubernetes"
    assert lifecycle.parent_of("vnest-host") is None


@pytest.mark.parametrize("name", ["My-Cluster", "a_b", "-a", "a" * 54, ""])
def test_bad_cluster_names_are_usage_errors(name):
    with pytest.raises(UsageError):
        lifecycle._validate_names(name, "ns")
