"""The two distributions as an integrator and an operator get them: built, then installed in fresh virtualenvs.

The tests marked `dist` build both wheels once (python -m build, about a minute) and install
them with pip from the machine's normal index: skip them with `-m 'not dist'`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from email.parser import HeaderParser
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

import ordercancel.client
from ordercancel import cli
from ordercancel.client import _version
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory

ROOT = Path(__file__).resolve().parent.parent
VERSION = _version.__version__
#: What the server needs and an integrator of the client must not be made to install.
SERVER_DEPENDENCIES = {"uvicorn", "sqlalchemy", "psycopg", "psycopg-binary", "psycopg-pool", "orjson", "defusedxml"}


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fresh_venv(path: Path) -> Path:
    """Make a virtualenv with pip and nothing else; return its python."""
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def installed(python: Path) -> dict[str, str]:
    rows = json.loads(run(python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"))
    return {row["name"].lower().replace("_", "-"): row["version"] for row in rows}


def metadata(wheel: Path) -> tuple[list[str], list[str]]:
    """Return a wheel's file names and its Requires-Dist lines (the extras' left out)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta] = [name for name in names if name.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(archive.read(meta).decode())
    requires = [line for line in headers.get_all("Requires-Dist") or [] if "extra ==" not in line]
    return names, requires


# The version, in one place ------------------------------------------------------------------


def test_the_server_and_the_client_report_the_version_written_in_the_client_package() -> None:
    assert ordercancel.__version__ == ordercancel.client.__version__ == VERSION


def test_the_servers_pin_on_the_client_names_that_same_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [line for line in project["dependencies"] if line.startswith("ordercancel-client")]
    assert pins == [f"ordercancel-client=={VERSION}"], "bump the pin with src/ordercancel/client/_version.py"


def test_the_changelog_opens_with_this_version() -> None:
    releases = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## [")]
    assert releases[0] == "## [Unreleased]"
    assert releases[1].startswith(f"## [{VERSION}] - ")


def test_ordercancel_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ordercancel {VERSION}"


# The built distributions --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build both sdists and wheels, as `make dist` does, into a directory of the test's own."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT / "client", cwd=ROOT)
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def client_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv holding the client wheel alone (httpx and its own from the normal index)."""
    python = fresh_venv(tmp_path_factory.mktemp("client-venv") / "venv")
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        dist / wheel_name("ordercancel_client"),
    )
    yield python


def wheel_name(distribution: str) -> str:
    return f"{distribution}-{VERSION}-py3-none-any.whl"


@pytest.mark.dist
def test_make_dist_builds_a_wheel_and_an_sdist_of_each_distribution(dist: Path) -> None:
    assert sorted(path.name for path in dist.iterdir()) == [
        f"ordercancel-{VERSION}-py3-none-any.whl",
        f"ordercancel-{VERSION}.tar.gz",
        f"ordercancel_client-{VERSION}-py3-none-any.whl",
        f"ordercancel_client-{VERSION}.tar.gz",
    ]


@pytest.mark.dist
def test_the_client_wheel_holds_the_client_package_alone_and_requires_only_httpx(dist: Path) -> None:
    names, requires = metadata(dist / wheel_name("ordercancel_client"))
    packaged = [name for name in names if ".dist-info/" not in name]
    assert sorted(packaged) == [
        "ordercancel/client/__init__.py",
        "ordercancel/client/_version.py",
        "ordercancel/client/py.typed",
        "ordercancel/client/webhooks.py",
    ]
    assert "ordercancel/__init__.py" not in names  # a namespace portion: it must not shadow the server's package
    assert requires == ["httpx>=0.27"]


@pytest.mark.dist
def test_the_server_wheel_leaves_the_client_out_and_requires_it_at_its_own_version(dist: Path) -> None:
    names, requires = metadata(dist / wheel_name("ordercancel"))
    assert "ordercancel/__init__.py" in names
    assert "ordercancel/storage/migrations/versions/0001_initial.py" in names
    assert [name for name in names if name.startswith("ordercancel/client/")] == []
    assert f"ordercancel-client=={VERSION}" in requires


@pytest.mark.dist
def test_the_client_installed_alone_brings_no_server_dependency(client_venv: Path) -> None:
    packages = installed(client_venv)
    assert packages["ordercancel-client"] == VERSION
    assert "httpx" in packages
    assert "ordercancel" not in packages
    assert SERVER_DEPENDENCIES & packages.keys() == set()


#: Run by the client-only virtualenv's python: both formats, both endpoints, and the 507 after.
CLIENT_SCRIPT = """
import json, sys
from ordercancel.client import AlreadyCancelled, Client, __version__
try:
    import ordercancel.domain
except ModuleNotFoundError:
    server_code = False
else:
    server_code = True
url, code, number, order_id = sys.argv[1:]
results = {"version": __version__, "server_code": server_code}
with Client(code, base_url=url, format="json") as client:
    done = client.cancel_by_number(number)
    results["json"] = [done.order_id, done.order_number]
with Client(code, base_url=url, format="xml") as client:
    done = client.cancel_by_id(order_id)
    results["xml"] = [done.order_id, done.order_number]
    try:
        client.cancel_by_number(number)
    except AlreadyCancelled as error:
        results["again"] = error.code
print(json.dumps(results))
"""


@pytest.mark.dist
def test_the_client_installed_alone_cancels_orders_on_a_live_server_in_json_and_xml(
    client_venv: Path, server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    by_number, by_id = make_order(), make_order()
    out = run(client_venv, "-c", CLIENT_SCRIPT, server.url, api_code, by_number.order_number, by_id.order_id)
    assert json.loads(out) == {
        "version": VERSION,
        "server_code": False,
        "json": [by_number.order_id, by_number.order_number],
        "xml": [by_id.order_id, by_id.order_number],
        "again": 507,
    }
    with engine.connect() as connection:
        statuses = connection.execute(
            text("SELECT status FROM orders WHERE order_id IN (:a, :b)"),
            {"a": by_number.order_id, "b": by_id.order_id},
        ).scalars()
        assert sorted(statuses) == ["Cancelled", "Cancelled"]


@pytest.mark.dist
def test_the_server_wheel_installs_with_the_client_wheel_and_migrates_a_database(dist: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    # --find-links: the server's pin on ordercancel-client is met by the wheel just built.
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--find-links",
        dist,
        dist / wheel_name("ordercancel"),
        dist / wheel_name("ordercancel_client"),
    )
    assert installed(python)["ordercancel"] == VERSION
    command = python.with_name("ordercancel")
    assert run(command, "--version").strip() == f"ordercancel {VERSION}"
    database = f"sqlite:///{tmp_path / 'ordercancel.db'}"
    assert "database at head" in run(command, "db", "upgrade", "--database-url", database, cwd=tmp_path)
    assert run(command, "keys", "create", "--database-url", database, cwd=tmp_path).strip()
