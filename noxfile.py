"""Developer and CI sessions: ``nox -s lint typecheck tests`` is the test command.

Every session installs through uv from the committed ``uv.lock``, into an
environment of its own.  ``tests`` runs once per package, in an environment
that holds only that package, its declared dependencies and the shared test
tools, so a package that imports a sibling it does not declare fails there.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.error_on_external_run = True

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())


def sync(session: nox.Session, *args: str) -> None:
    """Install into the session's environment exactly what ``args`` select."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        silent=True,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint rules and formatting."""
    sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package, its tests, and the tooling."""
    sync(session, "--all-packages", "--group", "typecheck", "--group", "bench")
    sources = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
    sources += ["tools/testkit/src", "conftest.py", "noxfile.py"]
    sources += ["docs/gen_state_diagrams.py"]
    sources += [str(p) for p in sorted(ROOT.glob("benchmarks/*.py"))]
    sources += [str(p) for p in sorted(ROOT.glob("fuzz/*.py"))]
    sources += [str(p) for p in sorted(ROOT.glob("examples/*.py"))]
    session.run("mypy", *sources)
    # Test directories hold modules of the same names (test_x.py in two
    # packages), so each is checked on its own.
    for tests_dir in sorted((ROOT / "packages").glob("*/tests")):
        session.run("mypy", str(tests_dir))


@nox.session
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Pytest for one package, on asyncio and trio, in its own environment."""
    sync(session, "--package", package, "--group", "test")
    env = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    session.run("pytest", f"packages/{package}/tests", *session.posargs, env=env)


@nox.session
def examples(session: nox.Session) -> None:
    """The programs in examples/, run as documented against real servers."""
    sync(session, "--all-packages", "--group", "test")
    session.run("pytest", "examples", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the parsers, then their properties, for a bounded time.

    ``nox -s fuzz -- SECONDS`` sets the time per target (default 60): each
    atheris target in fuzz/, then smtp-message's hypothesis properties with
    the "fuzz" profile (conftest.py), sized to take about SECONDS in all.
    """
    sync(session, "--package", "smtp-message", "--group", "fuzz", "--group", "test")
    seconds = session.posargs[0] if session.posargs else "60"
    (ROOT / "fuzz" / "artifacts").mkdir(exist_ok=True)
    for target in sorted((ROOT / "fuzz").glob("fuzz_*.py")):
        session.run(
            "python",
            str(target),
            f"-max_total_time={seconds}",
            "-rss_limit_mb=1024",
            # Crash inputs go to fuzz/artifacts/ (ignored), not the repository root.
            f"-artifact_prefix={ROOT / 'fuzz' / 'artifacts'}/",
        )
    # Every @given test (hypothesis's pytest plugin marks them "hypothesis");
    # one property running longer than the whole budget is a hang.
    env = {"HYPOTHESIS_PROFILE": "fuzz", "HYPOTHESIS_FUZZ_SECONDS": seconds}
    timeout = max(120, int(float(seconds)))
    session.run(
        "pytest", "packages/smtp-message/tests", "-m", "hypothesis", f"--timeout={timeout}", env=env
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each against its reference implementation in the same run."""
    sync(session, "--all-packages", "--group", "bench")
    # bench_idle last: its tens of thousands of connections leave sockets in
    # TIME_WAIT, which would starve the others of local ports for a minute.
    scripts = sorted(
        (ROOT / "benchmarks").glob("bench_*.py"), key=lambda p: p.name == "bench_idle.py"
    )
    for script in scripts:
        session.run("python", str(script), *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning is an error."""
    sync(session, "--all-packages", "--group", "docs")
    session.run("python", "docs/gen_state_diagrams.py")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
