"""The pure parts of the local host's images: references, cache keys, apt sources, pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import vnest
from vnest import binaries
from vnest.dns import coredns
from vnest.host import images


def _paths() -> dict[str, str]:
    return {image.reference: image.path for image in images.catalogue()}


def test_catalogue_sits_at_the_paths_containerd_asks_a_mirror_for():
    kube = binaries.pins()["kubernetes"]["version"]
    capi = binaries.pins()["cluster-api"]["version"]
    previous = binaries.pins()["kubernetes-previous"]["version"]
    assert _paths() == {
        "docker.io/library/nginx:latest": "library/nginx:latest",
        "docker.io/library/busybox:latest": "library/busybox:latest",
        "docker.io/library/busybox:1.37": "library/busybox:1.37",  # sync.toHost.pods.rewriteHosts
        "docker.io/curlimages/curl:latest": "curlimages/curl:latest",
        f"registry.k8s.io/pause:{images.PAUSE_VERSION}": f"pause:{images.PAUSE_VERSION}",
        f"registry.k8s.io/kube-apiserver:{kube}": f"kube-apiserver:{kube}",
        f"registry.k8s.io/kube-controller-manager:{kube}": f"kube-controller-manager:{kube}",
        f"registry.k8s.io/kube-scheduler:{kube}": f"kube-scheduler:{kube}",
        f"registry.k8s.io/kube-apiserver:{previous}": f"kube-apiserver:{previous}",
        f"registry.k8s.io/kube-controller-manager:{previous}": f"kube-controller-manager:{previous}",
        f"registry.k8s.io/kube-scheduler:{previous}": f"kube-scheduler:{previous}",
        f"registry.k8s.io/coredns/coredns:{coredns.COREDNS_VERSION}": f"coredns/coredns:{coredns.COREDNS_VERSION}",
        f"docker.io/library/vnest:{vnest.__version__}": f"library/vnest:{vnest.__version__}",
        **{
            f"registry.k8s.io/cluster-api/{m}:{capi}": f"cluster-api/{m}:{capi}"
            for m in (
                "cluster-api-controller",
                "kubeadm-bootstrap-controller",
                "kubeadm-control-plane-controller",
            )
        },
    }


def test_the_images_clusterctl_installs_are_served():
    from vnest.integrations.capi import repository

    served = set(_paths())
    capi = binaries.pins()["cluster-api"]["version"]
    for _, _, _, _, image in repository.CAPI_PROVIDERS:
        assert f"{repository.CAPI_IMAGE_REGISTRY}/{image}:{capi}" in served
    assert repository.VNEST_IMAGE in served


def test_the_names_pods_and_the_chart_use_are_served():
    served = set(_paths())
    # As written in manifests and by the chart (vnest.vnestImage is "vnest:<appVersion>").
    for name in ("nginx", "busybox", "curlimages/curl", f"vnest:{vnest.__version__}", coredns.DEFAULT_IMAGE):
        assert images.normalize(name) in served, name
    assert images.PAUSE_IMAGE in served
    assert images.PAUSE_IMAGE.endswith(f":{images.PAUSE_VERSION}")


def test_vnest_image_tag_is_the_package_version():
    with (images.SOURCE_ROOT / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == vnest.__version__


@pytest.mark.parametrize(
    ("short", "full"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("curlimages/curl", "docker.io/curlimages/curl:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10.2"),
        ("registry.k8s.io/coredns/coredns:v1.15.0", "registry.k8s.io/coredns/coredns:v1.15.0"),
        ("localhost:5000/thing", "localhost:5000/thing:latest"),
    ],
)
def test_normalize(short, full):
    assert images.normalize(short) == full


def test_catalogue_names_are_unique_and_references_normal():
    catalogue = images.catalogue()
    assert len({image.name for image in catalogue}) == len(catalogue)
    for image in catalogue:
        assert images.normalize(image.reference) == image.reference
        assert any(e.startswith("PATH=") for e in image.env), image.reference


def test_nginx_config_flags():
    nginx = images.catalogue()[0]
    flags = images.mutate_flags(nginx)
    assert "--cmd=nginx,-g,daemon off;" in flags
    assert "--exposed-ports=80/tcp" in flags
    assert any(f.startswith("--set-platform=linux/") for f in flags)
    assert not any(f.startswith("--entrypoint") for f in flags)
    # crane reads list flags as CSV: an argument with a comma must stay one argument.
    odd = images.Image("docker.io/library/x:1", ("base",), cmd=("a,b", "c"))
    assert '--cmd="a,b",c' in images.mutate_flags(odd)


def test_keys_follow_their_inputs():
    assert images.key_of("base", {"packages": ["a"]}) == images.key_of("base", {"packages": ["a"]})
    assert images.key_of("base", {"packages": ["a"]}) != images.key_of("base", {"packages": ["a", "b"]})
    assert images.key_of("base", {"x": 1}) != images.key_of("busybox", {"x": 1})
    nginx = images.catalogue()[0]
    assert images.image_key(nginx, ["k1"]) != images.image_key(nginx, ["k2"])
    other = images.Image(nginx.reference, nginx.layers, cmd=("nginx",))
    assert images.image_key(nginx, ["k1"]) != images.image_key(other, ["k1"])


def _keys(b: binaries.Binaries) -> dict[str, str]:
    return {spec.name: spec.key for spec in images._layer_specs(b)}


def test_a_code_change_rebuilds_only_the_vnest_layer(fake_tree):
    src, bins = fake_tree
    before = _keys(bins)
    (src / "vnest" / "__init__.py").write_text("x = 2\n")
    after = _keys(bins)
    assert {name for name in before if before[name] != after[name]} == {"vnest-app"}


def test_a_chart_change_rebuilds_only_the_vnest_layer(fake_tree):
    src, bins = fake_tree
    (src / "chart" / "templates").mkdir(parents=True)
    (src / "chart" / "templates" / "a.yaml").write_text("a: 1\n")
    before = _keys(bins)
    (src / "chart" / "templates" / "a.yaml").write_text("a: 2\n")
    after = _keys(bins)
    assert {name for name in before if before[name] != after[name]} == {"vnest-app"}


def test_a_binary_change_rebuilds_its_layers_only(fake_tree):
    _, bins = fake_tree
    before = _keys(bins)
    (bins.dir / "kube").write_text("a newer kube")
    (bins.dir / "kine").write_text("a newer kine")
    (bins.dir / "cluster-api-controller").write_text("a newer manager")
    after = _keys(bins)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"kube", "vnest-bin", "cluster-api-controller"}


def test_every_layer_an_image_names_has_a_recipe(fake_tree):
    _, bins = fake_tree
    recipes = set(_keys(bins))
    for image in images.catalogue():
        assert set(image.layers) <= recipes, image.reference


def test_cache_dir_follows_vnest_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VNEST_CACHE_DIR", str(tmp_path))
    assert images.cache_dir() == tmp_path / "images"
    monkeypatch.delenv("VNEST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert images.cache_dir() == tmp_path / "xdg" / "vnest" / "images"


DEB822 = """\
Types: deb
# a comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates trixie
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# the mirror of the office
deb [arch=amd64 signed-by=/etc/apt/keyrings/mirror.gpg] http://mirror.example/debian bookworm-security main
deb http://other.example/ubuntu jammy main
deb-src http://mirror.example/debian bookworm main
"""


def test_apt_sources_keep_the_machines_entries_for_the_suite():
    sources = images.parse_deb822_sources(DEB822) + images.parse_one_line_sources(ONE_LINE)
    assert len(sources) == 3  # the disabled and the deb-src entries are gone
    text = images.suite_sources(sources, "bookworm")
    assert text == (
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "Architectures: amd64\n"
        "Signed-By: /etc/apt/keyrings/mirror.gpg\n"
    )


def test_apt_sources_fall_back_to_debian_when_the_machine_has_none_for_the_suite():
    text = images.suite_sources(images.parse_one_line_sources(ONE_LINE), "trixie")
    assert "URIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates" in text
    assert "Suites: trixie-security" in text


def test_requirements_and_their_extras():
    assert images.parse_requirement("httpx[http2]>=0.27") == ("httpx", {"http2"})
    assert images.parse_requirement("PyYAML>=6.0.1") == ("pyyaml", set())
    assert images.parse_requirement('h2<5,>=3; extra == "http2"') is None
    assert images.parse_requirement('h2<5,>=3; extra == "http2"', {"http2"}) == ("h2", set())
    assert images.parse_requirement("typing_extensions; python_version < '3.13'") == (
        "typing-extensions",
        set(),
    )


def test_installed_pins_follow_the_environment():
    pins = images.installed_pins(images.runtime_requirements())
    # Direct and indirect dependencies, at the versions installed here; not the test tools.
    assert {"pydantic", "pydantic-core", "httpx", "httpcore", "pyyaml"} <= set(pins)
    assert "pytest" not in pins
    from importlib import metadata

    assert pins["pydantic"] == metadata.version("pydantic")


def test_wheel_platforms_stop_at_the_images_glibc():
    tags = images.wheel_platforms("x86_64")
    assert "manylinux_2_36_x86_64" in tags and "manylinux_2_17_x86_64" in tags
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags
    assert "manylinux2014_aarch64" in images.wheel_platforms("aarch64")


def _built(name: str, *layers: str) -> images.BuiltImage:
    image = images.Image(f"docker.io/library/{name}:1", layers)
    built_layers = tuple(images.BuiltLayer(n, "k", Path("/nowhere"), f"sha256:{n}", 1) for n in layers)
    return images.BuiltImage(image, "k", Path("/nowhere"), f"sha256:{name}", built_layers)


def test_push_waves_send_each_new_layer_once():
    nginx, curl = _built("nginx", "base"), _built("curl", "base", "entry")
    busybox, vnest_image = _built("busybox", "busybox"), _built("vnest", "base", "app")
    apiserver, scheduler = _built("apiserver", "kube"), _built("scheduler", "kube")
    waves = images.push_waves([nginx, busybox, curl, apiserver, scheduler, vnest_image])
    assert [[b.image.repository.removeprefix("library/") for b in wave] for wave in waves] == [
        ["nginx", "busybox", "apiserver"],
        ["curl", "scheduler", "vnest"],
    ]
