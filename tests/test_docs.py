"""The documentation site, built as CI and Read the Docs build it (``mkdocs build --strict``):
the generated parts are complete and the guides link into the API reference."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from twilio_feedback import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"
REFERENCE_PAGES = {
    "twilio_feedback": "twilio_feedback",
    "settings": "twilio_feedback.settings",
    "tracker": "twilio_feedback.tracker",
    "records": "twilio_feedback.records",
    "errors": "twilio_feedback.errors",
    "tokens": "twilio_feedback.tokens",
    "confirm": "twilio_feedback.confirm",
    "bots": "twilio_feedback.bots",
    "asgi": "twilio_feedback.asgi",
    "wsgi": "twilio_feedback.wsgi",
    "starlette": "twilio_feedback.starlette",
    "flask": "twilio_feedback.flask",
    "django": "twilio_feedback.django",
    "stores": "twilio_feedback.stores",
    "testing": "twilio_feedback.testing",
    "cli": "twilio_feedback.cli",
    "report": "twilio_feedback.report",
    "telemetry": "twilio_feedback.telemetry",
    "delivery": "twilio_feedback.delivery",
    "worker": "twilio_feedback.worker",
    "health": "twilio_feedback.health",
    "insights": "twilio_feedback.insights",
    "celery": "twilio_feedback.celery",
}


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", HOOKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


def _rows(html: str) -> dict[str, str]:
    """Table rows of the settings table, by the field name they anchor."""
    rows = re.findall(r"<tr>.*?</tr>", html, flags=re.DOTALL)
    found = {}
    for row in rows:
        anchor = re.search(r'<span id="([a-z_0-9]+)"></span>', row)
        if anchor:
            found[anchor.group(1)] = row
    return found


def test_the_configuration_page_lists_every_setting(site: Path) -> None:
    rows = _rows(_page(site, "configuration"))
    fields = dataclasses.fields(Settings)
    assert set(rows) == {f.name for f in fields}
    for field in fields:
        row = rows[field.name]
        for name in Settings.env_names()[field.name]:
            assert f"<code>{name}</code>" in row, (field.name, name)
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.DOTALL)
        assert len(cells) == 4, row
        assert "<br><code>" in cells[0], f"{field.name}: no type shown"
        assert cells[2].strip(), f"{field.name}: no default shown"
        assert cells[3].strip(), f"{field.name}: no description (a field docstring is missing)"
    assert "<code>604800.0</code> (7 days)" in rows["token_max_age"]
    assert "<code>memory://</code>" in rows["store"]


def test_a_new_setting_shows_up_without_touching_the_docs() -> None:
    @dataclasses.dataclass(frozen=True)
    class Extended(Settings):
        shiny_new_knob: int = 7

    table = _hook("generated").settings_table(Extended)
    row = next(line for line in table.splitlines() if 'id="shiny_new_knob"' in line)
    assert "`TWILIO_FEEDBACK_SHINY_NEW_KNOB`" in row
    assert "`7`" in row
    assert "<br>`int`" in row


def test_every_public_module_has_a_reference_page(site: Path) -> None:
    for page, module in REFERENCE_PAGES.items():
        html = _page(site, f"reference/{page}")
        assert f'id="{module}"' in html, page


def test_docstrings_render_as_markdown_with_links(site: Path) -> None:
    for page in REFERENCE_PAGES:
        html = _page(site, f"reference/{page}")
        assert ":class:`" not in html, page
        assert ":meth:`" not in html, page
        assert ".. code-block::" not in html, page
    settings = _page(site, "reference/settings")
    # Settings.store's docstring names the Store protocol: a link to the stores page.
    assert 'href="../stores/#twilio_feedback.stores.Store"' in settings
    asgi = _page(site, "reference/asgi")
    assert '<code class="language-python"' in asgi or "highlight" in asgi


def test_the_package_page_lists_every_public_name(site: Path) -> None:
    import twilio_feedback

    html = _page(site, "reference/twilio_feedback")
    for name in twilio_feedback.__all__:
        if not name.startswith("__"):
            assert f"<code>{name}</code></a>" in html, name


@pytest.mark.parametrize(
    ("page", "target"),
    [
        ("tracking", "reference/tracker/#twilio_feedback.tracker.FeedbackTracker.send"),
        ("tracking", "reference/records/#twilio_feedback.records.ConfirmResult"),
        ("middleware", "reference/asgi/#twilio_feedback.asgi.FeedbackMiddleware"),
        ("middleware", "reference/confirm/#twilio_feedback.confirm.ConfirmGate"),
        ("stores", "reference/stores/#twilio_feedback.stores.Store"),
        ("testing", "reference/testing/#twilio_feedback.testing.FakeTwilio"),
        ("configuration", "reference/settings/#twilio_feedback.settings.Settings"),
    ],
)
def test_guides_link_names_to_the_reference(site: Path, page: str, target: str) -> None:
    assert f'href="../{target}"' in _page(site, page)


def test_the_changelog_and_the_verify_page_are_in_the_site(site: Path) -> None:
    changelog = _page(site, "changelog")
    assert "Unreleased" in changelog
    assert "0.1.0" in changelog
    assert "Verify" in _page(site, "do-i-need-this")


def test_code_blocks_have_copy_buttons_and_the_site_knows_its_home() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assert "content.code.copy" in config
    assert "site_url: https://twilio-feedback.readthedocs.io/" in config
    assert "repo_url: https://github.com/twilio-feedback/twilio-feedback" in config


def test_read_the_docs_builds_the_same_site_with_the_docs_group() -> None:
    import yaml

    rtd = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert rtd["mkdocs"] == {"configuration": "mkdocs.yml", "fail_on_warning": True}
    install = " && ".join(rtd["build"]["jobs"]["install"])
    assert "pip install --upgrade pip" in install  # --group needs pip >= 25.1
    assert "pip install --group docs ." in install
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^docs = \[", pyproject, flags=re.MULTILINE)


def test_rest_blocks_become_fences() -> None:
    convert = _hook("griffe_markdown").blocks_to_markdown
    text = convert("Wrap it:\n\n.. code-block:: python\n\n    app = Wrap(app)\n\nThen go.")
    assert "\n```python\napp = Wrap(app)\n```\n" in text
    assert "code-block" not in text
    assert text.startswith("Wrap it:")
    assert text.endswith("\nThen go.")
    layout = convert("Layout::\n\n    version | id\n\nThat is all.")
    assert layout.startswith("Layout:\n")
    assert "\n```\nversion | id\n```\n" in layout
    assert layout.endswith("\nThat is all.")


def test_roles_become_links_or_code() -> None:
    convert = _hook("griffe_markdown").roles_to_markdown
    paths = {"Store.confirm": "twilio_feedback.stores.base.Store.confirm"}
    text = convert("See :meth:`Store.confirm`, :class:`~datetime.timedelta` and ``x``.", paths.get)
    assert (
        '<autoref identifier="twilio_feedback.stores.base.Store.confirm" optional>'
        "<code>Store.confirm</code></autoref>"
    ) in text
    assert "`timedelta`" in text
    assert "``x``" in text


def test_methods_without_a_docstring_inherit_their_base_s() -> None:
    import griffe

    inherit = _hook("griffe_markdown").inherit_docstrings
    code = (
        "class Base:\n"
        "    def run(self):\n"
        '        """The contract."""\n'
        "    def other(self):\n"
        '        """The base."""\n'
        "class Child(Base):\n"
        "    def run(self):\n"
        "        pass\n"
        "    def other(self):\n"
        '        """Its own."""\n'
    )
    with griffe.temporary_visited_module(code) as module:
        inherit(module["Child"])
        assert module["Child.run"].docstring.value == "The contract."
        assert module["Child.other"].docstring.value == "Its own."


def test_the_built_in_stores_show_the_store_contract(site: Path) -> None:
    html = _page(site, "reference/stores")
    contract = "Atomically move a live"  # the first words of Store.confirm's docstring
    for store in ("memory.MemoryStore", "sql.SQLStore", "redis.RedisStore"):
        anchor = f'id="twilio_feedback.stores.{store}.confirm"'
        assert anchor in html, store
        section = html.split(anchor, 1)[1].split('<div class="doc doc-object', 1)[0]
        assert contract in section, store


def test_the_metrics_page_lists_every_instrument(site: Path) -> None:
    from twilio_feedback.telemetry import INSTRUMENTS

    html = _page(site, "metrics-and-logs")
    prometheus_name = _hook("generated").prometheus_name
    for instrument in INSTRUMENTS:
        assert f'<span id="{instrument.name}"></span>' in html, instrument.name
        assert f"<code>{prometheus_name(instrument)}</code>" in html, instrument.name


def test_the_queries_on_the_metrics_page_name_real_series() -> None:
    from twilio_feedback.telemetry import INSTRUMENTS

    prometheus_name = _hook("generated").prometheus_name
    series = set()
    for instrument in INSTRUMENTS:
        name = prometheus_name(instrument)
        suffixes = ("_bucket", "_sum", "_count") if instrument.kind == "Histogram" else ("",)
        series |= {name + suffix for suffix in suffixes}
    page = (ROOT / "docs" / "metrics-and-logs.md").read_text()
    named = set(re.findall(r"\btwilio_feedback_[a-z_]+", page))
    assert named
    assert named <= series, named - series


def test_the_logs_section_lists_every_event(site: Path) -> None:
    html = _page(site, "metrics-and-logs")
    events = {c.event for c in _hook("generated").log_calls() if c.event}
    assert len(events) > 30
    for event in events:
        assert f'<span id="{event}"></span>' in html, event


QUICKSTARTS = ("fastapi", "starlette", "flask", "litestar", "quart")
_INCLUDE = re.compile(r'^\s*--8<-- "([^":]+)(?::(\w+))?"$', re.MULTILINE)


def _included(path: str, section: str | None) -> list[str]:
    """The lines of ``path`` (within ``section``) that a page including them shows."""
    lines = (ROOT / path).read_text().splitlines()
    if section is not None:
        start = lines.index(f"# --8<-- [start:{section}]")
        end = lines.index(f"# --8<-- [end:{section}]")
        lines = lines[start + 1 : end]
    return [line.strip() for line in lines if line.strip() and "--8<--" not in line]


def _text(html: str) -> str:
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


@pytest.mark.parametrize("framework", QUICKSTARTS)
def test_quickstarts_show_the_code_the_tests_run(site: Path, framework: str) -> None:
    """Every code block of a quickstart a user copies is included from an example app and
    its test, which the suite runs (tests/examples/): the two cannot drift."""
    source = (ROOT / "docs" / f"quickstart-{framework}.md").read_text()
    included = {path for path, _ in _INCLUDE.findall(source)}
    assert included == {f"examples/{framework}_app.py", f"tests/examples/test_{framework}_app.py"}
    text = _text(_page(site, f"quickstart-{framework}"))
    for path, section in _INCLUDE.findall(source):
        for line in _included(path, section or None):
            assert line in text, (framework, path, line)
    python_blocks = re.findall(r"```python\n(.*?)```", source, flags=re.DOTALL)
    assert python_blocks
    assert all(block.strip().startswith("--8<--") for block in python_blocks), framework
