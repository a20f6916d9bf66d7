"""The pure parts of the conformance specs' images: names, mirror paths, recipes and keys."""

from __future__ import annotations

import pytest

from vnest import binaries
from vnest.binaries import build
from vnest.errors import VnestError
from vnest.host import e2e_images, images

pytestmark = pytest.mark.unit


def test_the_images_sit_at_the_paths_containerd_asks_the_mirror_for():
    assert {i.reference: i.path for i in e2e_images.catalogue()} == {
        "registry.k8s.io/e2e-test-images/agnhost:2.63.0": "e2e-test-images/agnhost:2.63.0",
        "registry.k8s.io/e2e-test-images/agnhost:2.55": "e2e-test-images/agnhost:2.55",
        "registry.k8s.io/e2e-test-images/busybox:1.37.0-1": "e2e-test-images/busybox:1.37.0-1",
        "registry.k8s.io/e2e-test-images/nginx:1.15-4": "e2e-test-images/nginx:1.15-4",
        "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.0.0": "e2e-test-images/glibc-dns-testing:2.0.0",
        "registry.k8s.io/e2e-test-images/nautilus:1.8": "e2e-test-images/nautilus:1.8",
        "registry.k8s.io/e2e-test-images/kitten:1.8": "e2e-test-images/kitten:1.8",
        "registry.k8s.io/e2e-test-images/nonewprivs:1.4": "e2e-test-images/nonewprivs:1.4",
        "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2": "e2e-test-images/sample-apiserver:1.29.2",
        "registry.k8s.io/etcd:3.6.8-0": "etcd:3.6.8-0",
    }


def test_every_image_the_specs_pull_is_built_or_served_already():
    built = {i.reference for i in e2e_images.catalogue()}
    served = {i.reference for i in images.catalogue()}
    for u in e2e_images.CONFORMANCE_IMAGES:
        if u.image_id in e2e_images.ALREADY_SERVED:
            assert u.reference in served and u.reference not in built
        else:
            assert u.reference in built, u.image_id
    assert sorted(e2e_images.references()) == sorted({u.reference for u in e2e_images.CONFORMANCE_IMAGES})


def test_they_mix_with_the_hosts_own_images():
    both = [*images.catalogue(), *e2e_images.catalogue()]
    assert len({i.name for i in both}) == len(both)  # cache folders
    assert len({i.path for i in both}) == len(both)  # registry paths
    for image in e2e_images.catalogue():
        assert images.normalize(image.reference) == image.reference


def test_spec_counts():
    assert sum(u.specs for u in e2e_images.CONFORMANCE_IMAGES if u.image_id == "Agnhost") == 198
    assert all(u.specs > 0 for u in e2e_images.CONFORMANCE_IMAGES)


def test_agnhost_runs_as_upstreams_dockerfile_says():
    agnhost = {i.reference: i for i in e2e_images.catalogue()}[
        "registry.k8s.io/e2e-test-images/agnhost:2.63.0"
    ]
    flags = images.mutate_flags(agnhost)
    assert "--entrypoint=/agnhost" in flags
    assert "--cmd=pause" in flags
    assert "--exposed-ports=80/tcp,8080/tcp,8081/tcp,9376/tcp,5000/tcp" in flags
    assert "--label=org.opencontainers.image.version=2.63.0" in flags


def test_the_two_agnhost_tags_are_two_images():
    # Same layers, but containerd reports a container's image by its image's first tag: the configs
    # must differ, or a pod of 2.55 could show 2.63.0.
    by_ref = {i.reference: i for i in e2e_images.catalogue()}
    new = by_ref["registry.k8s.io/e2e-test-images/agnhost:2.63.0"]
    prev = by_ref["registry.k8s.io/e2e-test-images/agnhost:2.55"]
    assert new.layers == prev.layers
    assert images.mutate_flags(new) != images.mutate_flags(prev)
    assert images.image_key(new, ["k"]) != images.image_key(prev, ["k"])


def test_images_without_labels_keep_their_keys_and_flags():
    plain = images.Image("docker.io/library/x:1", ("busybox",))
    labelled = images.Image("docker.io/library/x:1", ("busybox",), labels=("a=b",))
    assert not any(f.startswith("--label") for f in images.mutate_flags(plain))
    assert images.image_key(plain, ["k"]) != images.image_key(labelled, ["k"])
    spec = {
        "reference": plain.reference,
        "layers": ["k"],
        "entrypoint": (),
        "cmd": (),
        "env": (images.DEFAULT_PATH,),
        "workdir": "",
        "user": "",
        "ports": (),
    }
    assert images.image_key(plain, ["k"]) == images.key_of(f"image-{plain.name}", spec)


def test_opt_in(monkeypatch):
    monkeypatch.delenv(images.E2E_IMAGES_ENV, raising=False)
    assert not images.e2e_images_wanted()
    for value, wanted in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(images.E2E_IMAGES_ENV, value)
        assert images.e2e_images_wanted() is wanted


MANIFEST = """
var (
	initRegistry = RegistryList{
		PromoterE2eRegistry:      "registry.k8s.io/e2e-test-images",
		GcEtcdRegistry:           "registry.k8s.io",
		GcRegistry:               "registry.k8s.io",
		PrivateRegistry:          "gcr.io/k8s-authenticated-test",
	}
)

func initImageConfigs(list RegistryList) (map[ImageID]Config, map[ImageID]Config) {
	configs := map[ImageID]Config{}
	configs[AgnhostPrev] = Config{list.PromoterE2eRegistry, "agnhost", "2.55"}
	configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.63.0"}
	configs[AgnhostPrivate] = Config{list.PrivateRegistry, "agnhost", "2.6"}
	configs[APIServer] = Config{list.PromoterE2eRegistry, "sample-apiserver", "1.29.2"}
	configs[BusyBox] = Config{list.PromoterE2eRegistry, "busybox", "1.37.0-1"}
	configs[Etcd] = Config{list.GcEtcdRegistry, "etcd", "3.6.8-0"}
	configs[GlibcDnsTesting] = Config{list.PromoterE2eRegistry, "glibc-dns-testing", "2.0.0"}
	configs[Kitten] = Config{list.PromoterE2eRegistry, "kitten", "1.8"}
	configs[Nautilus] = Config{list.PromoterE2eRegistry, "nautilus", "1.8"}
	configs[Nginx] = Config{list.PromoterE2eRegistry, "nginx", "1.15-4"}
	configs[Nonewprivs] = Config{list.PromoterE2eRegistry, "nonewprivs", "1.4"}
	configs[Pause] = Config{list.GcRegistry, "pause", "3.10.2"}
"""


def test_the_manifest_is_read_as_e2e_test_reads_it():
    parsed = e2e_images.parse_manifest(MANIFEST)
    assert parsed["AgnhostPrivate"] == "gcr.io/k8s-authenticated-test/agnhost:2.6"
    assert parsed["Etcd"] == "registry.k8s.io/etcd:3.6.8-0"
    assert e2e_images.manifest_mismatches(parsed) == []
    e2e_images.check_manifest(MANIFEST)


def test_a_new_tag_upstream_is_caught():
    moved = MANIFEST.replace('"agnhost", "2.63.0"', '"agnhost", "2.64.0"')
    wrong = e2e_images.manifest_mismatches(e2e_images.parse_manifest(moved))
    assert wrong == [
        "Agnhost: vnest builds registry.k8s.io/e2e-test-images/agnhost:2.63.0, "
        "e2e.test pulls registry.k8s.io/e2e-test-images/agnhost:2.64.0"
    ]
    with pytest.raises(VnestError, match=r"agnhost:2\.64\.0"):
        e2e_images.check_manifest(moved)


def test_the_build_module_requires_the_pinned_kubernetes_with_the_conformance_replaces():
    conformance = (build.GO_DIR / build.CONFORMANCE_MODULE / "go.mod").read_text()
    mod = e2e_images.go_mod(conformance, "v1.36.3")
    assert mod.startswith("module vnest.dev/build/e2e-images\n")
    assert "require k8s.io/kubernetes v1.36.3\n" in mod
    assert "\tk8s.io/sample-apiserver => k8s.io/sample-apiserver v0.36.3\n" in mod
    assert mod.endswith(")\n")
    tools = e2e_images.tools_go()
    assert tools.startswith("//go:build tools\n")
    for package in e2e_images.GO_PROGRAMS.values():
        assert f'_ "{package}"' in tools


@pytest.fixture
def bins(fake_tree, monkeypatch):
    """Stand-in binaries (tests/unit/conftest.py) and a stand-in conformance module."""
    module = {"go.mod": "module m\n", "go.sum": "a\n"}
    monkeypatch.setattr(e2e_images, "_conformance_module_files", lambda: dict(module))
    return fake_tree[1], module


def _keys(b: binaries.Binaries) -> dict[str, str]:
    return {spec.name: spec.key for spec in e2e_images.layer_specs(b)}


def test_every_layer_an_image_names_has_a_recipe(bins):
    recipes = set(_keys(bins[0]))
    for image in e2e_images.catalogue():
        assert set(image.layers) <= recipes, image.reference


def test_they_share_the_hosts_layers(bins):
    host = {spec.name: spec.key for spec in images._layer_specs(bins[0])}
    ours = _keys(bins[0])
    for name in ("base", "busybox", "coredns"):
        assert ours[name] == host[name]


def test_a_module_graph_change_rebuilds_the_go_programs_only(bins):
    b, module = bins
    before = _keys(b)
    module["go.sum"] = "b\n"
    after = _keys(b)
    assert {n for n in before if before[n] != after[n]} == {"agnhost", "nonewprivs", "sample-apiserver"}


def test_an_etcd_change_rebuilds_its_layer_only(bins):
    b, _ = bins
    before = _keys(b)
    (b.dir / "etcd").write_text("a newer etcd")
    after = _keys(b)
    assert {n for n in before if before[n] != after[n]} == {"e2e-etcd"}


def test_the_go_programs_folder_follows_the_inputs(bins, monkeypatch, tmp_path):
    monkeypatch.setenv("VNEST_CACHE_DIR", str(tmp_path / "cache"))
    _, module = bins
    first = e2e_images.go_programs_dir()
    assert first.parent == tmp_path / "cache" / "images"
    module["go.mod"] = "module m2\n"
    assert e2e_images.go_programs_dir() != first
