"""The registered test suites, merged across AddTestSuite calls and kept in ``<state_dir>/testrunner/``.

A suite is named ``<package_path>.<service>`` (parigot's spelling); a test is ``<suite>.<function>``.
Registering a suite again adds its new functions (already-present ones are reported false, as
parigot does) and re-points the suite at the request's exec service (the last registration wins).

``exec_service`` is where the suite's ``test.v1.UnderTest`` server listens -- cellar has no parigot
service locator, so it is a gRPC address: ``unix:/absolute/path`` (or ``unix:///...``) or
``host:port`` on a loopback address (``127.0.0.1``, ``[::1]``, ``localhost``): cellard dials it in
plaintext from the host's namespaces. ``exec_package`` is kept for reports and listings only.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field

from agent.local.testrunner.errors import RunnerError

MAX_NAME = 256
MAX_SUITES = 10_000
MAX_FUNCTIONS = 10_000  # per suite
MAX_TESTS = 100_000  # on the node: one Start queues at most this many messages


def check_name(value: str, what: str, allow_empty: bool = False) -> str:
    if not value and not allow_empty:
        raise RunnerError("UnmarshalError", f"{what}: must not be empty")
    if len(value) > MAX_NAME or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise RunnerError("UnmarshalError", f"{what}: at most {MAX_NAME} printable characters")
    return value


def check_target(target: str) -> str:
    """An exec_service address cellard may dial (see the module docstring)."""
    if target.startswith("unix:"):
        path = target[len("unix:"):]
        path = path[2:] if path.startswith("//") else path
        if not os.path.isabs(path) or "\0" in path or len(path.encode()) > 107:
            raise RunnerError("ServiceNotFound", f"exec_service: expected unix:/absolute/path, got {target[:120]!r}")
        return target
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise RunnerError("ServiceNotFound", f"exec_service: expected unix:/path or host:port, got {target[:120]!r}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise RunnerError("ServiceNotFound", f"exec_service: TCP targets must be loopback addresses, got {target[:120]!r}")
    return target


@dataclass
class Suite:
    package: str
    service: str
    functions: list[str] = field(default_factory=list)
    exec_package: str = ""
    exec_target: str = ""

    @property
    def name(self) -> str:
        return f"{self.package}.{self.service}"


class SuiteRegistry:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "testrunner", "suites.json")
        self.suites: dict[str, Suite] = {}
        try:
            with open(self.path) as fh:
                for raw in json.load(fh):
                    suite = Suite(**raw)
                    self.suites[suite.name] = suite
        except (FileNotFoundError, ValueError, TypeError):
            pass

    def add(self, infos: list[tuple[str, str, list[str]]], exec_package: str, exec_target: str) -> dict[str, bool]:
        """Merge suites; returns ``{"<suite>.<function>": newly added}``. Validates everything first."""
        check_name(exec_package, "exec_package", allow_empty=True)
        check_target(exec_target)
        for package, service, functions in infos:
            check_name(package, "suite.package_path")
            check_name(service, "suite.service")
            if len(functions) > MAX_FUNCTIONS:
                raise RunnerError("UnmarshalError", f"suite.function_name: at most {MAX_FUNCTIONS}")
            for fn in functions:
                check_name(fn, "suite.function_name")
        new_names = {f"{p}.{s}" for p, s, _ in infos} - set(self.suites)
        if len(self.suites) + len(new_names) > MAX_SUITES:
            raise RunnerError("Internal", f"at most {MAX_SUITES} suites on a node")
        for package, service, functions in infos:
            old = self.suites.get(f"{package}.{service}")
            if len(set(old.functions if old else ()) | set(functions)) > MAX_FUNCTIONS:
                raise RunnerError("UnmarshalError", f"suite {package}.{service}: at most {MAX_FUNCTIONS} functions")
        total = sum(len(s.functions) for s in self.suites.values()) + sum(len(f) for _, _, f in infos)
        if total > MAX_TESTS:
            raise RunnerError("Internal", f"at most {MAX_TESTS} tests on a node")
        result: dict[str, bool] = {}
        for package, service, functions in infos:
            name = f"{package}.{service}"
            suite = self.suites.setdefault(name, Suite(package, service))
            suite.exec_package, suite.exec_target = exec_package, exec_target
            present = set(suite.functions)
            for fn in functions:
                key = f"{name}.{fn}"
                if key not in result:
                    result[key] = fn not in present
                if fn not in present:
                    suite.functions.append(fn)
                    present.add(fn)
        self._save()
        return result

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump([asdict(s) for s in self.suites.values()], fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
