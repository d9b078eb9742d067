"""The distribution as PyPI would get it: an sdist and a wheel built from it, accepted by
``twine check``, holding every package file, and a wheel that runs the demo from a fresh
virtualenv (a missing data file would fail there, not in the editable checkout); and a
quickstart run as written, from a fresh virtualenv with one framework extra."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "twilio_feedback"


def _package_files() -> set[str]:
    """Every file of the package in the source tree, as ``twilio_feedback/...`` paths."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def _data_files() -> set[str]:
    return {name for name in _package_files() if not name.endswith(".py")}


def _env() -> dict[str, str]:
    """No Twilio credentials (the demo needs none), no source tree on the path."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TWILIO_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist, then the wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    [wheel] = dist.glob("twilio_feedback-*.whl")
    return wheel


def _sdist(dist: Path) -> Path:
    [sdist] = dist.glob("twilio_feedback-*.tar.gz")
    return sdist


def test_the_package_has_data_files_to_check() -> None:
    assert "twilio_feedback/py.typed" in _data_files()
    assert "twilio_feedback/stores/lua/confirm.lua" in _data_files()  # the Redis scripts


def test_twine_accepts_both(dist: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(_wheel(dist)), str(_sdist(dist))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_holds_every_package_file(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
    missing = _package_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "Typing :: Typed" in meta
    assert "License-Expression: MIT" in meta
    # The README is the long description; PyPI needs absolute links in it.
    assert "](docs/" not in meta
    assert "](bench/" not in meta


def test_the_sdist_holds_what_the_docs_and_tests_need(dist: Path) -> None:
    with tarfile.open(_sdist(dist)) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {f"src/{name}" for name in _package_files()}
    expected |= {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "mkdocs.yml"}
    missing = expected - names
    assert not missing, f"not in the sdist: {sorted(missing)}"


def test_the_wheel_runs_the_demo_from_a_fresh_virtualenv(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{_wheel(dist)}[demo]"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    where = subprocess.run(
        [str(python), "-c", "import twilio_feedback; print(twilio_feedback.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=tmp_path,
        check=True,
    )
    installed = Path(where.stdout.strip()).parent
    assert installed.is_relative_to(env_dir), installed
    missing = {name for name in _data_files() if not (installed.parent / name).is_file()}
    assert not missing, f"not installed: {sorted(missing)}"

    demo = subprocess.run(
        [str(env_dir / "bin" / "twilio-feedback"), "demo", "--twilio-latency", "0.2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "reported    1 Outcome=confirmed post(s), 0 failed" in demo.stdout
    assert "result      all good" in demo.stdout


# The quickstart's install line, what the app is served with, and the environment it adds.
QUICKSTARTS = {
    # FastAPI: the most used, and an ASGI app on the startup-built middleware (Starlette
    # comes with it). Flask: the WSGI side, the extension, a key derived from SECRET_KEY.
    "fastapi": ("uvicorn", ["uvicorn", "fastapi_app:app"], {}),
    "flask": (
        "gunicorn",
        ["gunicorn", "flask_app:create_app()", "--workers", "2"],
        {"FLASK_SECRET_KEY": "a-flask-secret-key-0123456789abcdef-0123"},
    ),
}


@pytest.mark.parametrize("framework", sorted(QUICKSTARTS))
def test_a_quickstart_runs_as_written_from_a_fresh_virtualenv(
    dist: Path, tmp_path: Path, framework: str
) -> None:
    """``pip install 'twilio-feedback[<framework>]' <server>`` in a fresh virtualenv, the
    example app copied as the quickstart shows it, its server, the quickstart's
    ``sqlite:///`` store, and a link confirmed and reported through the emulator."""
    import shutil

    import httpx

    from twilio_feedback.testing import FakeTwilio

    from .servers import free_port, wait_until

    server, command, extra_env = QUICKSTARTS[framework]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    install = subprocess.run(
        [*pip, f"{_wheel(dist)}[{framework}]", server],
        capture_output=True,
        text=True,
        timeout=400,
        env=_env(),
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(ROOT / "examples" / f"{framework}_app.py", app_dir)

    port = free_port()
    with FakeTwilio() as fake:
        env = {
            **_env(),
            **fake.environ(),
            "TWILIO_PHONE_NUMBER": "+15017122661",
            "TWILIO_FEEDBACK_STORE": "sqlite:///feedback.db",
            **extra_env,
        }
        if not extra_env:
            env["TWILIO_FEEDBACK_SECRET_KEY"] = "a-key-of-at-least-32-characters-0123456789"
        bind = ["--port", str(port)] if server == "uvicorn" else ["--bind", f"127.0.0.1:{port}"]
        log = (tmp_path / "server.log").open("wb")
        process = subprocess.Popen(
            [str(env_dir / "bin" / command[0]), *command[1:], *bind],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=10, trust_env=False) as http:

                def up() -> bool:
                    assert process.poll() is None, (tmp_path / "server.log").read_text()
                    try:
                        return http.post(f"{url}/send", json={"to": "+15558675310"}).is_success
                    except httpx.TransportError:
                        return False

                wait_until(up, 60, "the app answering")
                link = fake.last_link(to="+15558675310")
                browser = {"User-Agent": "Mozilla/5.0 (iPhone) Safari/604.1"}
                assert http.get(link, headers=browser).json()["status"] == "confirmed"
                assert http.get(link, headers=browser).json()["status"] == "duplicate"
                fake.wait_for_feedback(1, timeout=15)
        finally:
            process.terminate()
            process.wait(20)
            log.close()
    assert (app_dir / "feedback.db").is_file()  # the durable store the extra brought
