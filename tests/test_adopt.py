"""The hub in the user's own project: the packaged demo, project discovery, `hub init`, the Dagster component.

The slow tests drive the real `dg` CLI (dagster-dg-cli, pinned with Dagster) on projects made in temporary
folders, and build the wheel and install it into a new virtual environment outside the checkout.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from hub import project
from hub.cli.main import app
from hub.scaffold import init, package_name
from tests.conftest import DEMO_ESTATE, REPO

BIN = Path(sys.executable).parent


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in (Path(d, n) for d, _, names in os.walk(folder, followlinks=True) for n in names)
            if "__pycache__" not in p.parts}


def test_packaged_demo_is_the_checkouts_demo() -> None:
    """One source of truth: what ships as hub/demo/project is exactly pipelines/demo.yaml and contracts/demo/."""
    shipped = _files(project.packaged_demo())
    checkout = {"pipelines/demo.yaml": (REPO / "pipelines" / "demo.yaml").read_bytes(),
                **{f"contracts/demo/{k}": v for k, v in _files(REPO / "contracts" / "demo").items()}}
    assert shipped == checkout


def test_project_found_from_any_folder_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    (root / "specs" / "deep").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.hub]\npipelines = ["specs"]\n')
    monkeypatch.delenv(project.ENV, raising=False)
    monkeypatch.chdir(root / "specs" / "deep")
    found = project.current()
    assert found.root == root.resolve()
    assert found.spec_folders == (root.resolve() / "specs",)
    bare = tmp_path / "bare"
    bare.mkdir()
    assert project.find(bare).root == bare.resolve()  # no marker anywhere above: the folder itself
    (root / "pyproject.toml").write_text('[tool.hub]\npipelines = 3\n')
    with pytest.raises(project.HubError, match=r"\[tool.hub\] pipelines must be a folder"):
        project.find(root)


def test_hub_init_scaffolds_a_project_that_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "My Data"
    res = CliRunner().invoke(app, ["init", str(target)])
    assert res.exit_code == 0, res.output
    names = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert {".gitignore", ".env.example", "README.md", "pyproject.toml", "workspace.yaml", "pipelines/example.yaml",
            "contracts/example/customers.suite.yaml", "my_data/definitions.py", "my_data/defs/__init__.py"} <= names
    ignored = (target / ".gitignore").read_text().split()
    assert {"warehouse/", ".hub/", ".dagster/", "reports/", ".env"} <= set(ignored)
    assert "CRM_TOKEN=" in (target / ".env.example").read_text()  # every variable the example reads
    assert 'root_module = "my_data"' in (target / "pyproject.toml").read_text()
    # from a subfolder, with no spec argument resolved against the cwd: --project and discovery both work
    monkeypatch.delenv(project.ENV, raising=False)
    monkeypatch.chdir(target / "contracts")
    res = CliRunner().invoke(app, ["validate", "pipelines/example.yaml"])
    assert res.exit_code == 0, res.output
    assert f"project root {target.resolve()}" in " ".join(res.output.split())
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["--project", str(target), "validate", "pipelines/example.yaml"])
    assert res.exit_code == 0, res.output
    # running it again keeps what is there (the user's edits)
    (target / "README.md").write_text("mine\n")
    res = CliRunner().invoke(app, ["init", str(target)])
    assert res.exit_code == 0 and "kept  README.md" in res.output
    assert (target / "README.md").read_text() == "mine\n"
    assert package_name("2024 reports") == "2024_reports_project" and package_name("hub") == "hub_project"


def test_demo_installs_into_the_project_only(tmp_path: Path) -> None:
    written = project.install_demo(tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in written}
    assert {"pipelines/demo.yaml", "contracts/demo/erp_orders.suite.yaml", "workspace.yaml",
            "pipelines/definitions.py"} <= names
    assert project.install_demo(tmp_path) == []  # what is there is kept
    res = CliRunner().invoke(app, ["--project", str(tmp_path), "validate", "pipelines/demo.yaml"])
    assert res.exit_code == 0, res.output


def test_nothing_locates_project_files_from_the_package() -> None:
    """No module of hub/ builds a path from its own location (``Path(__file__)``): project files are found from
    where the user stands. The scaffold's files are the user's code, where it is right."""
    offenders = []
    for path in (REPO / "hub").rglob("*.py"):
        if "scaffold/files" in str(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id == "__file__":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_unknown_project_folder_is_one_clear_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["--project", str(tmp_path / "nope"), "validate", "x.yaml"])
    assert res.exit_code == 1 and "not a directory" in res.output


# -- the real dg CLI ----------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def _tool(name: str) -> str:
    exe = BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' installs dagster-dg-cli and create-dagster)")
    return str(exe)


EXAMPLE_DEFS = """\
type: hub.dagster.HubPipeline
attributes:
  spec: example.yaml
"""

INLINE_DEFS = """\
type: hub.dagster.HubPipeline
attributes:
  spec:
    pipeline: inline_contacts
    partitions: {daily: {start: 2024-01-01}}
    systems:
      crm2: {rest: {base_url: "${CRM_URL}", auth: {bearer: "${CRM_TOKEN}"}}}
    sources:
      contacts_inline:
        system: crm2
        request: {path: /contacts, params: {since: "{{ partition.start }}", until: "{{ partition.end }}"}}
        records: $.items[*]
        paginate: {cursor: {param: cursor, cursor_path: $.next_cursor}}
"""


@pytest.mark.slow
def test_component_in_a_create_dagster_project(tmp_path: Path) -> None:
    """create-dagster project, then a pipeline as a defs.yaml (a spec file, and one inline): dg check defs,
    dg list defs, dg list components and dg launch of a partition against the demo CRM."""
    from hub.demo.crm import DEMO_TOKEN, CRMService

    create, dg = _tool("create-dagster"), _tool("dg")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           "DG_CLI_SUPPRESS_WARNINGS": "1"}
    env.pop(project.ENV, None)
    _run([create, "project", "shop", "--no-uv-sync"], tmp_path, env)
    proj = tmp_path / "shop"
    # The checkout is an editable install whose entry points may predate the component's: the project names
    # the registry module itself (an installed wheel declares it; see the wheel test).
    pyproject = proj / "pyproject.toml"
    text = pyproject.read_text().replace("registry_modules = [", 'registry_modules = [\n    "hub.dagster",')
    pyproject.write_text(text)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(proj / "src")])
    orders = proj / "src" / "shop" / "defs" / "crm"
    orders.mkdir(parents=True)
    init(tmp_path / "scratch")
    shutil.copy(tmp_path / "scratch" / "pipelines" / "example.yaml", orders / "example.yaml")
    (orders / "example.yaml").write_text((orders / "example.yaml").read_text().split("\nchecks:")[0])
    (orders / "defs.yaml").write_text(EXAMPLE_DEFS)
    (proj / "src" / "shop" / "defs" / "inline").mkdir()
    (proj / "src" / "shop" / "defs" / "inline" / "defs.yaml").write_text(INLINE_DEFS)

    assert "All definitions loaded successfully" in _run([dg, "check", "defs"], proj, env).stdout
    listed = json.loads(_run([dg, "list", "defs", "--json"], proj, env).stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {"customers", "contacts", "contacts_per_channel", "contacts_inline"} <= assets
    assert any(s["name"] == "example_schedule" for s in listed["schedules"])
    assert "hub.dagster.HubPipeline" in _run([dg, "list", "components"], proj, env).stdout

    with CRMService(port=0) as crm:
        env.update({"CRM_URL": crm.url, "CRM_TOKEN": DEMO_TOKEN})
        _run([dg, "launch", "--assets", "customers"], proj, env)
        _run([dg, "launch", "--assets", "contacts", "--partition", "2024-01-02"], proj, env)
    with duckdb.connect(str(proj / "warehouse" / "hub.duckdb"), read_only=True) as con:
        customers = con.execute("select count(*) from customers").fetchone()
        days = con.execute("select distinct _hub_partition from contacts").fetchall()
    assert customers is not None and customers[0] > 0
    assert days == [("2024-01-02",)]


@pytest.mark.slow
def test_hub_init_project_is_a_dg_project(tmp_path: Path) -> None:
    """A `hub init` project loads in `dg` as it is (flat layout, no install): pipelines/ and defs/ together."""
    dg = _tool("dg")
    init(tmp_path / "proj")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO),
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    assert "All definitions loaded successfully" in _run([dg, "check", "defs"], tmp_path / "proj", env).stdout
    listed = json.loads(_run([dg, "list", "defs", "--json"], tmp_path / "proj", env).stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {"customers", "contacts", "contacts_per_channel"}
    # the workspace route (hub ui / dagster dev -w workspace.yaml) loads the same code location
    res = _run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], tmp_path / "proj", env)
    assert "All code locations passed validation" in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dg_dev_serves_a_hub_init_project_and_stops_cleanly(tmp_path: Path) -> None:
    """`dg dev` in a `hub init` project: the webserver lists the hub's assets with their checks and schedule;
    Ctrl-C (SIGINT to its process group, as a terminal sends it) stops dg, the webserver, the daemon and the
    code server, leaving no process behind."""
    import psutil

    from tests.dagster_ui import GraphQL, free_port

    dg = _tool("dg")
    init(tmp_path / "proj")
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO),
           "DAGSTER_HOME": str(tmp_path / "dagster_home"), "DG_CLI_SUPPRESS_WARNINGS": "1"}
    env.pop(project.ENV, None)
    log = tmp_path / "dg-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([dg, "dev", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path / "proj",
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    gql = GraphQL(f"http://127.0.0.1:{port}")
    tree: set[int] = {proc.pid}
    try:
        deadline, last = time.monotonic() + 300, ""
        assets: set[str] = set()
        checked: set[str] = set()
        while time.monotonic() < deadline and not {"customers", "contacts", "contacts_per_channel"} <= assets:
            assert proc.poll() is None, f"dg dev exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            try:
                data = gql("{ assetNodes { assetKey { path } hasAssetChecks } }")
                assets = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
                checked = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"] if n["hasAssetChecks"]}
            except Exception as exc:  # not answering yet, or the code location still loading
                last = repr(exc)
            time.sleep(1)
        assert {"customers", "contacts", "contacts_per_channel"} <= assets, f"{assets} {last}\n" \
            + log.read_text(errors="replace")[-3000:]
        assert "customers" in checked, f"the example suite's checks are missing: {checked}"
        tree |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        assert len(tree) >= 3, "dg dev should run a webserver, a daemon and a code server"
        repos = gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name } } } } }")
        schedules = {s["name"] for r in repos["repositoriesOrError"]["nodes"] for s in r["schedules"]}
        assert "example_schedule" in schedules, schedules
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        def running(pid: int) -> bool:
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        deadline = time.monotonic() + 30
        alive = [p for p in tree if running(p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [p for p in alive if running(p)]
        assert not alive, f"processes of dg dev still running after Ctrl-C: {alive}"
    finally:
        gql.close()
        for pid in tree:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                psutil.Process(pid).kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _wrapper(venv: Path, name: str, call: str) -> None:
    """A console script in *venv* for a tool whose package comes from the shared site-packages."""
    path = venv / "bin" / name
    path.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {call.rpartition('.')[0]} import "
                    f"{call.rpartition('.')[2]}\nsys.exit({call.rpartition('.')[2]}())\n")
    path.chmod(0o755)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group(DEMO_ESTATE)  # its `hub demo` uses the demo's fixed queues, topic and MQTT session
def test_wheel_in_a_new_virtual_environment(tmp_path: Path) -> None:
    """Build the wheel, install it into a new virtual environment outside the checkout, and follow the docs
    there: hub init, hub validate, hub demo, dg check defs, the component found through its entry point. The
    environment takes the third-party dependencies from this one's site-packages (a path in a .pth file), so
    the test needs no network; the hub itself comes only from the wheel."""
    _tool("dg")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", project.ENV, "HUB_WAREHOUSE",
                                                            "DAGSTER_HOME", "HUB_STATE_DIR")}
    env["PYTHONWARNINGS"] = "ignore"
    wheels = tmp_path / "wheels"
    # built from a copy of the checkout: setuptools writes build/ and hub.egg-info/ into the folder it builds,
    # and the checkout's hub.egg-info is what other tests' processes read the hub's entry points from meanwhile
    source = tmp_path / "source"
    everywhere = shutil.ignore_patterns("__pycache__", "*.egg-info")
    at_top = shutil.ignore_patterns(".git", ".venv", "build", "dist", "reports", ".hub", ".dagster", "warehouse",
                                    ".*_cache", ".hypothesis", "tmp*")  # the checkout's own, not hub/warehouse/

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(everywhere(folder, names)) | (set(at_top(folder, names)) if Path(folder) == REPO else set())

    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(wheels)], tmp_path, env, timeout=300)
    (wheel,) = wheels.glob("hub-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).stdout.strip())
    import dagster

    (site / "_shared_deps.pth").write_text(str(Path(dagster.__file__).parents[1]) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)
    _wrapper(venv, "dg", "dagster_dg_cli.cli.main")
    _wrapper(venv, "dagster", "dagster.cli.main")
    env.update({"PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)})
    where = _run([str(py), "-c", "import hub; print(hub.__file__)"], tmp_path, env).stdout.strip()
    assert where.startswith(str(site)), where  # the installed package, not the checkout
    before = {p for p in (site / "hub").rglob("*") if "__pycache__" not in p.parts}

    work = tmp_path / "work"
    work.mkdir()
    hub = str(venv / "bin" / "hub")
    _run([hub, "init", "analytics"], work, env)
    proj = work / "analytics"
    assert "ok pipelines/example.yaml" in _run([hub, "validate", "pipelines/example.yaml"], proj, env).stdout
    demo = _run([hub, "demo"], proj, env, timeout=600)
    assert "revenue_by_region" in demo.stdout and (proj / "warehouse" / "hub.duckdb").is_file()
    assert (proj / "contracts" / "demo" / "erp_orders.suite.yaml").is_file()
    assert "All definitions loaded successfully" in _run(["dg", "check", "defs"], proj, env).stdout
    # the component, found through the wheel's dagster_dg_cli.registry_modules entry point
    assert "hub.dagster.HubPipeline" in _run(["dg", "list", "components"], proj, env).stdout
    after = {p for p in (site / "hub").rglob("*") if "__pycache__" not in p.parts}
    assert after == before  # nothing was written into the installed package
