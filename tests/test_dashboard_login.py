"""The dashboard's login, run by Streamlit's AppTest against a real bus."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import council.dashboard
from council.bus.transport.server import EmbeddedNats
from council.dashboard.config import ENV, DashboardConfig

APP = Path(council.dashboard.__file__).parent / "app.py"


@pytest.fixture
def app(nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    config = DashboardConfig(nats_url=nats_server.url, login="opensesame")
    monkeypatch.setenv(ENV, config.env()[ENV])
    return AppTest.from_file(str(APP), default_timeout=30)


def test_with_a_login_set_no_page_shows_until_the_password_is_given(app: AppTest) -> None:
    app.run()
    assert not app.exception
    assert [t.label for t in app.text_input] == ["Name", "Password"]
    assert [t.value for t in app.title] == ["council"]  # and no page's title

    app.text_input[1].input("wrong")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Wrong password."]
    assert [t.value for t in app.title] == ["council"]

    app.text_input[1].input("opensesame")
    app.button[0].click().run()
    assert not app.exception
    assert "Password" not in [t.label for t in app.text_input]  # the form is gone …
    assert [t.value for t in app.title] == ["Chat with the council"]  # … for the first page
