from vnest import kubeconfig


def test_user_path_is_first_kubeconfig_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert kubeconfig.user_path() == tmp_path / "a"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig.user_path() == tmp_path / ".kube" / "config"


def test_merge_replaces_same_names_and_keeps_others(tmp_path):
    path = tmp_path / "config"
    user = kubeconfig.build("other", "https://10.0.0.1", b"ca", b"crt", b"key")
    kubeconfig.save(path, user)
    first = kubeconfig.build("vnest-host", "https://127.0.0.1:1", b"ca", b"crt", b"key")
    second = kubeconfig.build("vnest-host", "https://127.0.0.1:2", b"ca", b"crt", b"key")
    merged = kubeconfig.load(path)
    kubeconfig.merge_into(merged, first)
    kubeconfig.merge_into(merged, second)
    kubeconfig.save(path, merged)
    again = kubeconfig.load(path)
    servers = {c["name"]: c["cluster"]["server"] for c in again["clusters"]}
    assert servers == {"other": "https://10.0.0.1", "vnest-host": "https://127.0.0.1:2"}
    assert [c["name"] for c in again["contexts"]] == ["other", "vnest-host"]
    assert again["current-context"] == "other"
    assert path.stat().st_mode & 0o777 == 0o600


def test_remove_context_drops_its_cluster_and_user_and_current():
    config = kubeconfig.build("other", "https://10.0.0.1", b"ca", b"crt", b"key")
    kubeconfig.merge_into(config, kubeconfig.build("vnest-host", "https://127.0.0.1:2", b"c", b"c", b"k"))
    config["current-context"] = "vnest-host"
    kubeconfig.remove_context(config, "vnest-host")
    assert [c["name"] for c in config["contexts"]] == ["other"]
    assert [c["name"] for c in config["clusters"]] == ["other"]
    assert [u["name"] for u in config["users"]] == ["other"]
    assert config["current-context"] == ""
