"""Config files: decoding, unknown keys, and the check-config command.

``config.parse`` is pure (bytes in); the command line's ``load`` reads the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import load
from gateway.config import ConfigError, parse, upstream_key

GOOD = """
[listen]
port = 9000

[[deployment]]
models = ["a", "b"]
upstream = "http://127.0.0.1:8000/v1"
upstream-model = "org/model"
token-field = "max_completion_tokens"
api-key-env = "MY_KEY"
read-timeout = 30

[deployment.supports]
images = false

[[deployment]]
upstream = "https://other/v1"

[stream]
keepalive-interval = 5
"""


def test_load(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text(GOOD)
    cfg = load(str(f))
    assert cfg.listen.port == 9000 and cfg.listen.host == "127.0.0.1"
    first, second = cfg.deployment
    assert first.models == ("a", "b") and first.upstream_model == "org/model"
    assert first.token_field == "max_completion_tokens" and first.read_timeout == 30
    assert first.supports.images is False and first.supports.tools is True
    assert second.models == () and second.token_field == "max_tokens"
    assert cfg.stream.keepalive_interval == 5
    assert upstream_key(first, {"MY_KEY": "sk-1"}) == "sk-1"
    assert upstream_key(first, {}) is None
    assert upstream_key(second, {"MY_KEY": "sk-1"}) is None
    assert parse(GOOD.encode(), "g.toml") == cfg


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (GOOD.replace("read-timeout", "read-timout"), "read-timout"),
        (GOOD.replace('token-field = "max_completion_tokens"', 'token-field = "n"'), "token-field"),
        (GOOD.replace("port = 9000", 'port = "x"'), "port"),
        ("[listen]\nport = 1\n", "deployment"),
        (GOOD.replace("http://127.0.0.1:8000/v1", "ftp://x"), "upstream"),
        ("not toml [", "TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "g.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(str(f))
    assert says in str(info.value) and str(f) in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse(text.encode(), "the-file")
    assert says in str(info.value) and "the-file" in str(info.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "absent.toml"))
    assert "cannot read" in str(info.value)


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("[stream]", "[streem]"))
    cmd = [sys.executable, "-m", "gateway", "check-config"]
    env = {**os.environ, "MY_KEY": "sk-1"}  # (the key its deployment names: checked too)
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "OK" in ok.stdout
    no = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert no.returncode != 0 and "streem" in no.stderr


REPLICAS = """
[overload]
max-in-flight = 100
queue-timeout = 2.5

[[deployment]]
models = ["q"]
upstream = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
weights = [1, 1, 2]
affinity-header = "x-session-id"
headers-timeout = 120
chunk-timeout = 30
request-timeout = 900
eject-after = 5
active-probe-interval = 3
max-in-flight = 40
"""


def test_replicas_and_their_policies() -> None:
    cfg = parse(REPLICAS.encode(), "r.toml")
    (dep,) = cfg.deployment
    assert dep.urls == tuple(f"http://10.0.0.{i}:8000/v1" for i in (1, 2, 3))
    assert dep.weights == (1.0, 1.0, 2.0) and dep.affinity_header == "x-session-id"
    assert (dep.headers_timeout, dep.chunk_timeout, dep.request_timeout) == (120, 30, 900)
    assert dep.eject_after == 5 and dep.max_in_flight == 40
    assert cfg.overload.max_in_flight == 100 and cfg.overload.queue_timeout == 2.5
    one = parse(GOOD.encode(), "g.toml").deployment[0]  # a single URL: as before
    assert one.urls == ("http://127.0.0.1:8000/v1",) and one.upstream == one.urls[0]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('upstream = []\nmodels = ["q"]', "at least one URL"),
        ('upstream = ["http://a/v1", "ftp://b"]', "http:// or https://"),
        ('upstream = ["http://a/v1", "http://b/v1"]\nweights = [1]', "weights"),
        ('upstream = "http://a/v1"\nweights = [0]', "weights"),
        ('upstream = "http://a/v1"\neject-after = 0', "eject-after"),
        ('upstream = "http://a/v1"\nchunk-timeout = -1', "timeouts must be positive"),
        ('upstream = "http://a/v1"\nrequest-timeout = -1', "request-timeout"),
    ],
)
def test_bad_replica_settings_name_the_key(line: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse(f"[[deployment]]\n{line}\n".encode(), "bad.toml")


def test_a_hash_in_a_key_of_the_environment_is_part_of_the_key() -> None:
    from gateway.config import Auth, client_keys

    auth = Auth(keys_env="KEYS")
    assert client_keys(auth, {"KEYS": "sk-a#1, sk-b"}, None) == ("sk-a#1", "sk-b")
    # The keys file keeps its comments.
    assert client_keys(Auth(keys_file="/k"), {}, "sk-c # the CI's\n# old: sk-d\n") == ("sk-c",)


@pytest.mark.parametrize("bad", ["sk-1\r\nX-Injected: 1", "sk-1\n", "sk-\x00", "sk-é€", "sk-\x7f"])
def test_an_upstream_key_that_cannot_go_in_a_header_is_refused(bad: str) -> None:
    cfg = parse(b'[[deployment]]\nupstream = "http://u/v1"\napi-key-env = "K"\n', "t")
    with pytest.raises(ConfigError, match="K: the upstream API key holds a character"):
        upstream_key(cfg.deployment[0], {"K": bad})
    assert upstream_key(cfg.deployment[0], {"K": "sk-ok_1.2-é"}) == "sk-ok_1.2-é"  # latin-1


def check_config(tmp_path: Path, toml: str, env: dict[str, str], *more: str) -> tuple[int, str]:
    path = tmp_path / "g.toml"
    path.write_text(toml)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path), *more],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    return done.returncode, done.stdout + done.stderr


def test_check_config_checks_the_environment_the_service_will_run_with(tmp_path: Path) -> None:
    """What would make every start fail (a restart loop) fails ExecStartPre= instead."""
    dep = '[[deployment]]\nupstream = "http://127.0.0.1:9/v1"\nmodels = ["m"]\napi-key-env = "UP"\n'
    code, said = check_config(tmp_path, dep, {"UP": "sk-up"})
    assert code == 0 and "OK" in said
    code, said = check_config(tmp_path, dep, {})
    assert code == 2 and "UP is not set" in said
    code, said = check_config(tmp_path, dep, {"UP": "sk\nup"})
    assert code == 2 and "cannot go in an HTTP header" in said
    code, said = check_config(tmp_path, dep, {"UP": "sk-up", "GATEWAY_SEAL_KEY": "short"})
    assert code == 2 and "GATEWAY_SEAL_KEY" in said
    auth = dep + '[auth]\nkeys-env = "CLIENT_KEYS"\n'
    code, said = check_config(tmp_path, auth, {"UP": "sk-up"})
    assert code == 2 and "names no client API key" in said
    keys = tmp_path / "keys"
    keys.write_text("sk-client\n")
    code, said = check_config(tmp_path, auth, {"UP": "sk-up"}, "--api-keys-file", str(keys))
    assert code == 0, said


def test_websocket_idle_timeout() -> None:
    cfg = parse((GOOD + "\n[http]\nwebsocket-idle-timeout = 30\n").encode(), "g.toml")
    assert cfg.http.websocket_idle_timeout == 30
    assert parse(GOOD.encode(), "g.toml").http.websocket_idle_timeout == 300
    with pytest.raises(ConfigError) as info:
        parse((GOOD + "\n[http]\nwebsocket-idle-timeout = 0\n").encode(), "g.toml")
    assert "timeouts must be positive" in str(info.value)
