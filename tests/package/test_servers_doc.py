"""docs/servers.md's version table says what .ci/constraints/servers-*.txt pin, and no lower bound in
pyproject.toml admits a minor release older than the oldest tested (granian>=1.6 with 1.6.4 tested: the index
has no older 1.6 release)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def table() -> dict[str, tuple[str, str]]:
    """package -> (oldest, newest), from the table of docs/servers.md."""
    rows = re.findall(
        r"^\| [a-z]+ \| ([A-Za-z]+) \| ([0-9.]+) \| ([0-9.]+) \|", (ROOT / "docs/servers.md").read_text(), re.M
    )
    return {package.lower(): (oldest, newest) for package, oldest, newest in rows}


def pins(name: str) -> dict[str, str]:
    text = (ROOT / ".ci/constraints" / f"servers-{name}.txt").read_text()
    return {package.lower(): version for package, version in re.findall(r"^([A-Za-z0-9_-]+)==(\S+)", text, re.M)}


def test_the_version_table_is_what_the_constraint_files_pin() -> None:
    documented = table()
    assert set(documented) == {"daphne", "twisted", "autobahn", "uvicorn", "websockets", "granian"}, documented
    assert {package: oldest for package, (oldest, _) in documented.items()} == pins("oldest")
    assert {package: newest for package, (_, newest) in documented.items()} == pins("newest")


def test_no_lower_bound_admits_a_release_older_than_the_oldest_tested() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    requirements += [Requirement(line) for lines in project["optional-dependencies"].values() for line in lines]
    oldest = pins("oldest")
    bounded = set()
    for requirement in requirements:
        name = requirement.name.lower()
        if name not in oldest:
            continue
        bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert bounds, f"{requirement}: no lower bound; the oldest tested is {oldest[name]}"
        minor = Version(oldest[name]).release[:2]
        assert max(bounds) >= Version(".".join(map(str, minor))), (str(requirement), oldest[name])
        assert requirement.specifier.contains(oldest[name]), (str(requirement), oldest[name])
        bounded.add(name)
    assert bounded == {"daphne", "websockets", "uvicorn", "granian"}, bounded


def test_the_names_read_table_is_what_server_io_declares() -> None:
    from django_pulse.server._io.contract import REQUIREMENTS

    text = (ROOT / "docs/servers.md").read_text()
    section = text.split("## Names read", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z]+) \| ([A-Za-z]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    documented = [
        (server, package, holder.strip(), tuple(re.findall(r"`([^`]+)`", names)))
        for server, package, holder, names in rows
        if server != "server"
    ]
    declared = [(r.server, r.distribution, r.holder, r.names) for r in REQUIREMENTS]
    assert documented == declared
