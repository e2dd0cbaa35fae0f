"""What each URL gets: layered headers, a login only for its own host, secrets hidden."""

from __future__ import annotations

import base64

import pytest

from scraper.config import build_config
from scraper.crawl.credentials import Credentials, Login, read_credentials, seed_logins
from scraper.crawl.identity import Identities
from scraper.errors import ConfigError
from scraper.secrets import Secret


def test_headers_layer_user_agent_then_every_request_then_rules_then_login() -> None:
    credentials = Credentials(
        every=(("Accept-Language", "fr"), ("X-Team", "all")),
        rules=(
            (("https://api.example.com/*",), (("X-Team", "api"), ("X-Key", Secret("k")))),
            (("*/v2/*",), (("X-Team", "v2"),)),
        ),
        logins={"api.example.com": Login("api.example.com", "ann", Secret("pw"))},
    )
    identities = Identities("ua/1", credentials)
    plain = identities.for_url("https://www.example.com/v1/")
    assert plain.headers == {"User-Agent": "ua/1", "Accept-Language": "fr", "X-Team": "all"}
    assert plain.login is None
    api = identities.for_url("https://api.example.com/v2/x")
    assert api.headers["X-Team"] == "v2" and api.headers["X-Key"] == "k"  # the later rule wins
    assert api.login == "basic"
    assert api.headers["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert "pw" not in repr(api) and "k" not in repr(api).replace("kw", "")


@pytest.mark.parametrize(
    "url",
    [
        "https://sub.api.example.com/",  # a subdomain
        "https://api.example.com:8443/",  # another port
        "https://api.example.com.evil.test/",  # a name that begins alike
        "https://evil.test/?api.example.com",
    ],
)
def test_a_login_goes_to_its_host_only(url: str) -> None:
    login = Login("api.example.com", "ann", Secret("pw"))
    identity = Identities("ua", Credentials(logins={login.host: login})).for_url(url)
    assert "Authorization" not in identity.headers and identity.login is None


def test_a_digest_login_sends_nothing_until_asked_and_only_to_its_host() -> None:
    login = Login("127.0.0.1:8080", "ann", Secret("pw"), "digest")
    identities = Identities("ua", Credentials(logins={login.host: login}))
    mine = identities.for_url("http://127.0.0.1:8080/x")
    assert "Authorization" not in mine.headers and len(mine.middlewares) == 1
    assert identities.for_url("http://127.0.0.1:8081/x").middlewares == ()


def test_secrets_are_read_from_the_environment_and_files(tmp_path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-a-file\n")
    config = build_config(
        {
            "fetch": {"headers": {"X-Key": {"env": "KEY"}, "Accept": "text/html"}},
            "auth": [
                {"host": "a.test", "user": "ann", "password_env": "PW"},
                {"host": "b.test", "user": "bob", "password_file": str(secret_file)},
            ],
        }
    )
    credentials = read_credentials(config, environ={"KEY": "k1", "PW": "p1"})
    assert dict(credentials.every) == {"X-Key": Secret("k1"), "Accept": "text/html"}
    assert credentials.logins["a.test"].password.reveal() == "p1"
    assert credentials.logins["b.test"].password.reveal() == "from-a-file"
    assert "p1" not in repr(credentials) and "k1" not in repr(credentials)
    with pytest.raises(ConfigError, match=r"auth\[1\] \(a.test\): the environment variable PW"):
        read_credentials(config, environ={"KEY": "k1"})


def test_the_stored_configuration_holds_no_header_value_nor_password() -> None:
    config = build_config(
        {
            "fetch": {
                "headers": {"X-Key": "literal-token"},
                "rules": [{"url": "*", "headers": {"X-Other": "rule-token"}}],
            },
            "auth": [{"host": "a.test", "user": "ann", "password_env": "PW"}],
        }
    )
    stored = config.to_json()
    assert "literal-token" not in stored and "rule-token" not in stored
    assert "X-Key" in stored and '"PW"' in stored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"auth": [{"host": "a.test", "user": "ann", "password": "x"}]}, "no password in"),
        ({"auth": [{"host": "a.test", "user": "ann"}]}, "needs one of password_env"),
        ({"auth": [{"host": "a.test", "user": "a", "password_env": "P", "scheme": "x"}]}, "scheme"),
        ({"fetch": {"headers": {"Host": "x"}}}, "set by the crawl itself"),
        ({"fetch": {"headers": {"X-A": "a\r\nX-B: b"}}}, "line break"),
        ({"fetch": {"rules": [{"headers": {}}]}}, "needs url"),
    ],
)
def test_bad_session_settings_are_one_line(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(raw)
    assert len(caught.value.problems) == 1


def test_a_seed_s_user_and_password_become_a_login_for_its_host() -> None:
    (login,) = seed_logins(["http://ann:p%40ss@Example.com:8080/x", "http://plain.test/"])
    assert (login.host, login.user, login.password.reveal()) == ("example.com:8080", "ann", "p@ss")


async def test_a_browser_path_can_ask_what_a_url_gets_without_taking_a_turn() -> None:
    from scraper.crawl.cookies import CookieJars
    from scraper.crawl.proxies import ProxyPool, ProxyStrategy, parse_proxy

    jars = CookieJars()
    jars.adopt("127.0.0.1:8080", '["sid=abc; Domain=127.0.0.1; Path=/"]')
    pool = ProxyPool(
        [parse_proxy(f"http://127.0.0.1:{p}", "p") for p in (1, 2)],
        ProxyStrategy.ROUND_ROBIN, bench=1.0,
    )  # fmt: skip
    identities = Identities("ua", jars=jars, proxies=pool)
    assert identities.cookies_for("http://127.0.0.1:8080/x") == {"sid": "abc"}
    assert identities.cookies_for("http://127.0.0.1:8081/x") == {}  # another host's jar
    first = identities.proxy_for("http://127.0.0.1:8080/")
    assert first is not None and first == identities.proxy_for("http://127.0.0.1:8080/")
    assert identities.for_url("http://127.0.0.1:8080/").proxied


def test_header_names_are_case_insensitive_across_layers() -> None:
    credentials = Credentials(
        every=(("user-agent", "mine/2"),), rules=((("*",), (("ACCEPT", "x"),)),)
    )
    identity = Identities("ua/1", credentials).for_url("http://a.test/")
    assert [v for k, v in identity.headers.items() if k.lower() == "user-agent"] == ["mine/2"]
