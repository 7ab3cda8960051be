"""Configuration: defaults that work, and one clear line (exit 2) naming the key for bad input."""

from __future__ import annotations

import pytest

from agent import config as cfgmod
from agent.config import ConfigError


def test_defaults_are_valid_and_documented_values():
    cfg = cfgmod.validate(cfgmod.Config())
    assert cfg.server.socket == "/run/cellar/cellar.sock"
    assert cfg.server.socket_mode == 0o660
    assert cfg.server.tcp_listen == "" and not cfg.tls_enabled
    assert cfg.auth.unix_role == "admin"


def test_missing_default_file_means_defaults(monkeypatch):
    monkeypatch.setattr(cfgmod, "DEFAULT_CONFIG_PATH", "/nonexistent/cellard.toml")
    assert cfgmod.load(None) == cfgmod.validate(cfgmod.Config())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"drain_timeout_s": "soon"}}, "server.drain_timeout_s: expected a number, got 'soon'"),
        ({"server": {"socket_mode": True}}, "server.socket_mode: expected an integer"),
        ({"server": {"tcp_listen": "x"}}, "server.tcp_listen: expected host:port, got 'x'"),
        ({"server": {"sokcet": "/x"}}, "server.sokcet: unknown key"),
        ({"nope": {}}, "nope: unknown key"),
        ({"server": "x"}, "server: expected a table"),
        ({"auth": {"identities": {"bob": "root"}}}, "auth.identities.bob: expected one of admin, operator, observer"),
        ({"log": {"level": "loud"}}, "log.level: expected one of"),
        ({"tls": {"cert": "/c"}}, "tls.ca: mutual TLS needs ca, cert and key together"),
        ({"paths": {"run_dir": "run"}}, "paths.run_dir: expected an absolute path"),
        ({"server": {"socket_group": "no-such-group-xyz"}}, "server.socket_group: no such group"),
        ({"cells": {"supervisor_start_timeout_s": 0}}, "cells.supervisor_start_timeout_s: expected 1-3600 seconds"),
        ({"cells": {"exec_timeout_s": 0}}, "cells.exec_timeout_s: expected 0.1-600 seconds"),
        ({"cells": {"default_user": "no-such-user-xyz"}}, "cells.default_user: expected a user name, UID or UID:GID"),
        ({"cells": {"default_user": "1000:staff"}}, "cells.default_user: expected a user name, UID or UID:GID"),
        ({"cells": {"default_user": "4294967295"}}, "cells.default_user: ids must be in [0, 2^32-2]"),
        ({"jobs": {"max_pending_per_scope": 0}}, "jobs.max_pending_per_scope: expected 1..1000000"),
        ({"jobs": {"max_staged_bytes": 2**63 - 1}}, "jobs.max_staged_bytes: expected 1..1125899906842624"),
        ({"jobs": {"pending_ttl_s": -1}}, "jobs.pending_ttl_s: expected 0-31536000 seconds"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        cfgmod.parse(data)
    assert str(err.value).startswith(message)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_daemon_bad_type(run_cellard):
    line = one_line(run_cellard(config="[server]\ndrain_timeout_s = 'soon'\n"))
    assert line == "cellard: config error: server.drain_timeout_s: expected a number, got 'soon'"


def test_daemon_unknown_key(run_cellard):
    line = one_line(run_cellard(config="[paths]\nrundir = '/tmp/x'\n"))
    assert line == "cellard: config error: paths.rundir: unknown key"


def test_daemon_bad_toml_syntax(run_cellard):
    line = one_line(run_cellard(config="[server\nsocket = 1\n"))
    assert line.startswith("cellard: config error: ") and "bad TOML" in line


def test_daemon_bad_flag(run_cellard):
    assert one_line(run_cellard("--no-such-flag")) == "cellard: flag error: unrecognized arguments: --no-such-flag"


def test_daemon_bad_flag_value(run_cellard):
    assert one_line(run_cellard("--tcp", "x")) == "cellard: config error: --tcp: expected host:port, got 'x'"
    assert one_line(run_cellard("--log-level", "loud")).startswith("cellard: config error: log.level:")


def test_daemon_missing_explicit_config_file(run_cellard, tmp_path):
    line = one_line(run_cellard("--config", str(tmp_path / "missing.toml")))
    assert line.endswith("missing.toml: file not found")


def test_daemon_unreadable_tls_file_names_the_key(run_cellard, tmp_path):
    config = (
        f"[server]\nsocket = '{tmp_path}/s.sock'\ntcp_listen = '127.0.0.1:0'\n"
        f"[paths]\nrun_dir = '{tmp_path}/run'\nstate_dir = '{tmp_path}/state'\nlog_dir = '{tmp_path}/log'\n"
        f"[tls]\nca = '{tmp_path}/ca.pem'\ncert = '{tmp_path}/c.pem'\nkey = '{tmp_path}/k.pem'\n"
    )
    result = run_cellard(config=config)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("cellard: config error: tls.ca: cannot read")
    assert not (tmp_path / "run" / "supervisor.sock").exists(), "a failed start must not leave a supervisor"


def test_supervisor_start_and_exec_timeouts_reach_the_runtime_config():
    cfg = cfgmod.parse({"cells": {"supervisor_start_timeout_s": 90}})
    assert cfgmod.runtime_config(cfg).supervisor_start_timeout_s == 90
    assert cfgmod.runtime_config(cfgmod.parse({"cells": {"exec_timeout_s": 2.5}})).exec_timeout_s == 2.5
    assert cfgmod.runtime_config(cfgmod.Config()).supervisor_start_timeout_s == 10.0


def test_flags_override_the_file(tmp_path):
    from agent.daemon import config_from_args

    path = tmp_path / "c.toml"
    path.write_text("[paths]\nrun_dir = '/from/file'\nlog_dir = '/from/file/log'\n")
    cfg = config_from_args(["--config", str(path), "--run-dir", "/from/flag", "--cgroup-root", "cellar-x"])
    assert cfg.paths.run_dir == "/from/flag" and cfg.paths.log_dir == "/from/file/log"
    assert cfg.cells.cgroup_root == "cellar-x"


def test_default_user_reaches_the_runtime_config_as_ids():
    def ids(value: str) -> tuple[int | None, int | None]:
        rc = cfgmod.runtime_config(cfgmod.parse({"cells": {"default_user": value}}))
        return rc.default_uid, rc.default_gid

    assert ids("") == (None, None)
    assert ids("nobody") == (65534, 65534)
    assert ids("1000") == (1000, 1000) and ids("1000:100") == (1000, 100)


def test_private_keys_are_hidden_from_workloads():
    cfg = cfgmod.parse({"tls": {"ca": "/etc/ssl/ca.pem", "cert": "/srv/pki/c.pem", "key": "/srv/pki/c.key"}})
    rc = cfgmod.runtime_config(cfg)
    assert "/srv/pki/c.key" in rc.hidden_paths and "/var/lib/cellar" in rc.hidden_paths
