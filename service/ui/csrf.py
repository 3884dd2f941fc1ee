"""The web page's CSRF tokens: the second layer, behind service/origin.py's refusal of POSTs
whose Origin (or Referer) names another site.

Every form that changes something carries a hidden `csrf_token`: the HMAC-SHA256, keyed by a
secret only this browser holds, of a fixed label. The secret is

- the login cookie's session token (HttpOnly, SameSite=Strict, random, never sent to the
  page's scripts) when the browser logged in: the token is tied to that web session, and a
  new login gives a new one;
- otherwise (the local tenant of a loopback server without keys, where there is no login) a
  random value in a cookie of its own, `lrsearch_csrf` (HttpOnly, SameSite=Strict, path /ui,
  Secure over https), set by the first page that shows such a form: a double-submit token.

A POST is accepted only when

1. it comes from this very origin: its `Origin` is this server's scheme, host and port as the
   browser reached it (without an Origin, a `Sec-Fetch-Site` other than `same-origin` is
   refused; a client that sends neither is no browser, and cannot be made to send anything);
   service/origin.py accepts an allowed host's name on any port, but a page on another port of
   the same host is another origin, which can *write* cookies for this host (cookies are not
   kept apart by port): it could plant a double-submit secret of its own and compute its
   token, so it must be refused here;
2. its cookies name each secret at most once (a planted `lrsearch_csrf` or `lrsearch_session`
   beside ours would make the parser pick one of them);
3. its field equals the token of the secret its cookies carry, compared in constant time. A
   page of another origin can make the browser send the cookie but can neither read it nor a
   page of ours that holds the token. Only the HMAC is ever written into a page, never the
   secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import Response

SESSION_COOKIE = "lrsearch_session"
COOKIE = "lrsearch_csrf"
FIELD = "csrf_token"
_LABEL = b"lrsearch web form v1"
_MIN_SECRET = 32  # characters: the cookies we set hold 43 (256 random bits, base64url)
_MAX_SECRET = 200


class CsrfRefused(Exception):
    """A state-changing form without the right token: answered 403 with a readable page."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def token_of(secret: str) -> str:
    """The token of a secret (hex): what the hidden field must hold."""
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).hexdigest()


def _secret(request: Request) -> str | None:
    """The secret this request's cookies carry: the login session's token, else the
    double-submit cookie's value (None when neither is present or the value is malformed)."""
    for name in (SESSION_COOKIE, COOKIE):
        value = request.cookies.get(name)
        if value:
            return value if _MIN_SECRET <= len(value) <= _MAX_SECRET else None
    return None


def page_token(request: Request) -> str:
    """The token for the forms of the page being rendered. Without a secret a new random one
    is made; `set_cookie` then sends it with the response. The same token for every form of
    one page."""
    token: str | None = getattr(request.state, "csrf_token", None)
    if token is not None:
        return token
    secret = _secret(request)
    if secret is None:
        secret = secrets.token_urlsafe(32)
        request.state.csrf_new_secret = secret
    token = token_of(secret)
    request.state.csrf_token = token
    return token


def set_cookie(request: Request, response: Response, secure: bool) -> None:
    """Send the double-submit cookie when rendering the page made a new secret."""
    secret: str | None = getattr(request.state, "csrf_new_secret", None)
    if secret is not None:
        # A browser-session cookie: it ends with the browser, as the forms it protects do.
        response.set_cookie(COOKIE, secret, httponly=True, samesite="strict", path="/ui",
                            secure=secure)


def _origin_refusal(request: Request, https: bool) -> str | None:
    """Why the request is not from this very origin (rule 1), or None when it is."""
    origin = request.headers.get("origin")
    expected = f"{'https' if https else 'http'}://{request.headers.get('host', '').lower()}"
    if origin is not None:
        if origin.strip().lower().rstrip("/") != expected:
            return (f"it was sent by a page of {origin.strip()[:100]!r}, not of this server "
                    f"({expected[:100]!r})")
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() != "same-origin":
        return f"the browser says it was sent from a {site.strip()[:20]!r} page"
    return None


def check(request: Request, form: FormData, https: bool) -> None:
    """Raise CsrfRefused unless the form comes from this origin, its cookies are ours alone
    and its `csrf_token` is the token of this browser's secret (`https`: how the browser
    reached us). The messages say what was wrong, never echo a token."""
    if (reason := _origin_refusal(request, https)) is not None:
        raise CsrfRefused(f"This form was refused: {reason}. Forms that change something must "
                          "come from this server's own pages.")
    raw = request.headers.get("cookie", "")
    for name in (SESSION_COOKIE, COOKIE):
        if sum(part.split("=", 1)[0].strip() == name for part in raw.split(";")) > 1:
            raise CsrfRefused(
                f"This form was refused: the browser sent the `{name}` cookie more than once "
                "(another page on this host set one of its own). Clear this site's cookies, "
                "reload the page and submit it again.")
    sent = form.get(FIELD)
    secret = _secret(request)
    if secret is None:
        raise CsrfRefused(
            f"This form was refused: this browser sent no valid `{SESSION_COOKIE}` or "
            f"`{COOKIE}` cookie, so the form's `{FIELD}` cannot be checked (cookies blocked, "
            "or the form was sent from another site). Reload the page that showed the form "
            "and submit it again.")
    if not isinstance(sent, str) or not sent:
        raise CsrfRefused(
            f"This form was refused: its `{FIELD}` field is missing. Forms that change "
            "something must come from this server's own pages: reload the page and submit "
            "it again.")
    if not hmac.compare_digest(sent.encode(), token_of(secret).encode()):
        raise CsrfRefused(
            f"This form was refused: its `{FIELD}` field does not match this browser's "
            "session (the page was shown before a log-in or log-out, or by another site). "
            "Reload the page and submit it again.")
