"""A site that wants a session: an API under /api/ that needs a header, pages under /private/
that need Basic auth, a home page that sets a cookie that /members/ needs, and a redirect to a
second host that records every header it is sent (none of the first host's secrets may arrive)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from aiohttp import web

API_KEY = "k3y-" + "5ecret-api-token"  # built, so the grep test finds it only where it leaked
USER, PASSWORD = "ann", "pa55-" + "w0rd-basic"
COOKIE = "s1d-" + "cookie-value"
HOME_LINKS = ["/api/data", "/private/", "/members/", "/go-away", "/plain"]


@dataclass
class Visits:
    """What each server was sent: path → the headers of each request."""

    seen: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def note(self, request: web.Request) -> None:
        self.seen.setdefault(request.path, []).append(dict(request.headers))

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return self.seen.get(path, [])


def page(title: str, links: list[str] = ()) -> web.Response:  # type: ignore[assignment]
    body = "".join(f'<a href="{link}">{link}</a>' for link in links)
    return web.Response(text=f"<title>{title}</title>{body}", content_type="text/html")


def session_site(visits: Visits, elsewhere: str) -> web.Application:
    """The first host. `elsewhere`: the second host's origin, where /go-away redirects."""

    async def any_path(request: web.Request) -> web.StreamResponse:
        visits.note(request)
        path = request.path
        if path == "/":
            response = page("home", HOME_LINKS)
            response.set_cookie("sid", COOKIE, path="/", httponly=True)
            return response
        if path.startswith("/api/"):
            if request.headers.get("X-Api-Key") != API_KEY:
                return web.Response(status=403, text="no key")
            return page("api", ["/api/more"])
        if path.startswith("/private/"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.Response(
                    status=401, text="log in", headers={"WWW-Authenticate": 'Basic realm="p"'}
                )
            return page("private", ["/private/page"])
        if path.startswith("/members/"):
            if request.cookies.get("sid") != COOKIE:
                return web.Response(status=403, text="no session")
            return page("members")
        if path == "/go-away":
            raise web.HTTPFound(elsewhere + "/landing")
        if path == "/robots.txt":
            return web.Response(status=404)
        return page(path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app


def second_host(visits: Visits) -> web.Application:
    """The redirect's target: records what it was sent, serves a page with no links."""

    async def any_path(request: web.Request) -> web.Response:
        visits.note(request)
        if request.path == "/robots.txt":
            return web.Response(status=404)
        response = page("landing")
        response.set_cookie("other", "from-the-second-host")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app
