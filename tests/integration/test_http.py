#!/usr/bin/python3
"""The HTTP front end (MGATE_HTTP_WITHOUT_TLS_*) with curl, raw sockets and a real target
(examples/server/http-echo): allowed and refused requests (401, 403, 404, JSON bodies), the three
credential sources, pending verdicts, bypass paths and allowed origins, keep-alive and pipelining,
chunked uploads, Expect: 100-continue, the limits (431, 413, 408), request smuggling refused
(Content-Length with Transfer-Encoding), target down (502) and slow (504), streamed and large
answers, 200 requests in parallel, and a drain that lets a request in flight finish.

The example handler (examples/handler/custom_handler.c) decides: username "baduser" and password
"deny-password" are refused at auth_connect, username "slow"/"slowdeny" answer 200 ms later, a
topic containing "forbidden" is refused at auth_publish, one containing "/slow/" is allowed 100 ms
later.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness as h
from test_admin import metrics

HTTP = "MGATE_HTTP_WITHOUT_TLS_"
ECHO = os.path.join(h.REPO, "examples", "server", "http-echo", "http_echo.py")
PREFIX = "/mgate-http"
BASE = "/mgate-http/messages"


class Echo:
    """examples/server/http-echo on a free port; with pki, over TLS with the test server certificate
    (stats() then does not work: it speaks plain HTTP)."""

    def __init__(self, tmp, pki=None):
        self.port = h.free_port()
        self.log = h.LogFile(os.path.join(tmp, f"echo-{self.port}.log"))
        tls = ["--cert", pki["server.crt"], "--key", pki["server.key"]] if pki else []
        with open(self.log.path, "ab") as logf:
            self.proc = h.spawn(["/usr/bin/python3", ECHO, "--port", str(self.port), *tls], stdout=logf, stderr=logf)
        h.wait_port(self.port, 10.0, self.proc)

    def stats(self):
        with socket.create_connection((h.HOST, self.port), timeout=5) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])

    def stop(self):
        h.stop(self.proc)


def gate(tmp, target_port, binary=None, **settings):
    """An mgate (the example handler by default) with one HTTP listener to target_port."""
    port = h.free_port()
    env = {HTTP + "HOST": h.HOST, HTTP + "PORT": port, HTTP + "PATH_PREFIX": PREFIX,
           HTTP + "TARGET_HOST": h.HOST, HTTP + "TARGET_PORT": target_port, HTTP + "TARGET_PATH": "/messages",
           "MGATE_MQTT_WITHOUT_TLS_PORT": None}
    env.update({(k if k.startswith("MGATE_") else HTTP + k): v for k, v in settings.items()})
    return h.Mgate(tmp, 1, binary=binary or h.EXAMPLE_BIN, port=port, **env)


def curl(port, path, *args, timeout=20):
    """(status, body, headers text) of one curl request."""
    r = subprocess.run(["curl", "-s", "-S", "-D", "-", "-o", "/dev/stderr", "--max-time", "15", *args,
                        f"http://{h.HOST}:{port}{path}"], capture_output=True, text=True, timeout=timeout)
    heads = r.stdout
    codes = re.findall(r"^HTTP/1\.[01] (\d+)", heads, re.M)
    return (int(codes[-1]) if codes else 0), r.stderr, heads


def json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        return {}


class Raw:
    """A client socket speaking HTTP by hand."""

    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection((h.HOST, port), timeout=timeout)
        self.buf = bytearray()

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def _more(self):
        d = self.s.recv(65536)
        if not d:
            raise h.Closed()
        self.buf += d

    def response(self):
        """(status, headers dict (lower-case names), body) of the next answer; chunked decoded."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, rest = bytes(self.buf).split(b"\r\n\r\n", 1)
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status < 200:
            return status, hdrs, b""
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            while len(self.buf) < n:
                self._more()
            body, self.buf = bytes(self.buf[:n]), self.buf[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size_line, rest = bytes(self.buf).split(b"\r\n", 1)
                self.buf = bytearray(rest)
                n = int(size_line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._more()
                body += self.buf[:n]
                self.buf = self.buf[n + 2:]
                if n == 0:
                    break
        else:
            body = self.buf
            try:
                while True:
                    self._more()
            except h.Closed:
                pass
            body, self.buf = bytes(self.buf), bytearray()
        return status, hdrs, body

    def closed(self, timeout=3.0):
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def post(path, body=b"", headers=(), method="POST"):
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# ---------------------------------------------------------------------------


def allowed_and_refused(t, g, echo):
    st, body, heads = curl(g.port, f"{BASE}/http", "-X", "POST", "-H", "Authorization: TOKEN",
                           "-H", "Content-Type: application/json", "-d", '{"m": 1}')
    e = json_of(body)
    t.eq(st, 200, "POST with an Authorization header: 200 from the target")
    t.eq((e.get("method"), e.get("path"), e.get("body")), ("POST", "/messages/http", '{"m": 1}'),
         "the target got method, path (PATH_PREFIX taken off) and body")
    hd = e.get("headers", {})
    t.eq((hd.get("Content-Type"), hd.get("Authorization"), hd.get("X-Forwarded-For"), hd.get("X-Forwarded-Proto")),
         ("application/json", "TOKEN", h.HOST, "http"), "the target got the client's headers and X-Forwarded-*")
    t.check("x-echo: 1" in heads.lower(), "the target's own headers come back", heads)
    st, body, _ = curl(g.port, f"{BASE}/x", "-u", "baduser:pw", "-d", "hi")
    t.eq((st, json_of(body).get("status")), (401, 401), "auth_connect refuses (Basic user baduser): 401, JSON body")
    t.eq(json_of(body).get("error"), "Unauthorized", "the JSON body says Unauthorized")
    st, body, _ = curl(g.port, f"{BASE}/forbidden/x", "-H", "Authorization: TOKEN", "-d", "hi")
    t.eq((st, json_of(body).get("status")), (403, 403), "auth_publish refuses (topic with forbidden): 403, JSON body")
    st, body, _ = curl(g.port, "/elsewhere", "-d", "hi")
    t.eq((st, json_of(body).get("status")), (404, 404), "outside PATH_PREFIX: 404, JSON body")
    st, _, _ = curl(g.port, f"{PREFIX}/other/x", "-d", "hi")
    t.eq(st, 404, "under PATH_PREFIX but outside TARGET_PATH: 404")
    st, _, _ = curl(g.port, f"{BASE}/a/../../admin", "--path-as-is", "-d", "hi")
    t.eq(st, 400, "a path with .. segments: 400")
    st, _, _ = curl(g.port, f"{BASE}/a+b", "-d", "hi")
    t.eq(st, 400, "a path that is not a valid topic (+): 400")
    seen = echo.stats()
    t.check(not any("forbidden" in p or "admin" in p or p == "/elsewhere" for p in seen),
            "no refused request reached the target", str(seen))
    st, body, heads = curl(g.port, f"{BASE}/head", "-I", "-H", "Authorization: T")
    t.check(st == 200 and "content-length" in heads.lower(), "HEAD: 200 with the target's Content-Length", heads)


def credentials(t, g):
    for what, args in [("Authorization header", ["-H", "Authorization: deny-password"]),
                       ("Basic", ["-u", "someone:deny-password"]),
                       ("query parameter", [])]:
        path = f"{BASE}/c" + ("?authorization=deny-password" if what == "query parameter" else "")
        st, _, _ = curl(g.port, path, *args, "-d", "x")
        t.eq(st, 401, f"{what} carries the password to auth_connect (deny-password refused)")
    st, _, _ = curl(g.port, f"{BASE}/c?authorization=fine", "-d", "x")
    t.eq(st, 200, "query parameter with another password: 200")
    st, _, _ = curl(g.port, f"{BASE}/c?authorization=fine", "-H", "Authorization: fine", "-d", "x")
    t.eq(st, 200, "the Authorization header and the query parameter agreeing: 200")
    # two credentials that disagree: only one would be judged, and the target gets the query too
    st, body, _ = curl(g.port, f"{BASE}/c?authorization=deny-password", "-H", "Authorization: fine", "-d", "x")
    t.eq(st, 400, "the Authorization header and the query parameter disagreeing: 400")
    st, _, _ = curl(g.port, f"{BASE}/c?authorization=fine", "-u", "u:deny-password", "-d", "x")
    t.eq(st, 400, "Basic and a query parameter: 400")
    st, _, _ = curl(g.port, f"{BASE}/c?authorization=fine&authorization=deny-password", "-d", "x")
    t.eq(st, 400, "the query parameter twice: 400")
    st, _, _ = curl(g.port, f"{BASE}/c?authorization=deny%2Dpassword", "-d", "x")
    t.eq(st, 401, "the query parameter is percent-decoded")


# The authorization query parameter in the forms a target's decoder reads as it (Python's parse_qs,
# Go's url.Query, frameworks that ignore case or split on ';', Java's equalsIgnoreCase, PHP dropping
# a name's leading spaces, C reading a name up to a NUL): mgate must
# judge it as the credential, and refuse it beside another one.
QUERY_FORMS = ["%61uthorization", "Authorization", "AUTHORIZATION", "%41UTHORIZATION", "authori%7Aation",
               "author%C4%B1zation", "+authorization", "authorization%00"]


def query_forms(t, g, echo):
    """docs/HTTP.md step 6: the parameter's name is compared as a target decodes it, with '&' and
    ';' both separating; a credential in any such form is judged, and two of them, or one beside a
    header with another value, are refused (400) and never forwarded.  Raw requests: curl would
    not send every form as written."""
    def ask(query, headers=()):
        c = Raw(g.port)
        c.send(post(f"{BASE}/qform?{query}", b"x", headers))
        st, _, body = c.response()
        c.s.close()
        return st, body
    before = echo.stats().get("/messages/qform", 0)
    fine = [("Authorization", "fine")]
    for name in QUERY_FORMS:
        t.eq(ask(f"{name}=deny-password")[0], 401, f"?{name}= alone is the credential judged (401)")
        st, body = ask(f"{name}=deny-password", fine)
        t.eq(st, 400, f"?{name}= beside an Authorization header with another value: 400")
        t.eq(ask(f"{name}=fine", fine)[0], 200, f"?{name}= beside the same Authorization header: 200")
    t.eq(ask("a=1;authorization=deny-password")[0], 401, "?a=1;authorization= (';' separates) is judged (401)")
    t.eq(ask("a=1;authorization=deny-password", fine)[0], 400, "?a=1;authorization= beside another header: 400")
    t.eq(ask("x=1&%61uthorization=deny%2Dpassword")[0], 401, "the value of an encoded name is percent-decoded too")
    t.eq(ask("authorization=fine&%61uthorization=fine")[0], 400, "the parameter in two forms (same value): 400")
    t.eq(ask("authorization=fine;authorization=fine")[0], 400, "the parameter twice, ';'-separated: 400")
    t.eq(ask("Authorization=fine&AUTHORIZATION=deny-password", fine)[0], 400, "two cases, one disagreeing: 400")
    t.eq(ask("authorization=fine;x=deny-password")[0], 400,
         "a value ending at ';' (a target splitting on '&' only reads more): 400")
    t.eq(ask("authorization", fine)[0], 400, "?authorization without '=' (an empty credential) beside a header: 400")
    t.eq(ask("authorization=%zz")[0], 400, "a broken escape in the credential: 400")
    t.eq(ask("authorization=a%00b")[0], 400, "an encoded NUL in the credential: 400")
    t.eq(ask("xauthorization=deny-password&authorizationx=deny-password", fine)[0], 200,
         "other names that merely contain it are not the credential: 200")
    t.eq(ask("authorization+=deny-password", fine)[0], 200, "'+' is a space in a name: 'authorization ' is another name")
    t.eq(echo.stats().get("/messages/qform", 0) - before, len(QUERY_FORMS) + 2,
         "only the allowed ones reached the target")


def two_authorizations(t, g, echo):
    """Two Authorization headers: mgate judged the first, a target reading the last would see an
    identity nobody verified.  Refused (400, closed), never forwarded."""
    for what, hdrs in [("two Authorization headers", [("Authorization", "fine"), ("Authorization", "deny-password")]),
                       ("Authorization twice, other case", [("authorization", "fine"), ("AUTHORIZATION", "fine")])]:
        c = Raw(g.port)
        c.send(post(f"{BASE}/twoauth", b"x", hdrs))
        st, _, body = c.response()
        t.check(st == 400 and c.closed(), f"{what}: 400 and closed", f"{st} {body[:120]}")
    t.check(not any("twoauth" in p for p in echo.stats()), "... never forwarded to the target")


# Obsolete line folding, as sent: pieces with a pause between them (each its own TCP segment).
FOLDS = [("a folded value", [b"X-A: a\r\n b\r\n"]),
         ("a fold after an empty value", [b"X-A:\r\n b\r\n"]),
         ("a fold with a tab", [b"X-A: a\r\n\tb\r\n"]),
         ("a fold split from its line", [b"X-A: a\r\n", b" b\r\n"]),
         ("a fold split after the empty value", [b"X-A:\r\n", b" b\r\n"]),
         ("a fold split inside its CRLF", [b"X-A: a\r", b"\n b\r\n"])]


def sent_unanswered(c, data, wait=0.0):
    """Send data unless an answer came within wait seconds (mgate refused and closed: what is sent
    after that would make its kernel reset the connection, and the answer be lost)."""
    if select.select([c.s], [], [], wait)[0]:
        return False
    c.send(data)
    return True


def obs_fold(t, g, echo):
    """docs/HTTP.md promises 400 for obsolete line folding: in every form, however TCP splits it
    (pieces with pauses, then byte by byte)."""
    for what, pieces in FOLDS:
        for bytewise in (False, True):
            c = Raw(g.port)
            c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(f"POST {BASE}/folded HTTP/1.1\r\nHost: t\r\n")
            parts = [piece[i:i + 1] for piece in pieces for i in range(len(piece))] if bytewise else pieces
            # each its own segment: the fold must not depend on where a read ends
            going = all(sent_unanswered(c, part, 0.05) for part in parts)
            if going:
                sent_unanswered(c, b"Content-Length: 1\r\n\r\nz", 0.2)
            try:
                st, _, body = c.response()
            except (h.Closed, OSError) as e:
                st, body = repr(e), b""
            t.check(st == 400 and c.closed(), f"{what}{' (byte by byte)' if bytewise else ''}: 400 and closed",
                    f"{st} {body[:120]}")
    t.check(not any("folded" in p for p in echo.stats()), "... none of them reached the target")


def pending(t, g):
    t0 = time.monotonic()
    st, _, _ = curl(g.port, f"{BASE}/p", "-u", "slow:pw", "-d", "x")
    t.check(st == 200 and time.monotonic() - t0 >= 0.19, "auth_connect answered 200 ms later: allowed",
            f"{st} after {time.monotonic() - t0:.3f} s")
    st, _, _ = curl(g.port, f"{BASE}/p", "-u", "slowdeny:pw", "-d", "x")
    t.eq(st, 401, "auth_connect refused 200 ms later: 401")
    t0 = time.monotonic()
    st, body, _ = curl(g.port, f"{BASE}/slow/p", "-u", "slow:pw", "-d", "late")
    t.check(st == 200 and json_of(body).get("body") == "late" and time.monotonic() - t0 >= 0.29,
            "both verdicts late (200 + 100 ms): allowed, forwarded", f"{st} {body[:100]}")
    # the client leaves while its verdict is pending: nothing breaks, the next request works
    c = Raw(g.port)
    c.send(post(f"{BASE}/gone", b"x", [("Authorization", "Basic " + __import__("base64").b64encode(b"slow:pw").decode())]))
    c.close()
    time.sleep(0.4)
    st, _, _ = curl(g.port, f"{BASE}/after", "-d", "x")
    t.check(st == 200 and g.alive(), "a client that left during a pending verdict: mgate goes on")


def bypass_and_origins(t, tmp, echo):
    g = gate(tmp, echo.port, BYPASS_PATHS="^/health$, ^/metrics", ALLOWED_ORIGINS="https://good.example")
    st, body, _ = curl(g.port, f"{PREFIX}/health", "-u", "baduser:x")
    t.eq((st, body.strip()), (200, "ok"), "a BYPASS_PATHS path: forwarded without the handler (baduser passes)")
    st, _, _ = curl(g.port, f"{PREFIX}/healthz", "-u", "baduser:x")
    t.eq(st, 404, "a path the bypass expression does not match goes the usual way (outside TARGET_PATH)")
    st, _, _ = curl(g.port, f"{BASE}/o", "-H", "Origin: https://evil.example", "-d", "x")
    t.eq(st, 403, "an Origin outside ALLOWED_ORIGINS: 403")
    st, _, _ = curl(g.port, f"{BASE}/o", "-H", "Origin: https://good.example", "-d", "x")
    t.eq(st, 200, "an allowed Origin: 200")
    st, _, _ = curl(g.port, f"{BASE}/o", "-d", "x")
    t.eq(st, 200, "no Origin (not a browser): 200")
    # one rule with the WebSocket listener (http_origin_allowed): an empty Origin is not an allowed
    # origin, and two are one joined value (the first allowed must not vouch for the second)
    for what, origins in [("an empty Origin", [""]),
                          ("an allowed Origin, then another", ["https://good.example", "https://evil.example"]),
                          ("an allowed Origin twice", ["https://good.example", "https://good.example"])]:
        c = Raw(g.port)
        c.send(post(f"{BASE}/o2", b"x", [("Origin", o) for o in origins]))
        st, _, _ = c.response()
        t.eq(st, 403, f"with ALLOWED_ORIGINS, {what}: 403")
        c.close()
    g.stop()
    g = gate(tmp, echo.port)
    c = Raw(g.port)
    c.send(post(f"{BASE}/o3", b"x", [("Origin", ""), ("Origin", "https://any.example")]))
    t.eq(c.response()[0], 200, "without ALLOWED_ORIGINS any Origin goes, empty or repeated: 200")
    c.close()
    g.stop()
    bad = h.Mgate(tmp, 1, binary=h.EXAMPLE_BIN, port=h.free_port(), wait=False,
                  **{HTTP + "PORT": h.free_port(), HTTP + "TARGET_HOST": h.HOST, HTTP + "TARGET_PORT": echo.port,
                     HTTP + "BYPASS_PATHS": "^/ok$,(unclosed", "MGATE_MQTT_WITHOUT_TLS_PORT": None})
    rc = bad.proc.wait(10)
    t.check(rc == 2 and "MGATE_HTTP_WITHOUT_TLS_BYPASS_PATHS" in bad.log.text(),
            "a BYPASS_PATHS entry that does not compile: exit 2, the message names the variable",
            bad.log.text()[-300:])


def chain(t, tmp, echo):
    g = gate(tmp, echo.port, MGATE_HANDLER="example,log")
    t0 = time.monotonic()
    st, _, _ = curl(g.port, f"{BASE}/chain", "-u", "latepass-1:pw", "-d", "x")
    t.check(st == 200 and time.monotonic() - t0 >= 0.14,
            "a chain (example,log): example passes 150 ms later (MGATE_IGNORE), log lets it through",
            f"{st} after {time.monotonic() - t0:.3f} s")
    st, _, _ = curl(g.port, f"{BASE}/chain", "-u", "baduser:pw", "-d", "x")
    t.eq(st, 401, "a chain: the first handler's refusal stands")
    lines = g.json_lines()
    t.check(any(j.get("msg") == "auth_connect" and j.get("username") == "latepass-1" for j in lines) and
            any(j.get("msg") == "connect" for j in lines),
            "a chain: the second handler (log) was asked, and its connect hook ran", str(lines)[:300])
    g.stop()


def keepalive_pipelining(t, g):
    c = Raw(g.port)
    for i in range(3):
        c.send(post(f"{BASE}/ka{i}", b"v%d" % i))
        st, hd, body = c.response()
        t.eq((st, json_of(body).get("path")), (200, f"/messages/ka{i}"), f"keep-alive: request {i + 1} on one connection")
    # three at once, answered in order; a refused one in the middle keeps the connection
    c.send(post(f"{BASE}/p1", b"1") + post(f"{BASE}/forbidden", b"2") + post(f"{BASE}/slow/p3", b"3")
           + post(f"{BASE}/p4", b"4"))
    got = [c.response() for _ in range(4)]
    t.eq([g_[0] for g_ in got], [200, 403, 200, 200], "pipelined: four answers in order (the third waits for a late verdict)")
    t.eq([json_of(b).get("body") for _, _, b in got], ["1", None, "3", "4"], "pipelined: each answer is its own request's")
    # several late verdicts one behind the other (the verdict engine): each request waits for the one
    # before it, and the answers keep the order of the requests
    t0 = time.monotonic()
    c.send(post(f"{BASE}/slow/a", b"a") + post(f"{BASE}/slow/b", b"b") + post(f"{BASE}/q", b"q")
           + post(f"{BASE}/slow/c", b"c"))
    got = [c.response() for _ in range(4)]
    t.eq([(g_[0], json_of(g_[2]).get("body")) for g_ in got], [(200, "a"), (200, "b"), (200, "q"), (200, "c")],
         "pipelined: three late verdicts and one at once, answered in order")
    t.check(time.monotonic() - t0 >= 0.29, "pipelined: the late verdicts came one after the other (3 x 100 ms)",
            f"{time.monotonic() - t0:.3f} s")
    c.send(b"GET " + BASE.encode() + b"/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    st, hd, _ = c.response()
    t.check(st == 200 and hd.get("connection") == "close" and c.closed(), "Connection: close: answered, then closed")
    c = Raw(g.port)
    c.send(f"GET {BASE}/ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    st, hd, _ = c.response()
    c.send(f"GET {BASE}/ten2 HTTP/1.0\r\n\r\n")
    st2, _, _ = c.response()
    t.check(st == 200 and hd.get("connection") == "keep-alive" and st2 == 200 and c.closed(),
            "HTTP/1.0: keep-alive when asked (Content-Length kept), closed after a plain 1.0 request")


def chunked_expect(t, g):
    r = subprocess.run(["curl", "-s", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                        f"http://{h.HOST}:{g.port}{BASE}/chunked"], input=b"part1-part2" * 100, capture_output=True,
                       timeout=20)
    e = json_of(r.stdout)
    t.check(e.get("length") == 1100 and e.get("headers", {}).get("Content-Length") == "1100",
            "chunked upload: de-chunked, forwarded with a Content-Length", r.stdout[:200])
    c = Raw(g.port)
    c.send(f"POST {BASE}/exp HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    st, _, _ = c.response()
    t.eq(st, 100, "Expect: 100-continue: 100 Continue before the body (auth_connect allowed)")
    c.send(b"hello")
    st, _, body = c.response()
    t.eq((st, json_of(body).get("body")), (200, "hello"), "... then the answer to the whole request")
    c.close()
    c = Raw(g.port)
    c.send(f"POST {BASE}/exp HTTP/1.1\r\nHost: t\r\nAuthorization: deny-password\r\nExpect: 100-continue\r\n"
           "Content-Length: 5\r\n\r\n")
    st, _, _ = c.response()
    t.check(st == 401 and c.closed(), "Expect: 100-continue refused: 401 without 100, the body never sent, closed")
    st, _, _ = curl(g.port, f"{BASE}/exp", "-u", "slow:pw", "-H", "Expect: 100-continue", "-d", "x" * 2000)
    t.eq(st, 200, "curl with Expect and a late auth_connect: 200")
    c = Raw(g.port)
    c.send(f"POST {BASE}/exp HTTP/1.1\r\nHost: t\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx")
    st, _, _ = c.response()
    t.eq(st, 417, "an Expect other than 100-continue: 417")


def limits(t, tmp, echo):
    g = gate(tmp, echo.port, MAX_HEADER_SIZE="2KiB", MAX_BODY_SIZE="1KiB", REQUEST_TIMEOUT="1s", IDLE_TIMEOUT="1s")
    st, body, _ = curl(g.port, f"{BASE}/big-head", "-H", "X-Big: " + "a" * 3000, "-d", "x")
    t.eq((st, json_of(body).get("status")), (431, 431), "a head over MAX_HEADER_SIZE: 431 (JSON)")
    st, _, _ = curl(g.port, f"{BASE}/" + "a" * 2100, "-d", "x")
    t.eq(st, 414, "a target over MAX_HEADER_SIZE: 414")
    c = Raw(g.port)
    c.send(f"POST {BASE}/big HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n")
    st, _, _ = c.response()
    t.check(st == 413 and c.closed(), "Content-Length over MAX_BODY_SIZE: 413 at once, closed")
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", "@-", f"http://{h.HOST}:{g.port}{BASE}/bigc"], input=b"y" * 5000,
                       capture_output=True, timeout=20)
    t.eq(r.stdout, b"413", "a chunked body growing over MAX_BODY_SIZE: 413")
    st, _, _ = curl(g.port, f"{BASE}/fits", "-d", "z" * 1024)
    t.eq(st, 200, "a body of exactly MAX_BODY_SIZE: 200")
    c = Raw(g.port)
    c.send(f"POST {BASE}/slowloris HTTP/1.1\r\nHost: t\r\n")
    t0 = time.monotonic()
    st, hd, _ = c.response()
    took = time.monotonic() - t0
    t.check(st == 408 and 0.8 <= took <= 3 and c.closed(), "a head not finished within REQUEST_TIMEOUT (1 s): 408, closed",
            f"{st} after {took:.2f} s")
    c = Raw(g.port)
    c.send(f"POST {BASE}/slowbody HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    st, _, _ = c.response()
    t.check(st == 408 and c.closed(), "a body not finished within REQUEST_TIMEOUT: 408, closed")
    c = Raw(g.port)
    c.send(post(f"{BASE}/idle", b"i"))
    c.response()
    t0 = time.monotonic()
    t.check(c.closed(5) and 0.8 <= time.monotonic() - t0 <= 3, "an idle keep-alive connection closes after IDLE_TIMEOUT")
    # request smuggling
    for what, req in [
            ("Content-Length with Transfer-Encoding",
             f"POST {BASE}/smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
             f"0\r\n\r\nGET {BASE}/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("two Content-Lengths",
             f"POST {BASE}/smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
            ("Transfer-Encoding not chunked", f"POST {BASE}/smuggle HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            ("a space before the colon", f"POST {BASE}/smuggle HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc")]:
        c = Raw(g.port)
        c.send(req)
        st, _, body = c.response()
        t.check(st == 400 and c.closed(), f"{what}: 400 and closed", f"{st} {body[:120]}")
    seen = echo.stats()
    t.check(not any("smuggl" in p for p in seen), "no part of those reached the target", str(seen))


def target_down_slow(t, tmp, echo):
    down = gate(tmp, h.free_port())
    st, body, _ = curl(down.port, f"{BASE}/x", "-d", "x")
    t.eq((st, json_of(body).get("status")), (502, 502), "target down: 502 with a JSON body")
    g = gate(tmp, echo.port, TARGET_TIMEOUT="1s")
    t0 = time.monotonic()
    st, _, _ = curl(g.port, f"{BASE}/slow?ms=3000", "-d", "x")
    took = time.monotonic() - t0
    t.check(st == 504 and took < 2.5, "target answering after TARGET_TIMEOUT (1 s): 504", f"{st} after {took:.2f} s")
    st, _, _ = curl(g.port, f"{BASE}/slow?ms=300", "-d", "x")
    t.eq(st, 200, "within TARGET_TIMEOUT: 200")
    # a streamed answer: its first chunk arrives before the last is sent
    c = Raw(g.port)
    t0 = time.monotonic()
    c.send(f"GET {BASE}/stream?n=6&ms=150 HTTP/1.1\r\nHost: t\r\n\r\n")
    while b"chunk 0" not in c.buf:
        c._more()
    first = time.monotonic() - t0
    st, hd, body = c.response()
    t.check(st == 200 and hd.get("transfer-encoding") == "chunked" and first < 0.5,
            "a chunked answer streams through (first chunk early, re-chunked)", f"first after {first:.2f} s, {hd}")
    t.eq(body.count(b"chunk "), 6, "... all six chunks arrive")
    # a large answer to a client that reads slowly: back-pressure, everything arrives
    g = gate(tmp, echo.port)
    rss_before = g.rss_kib()
    c = Raw(g.port, timeout=20)
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(f"GET {BASE}/big?n=8000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.5)
    rss_mid = g.rss_kib()
    st, hd, body = c.response()
    t.check(st == 200 and len(body) == 8000000 and set(body) == {ord("x")}, "an 8 MB answer to a slow reader arrives whole")
    t.check(rss_mid - rss_before < 2048, "... while mgate holds little of it (back-pressure: under 2 MiB more RSS)",
            f"RSS {rss_before} -> {rss_mid} KiB")
    return g


def sanitized(g):
    """Whether g runs an ASan build (its quarantine keeps freed memory: RSS bounds do not hold)."""
    with open(g.binary, "rb") as f:
        return b"__asan_init" in f.read()


def parallel(t, g, results):
    n = 200
    out = [None] * n
    lat = [0.0] * n

    def one(i):
        t0 = time.monotonic()
        try:
            c = Raw(g.port, timeout=20)
            c.send(post(f"{BASE}/par/{i}", b"p%d" % i, [("Authorization", "TOKEN")]))
            st, _, body = c.response()
            out[i] = (st, json_of(body).get("body"))
            c.close()
        except Exception as e:  # noqa: BLE001
            out[i] = ("error", str(e))
        lat[i] = time.monotonic() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    wall = time.monotonic() - t0
    ok = sum(1 for i in range(n) if out[i] == (200, f"p{i}"))
    t.eq(ok, n, f"{n} requests in parallel, each on its own connection: all answered 200 with their own body")
    lat.sort()
    results["parallel"] = f"{n} parallel: wall {wall:.2f} s, latency p50 {lat[n // 2] * 1000:.0f} ms, " \
                          f"p99 {lat[int(n * 0.99)] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
    print("  measured:", results["parallel"])
    # requests per second over one keep-alive connection (the echo target is a Python server)
    c = Raw(g.port)
    m = 500
    t0 = time.monotonic()
    for i in range(m):
        c.send(post(f"{BASE}/rate", b"r"))
        c.response()
    rate = m / (time.monotonic() - t0)
    results["rate"] = f"{rate:.0f} requests/s over one keep-alive connection (target: Python http-echo)"
    print("  measured:", results["rate"])
    # memory per idle keep-alive connection
    before = g.rss_kib()
    conns = []
    for i in range(1000):  # one after the other: the target connection is reused, what grows is ours
        c = Raw(g.port)
        c.send(post(f"{BASE}/idle", b"i"))
        c.response()
        conns.append(c)
    time.sleep(0.3)
    per = (g.rss_kib() - before) * 1024 / len(conns)
    results["idle"] = f"{per:.0f} bytes of RSS per idle keep-alive connection (1000 connections, after one request each)"
    print("  measured:", results["idle"])
    if not sanitized(g):  # ASan's redzones and quarantine make every allocation larger
        t.check(per < 8192, "an idle keep-alive connection costs under 8 KiB", f"{per:.0f} bytes")
    for c in conns:
        c.close()


# Requests mgate answers itself, in order: (request, status).  Over 4000 of them a client that never
# reads would have mgate hold megabytes of answers without back-pressure.
OWN_ANSWERS = [(b"GET /elsewhere HTTP/1.1\r\nHost: t\r\n\r\n", 404),
               (f"GET {BASE}/a/../b HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 400),
               (f"GET {BASE}/d HTTP/1.1\r\nHost: t\r\nAuthorization: deny-password\r\n\r\n".encode(), 401)]
FLOOD_RSS_BOUND_KIB = 1024  # OUTPUT_HIGH_WATER (64 KiB) + one read kept (64 KiB) + allocator slack


def statuses(c, n, timeout=30.0):
    """The statuses of the next n answers on c (each with a Content-Length: mgate's own), read in
    bulk: Raw.response copies its buffer per answer, too slow for 100000 of them."""
    out, pos, data = [], 0, bytes(c.buf)
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            end = data.find(b"\r\n\r\n", pos)
            m = re.search(rb"\r\ncontent-length: *(\d+)", data[pos:end], re.I) if end >= 0 else None
            if end < 0 or (m and len(data) < end + 4 + int(m.group(1))):
                more = c.s.recv(1 << 20)
                if not more:
                    raise h.Closed()
                data = data[pos:] + more
                pos = 0
                continue
            out.append(int(data[pos:end].split(b" ", 2)[1]))
            pos = end + 4 + (int(m.group(1)) if m else 0)
    except (h.Closed, OSError) as e:
        out.append(repr(e))
    c.buf = bytearray(data[pos:])
    return out


def own_answers_flood(t, tmp, echo, results, binary=None):
    """A client pipelines 100000 requests that mgate answers itself (404, 400, 401) and reads nothing.
    mgate must stop parsing it at OUTPUT_HIGH_WATER: its RSS grows by less than FLOOD_RSS_BOUND_KIB,
    another client is served meanwhile, and once the flooder reads it gets every answer, in order."""
    g = gate(tmp, echo.port, binary=binary)
    n = 100000
    expected = [OWN_ANSWERS[i % 3][1] for i in range(n)]
    blob = b"".join(OWN_ANSWERS[i % 3][0] for i in range(n))
    time.sleep(0.2)  # mgate's start-up allocations settle
    rss0 = g.rss_kib()
    c = Raw(g.port, timeout=30)
    sender = threading.Thread(target=lambda: c.s.sendall(blob), daemon=True)
    sender.start()
    peak = rss0
    for _ in range(40):  # 2 s of flood, sampled every 50 ms
        time.sleep(0.05)
        peak = max(peak, g.rss_kib())
    growth = peak - rss0
    results["flood"] = f"{len(blob)} bytes of pipelined requests answered by mgate, never read: RSS +{growth} KiB"
    print("  measured:", results["flood"])
    if not sanitized(g):  # ASan's quarantine holds every freed request for a while
        t.check(growth < FLOOD_RSS_BOUND_KIB,
                f"a pipelined flood of own answers nobody reads: RSS grows under {FLOOD_RSS_BOUND_KIB} KiB",
                f"+{growth} KiB")
    st, _, _ = curl(g.port, f"{BASE}/meanwhile", "-d", "x")
    t.eq(st, 200, "meanwhile another client is served")
    got = statuses(c, n)
    sender.join(10)
    t.check(got == expected, f"once the flooder reads, it gets all {n} answers, in order",
            f"{len(got)} answers, first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), len(got))}: {got[-3:]}")
    c.send(post(f"{BASE}/after-flood", b"x"))
    st, _, body = c.response()
    t.eq((st, json_of(body).get("body")), (200, "x"), "... and its connection is healthy afterwards")
    c.close()


SESSION_LOG_BURST, LISTENER_LOG_BURST = 5, 50  # src/session/session.h: lines a second


def refusal_log_flood(t, tmp, echo, results, binary=None):
    """A refusal flood writes a bounded number of log lines: one client pipelining 3000 refused
    requests (and reading the answers) gets at most SESSION_LOG_BURST lines a second, 200 clients
    with 3 each at most LISTENER_LOG_BURST a second together; the lines left out are counted on the
    next line (and on "session closed"; a client that never got in has its "session closed" within a
    budget too, and what it carried is then told by the listener's next line), and /metrics counts
    every refusal."""
    admin = h.free_port()
    g = gate(tmp, echo.port, binary=binary, MGATE_ADMIN_PORT=admin, MGATE_WORKERS=1)  # the budgets are per worker
    before = metrics(admin)
    mark = g.log.mark()
    n, many, each = 3000, 200, 3
    blob = b"".join(OWN_ANSWERS[i % 3][0] for i in range(n))
    t0 = time.monotonic()
    c = Raw(g.port, timeout=30)
    sender = threading.Thread(target=lambda: c.s.sendall(blob), daemon=True)
    sender.start()
    got = statuses(c, n)
    sender.join(10)
    c.close()
    one_secs = time.monotonic() - t0
    conns = [Raw(g.port) for _ in range(many)]
    for k in conns:
        k.send(OWN_ANSWERS[0][0] * each)
    got += [st for k in conns for st in statuses(k, each)]
    for k in conns:
        k.close()
    secs = time.monotonic() - t0
    t.eq(got, [OWN_ANSWERS[i % 3][1] for i in range(n)] + [404] * (many * each), "every refused request answered")
    key4 = 'mgate_http_responses_total{code="4xx"}'
    sessions = h.wait_until(lambda: metrics(admin).get(key4, 0) - before.get(key4, 0) >= n + many * each, 5.0)
    time.sleep(0.2)  # their connections' ends are logged (or counted) right behind the answers
    lines = [j for j in g.json_since(mark) if j.get("msg", "").startswith("http 4")]
    first = lines[0]["peer"] if lines else None  # the pipelining client's address
    mine = [j for j in lines if j["peer"] == first]
    closed = [j for j in g.json_since(mark) if j.get("msg") == "session closed" and j.get("peer") == first]
    bound_one = SESSION_LOG_BURST * (int(one_secs) + 2)
    bound_all = LISTENER_LOG_BURST * (int(secs) + 2)
    t.check(sessions and len(mine) <= bound_one,
            f"one client's {n} refusals in {one_secs:.1f} s: at most {bound_one} lines", f"{len(mine)} lines")
    t.check(len(lines) <= bound_all, f"{n + many * each} refusals from {many + 1} clients in {secs:.1f} s: "
            f"at most {bound_all} lines", f"{len(lines)} lines")
    counted = sum(1 + j.get("left_out", 0) for j in mine) + sum(j.get("left_out", 0) for j in closed)
    t.eq(counted, n, "the client's lines plus the counts left out on them and on its \"session closed\": all its refusals")
    # the listener's budget left lines of the 200 out: a line in a later second says how many
    time.sleep(1.05)
    late = Raw(g.port)
    late.send(OWN_ANSWERS[0][0])
    statuses(late, 1)
    later = h.wait_until(lambda: [j for j in g.json_since(mark) if j.get("msg", "").startswith("http 4")][len(lines):],
                         5.0)
    told = sum(j.get("listener_left_out", 0) for j in lines + later[:1])  # each: those left out since the last
    t.eq(len(lines) + (counted - len(mine)) + told, n + many * each,
         "lines written + left out by the client's budget + by the listener's (told on a later line): every refusal")
    late.close()
    after = metrics(admin)
    key = 'mgate_http_responses_total{code="4xx"}'
    t.eq(after.get(key, 0) - before.get(key, 0), n + many * each + 1, "/metrics counts every refusal")
    sent = len(blob) + many * each * len(OWN_ANSWERS[0][0])
    written = g.log.mark() - mark
    refusal_bytes = sum(len(x) + 1 for x in g.log.text(mark).splitlines() if '"msg":"http 4' in x)
    results["log"] = f"refusal flood: {written} log bytes in all for {sent} bytes sent ({written / sent:.4f} per " \
                     f"byte; refusal lines alone {refusal_bytes} bytes, {refusal_bytes / sent:.4f} per byte), " \
                     f"{len(lines)} refusal lines for {len(got)} refusals"
    print("  measured:", results["log"])


def drain(t, tmp, echo):
    g = gate(tmp, echo.port, MGATE_SHUTDOWN_GRACE="5s")
    c = Raw(g.port, timeout=10)
    c.send(post(f"{BASE}/slow?ms=800", b"d"))
    idle = Raw(g.port)
    idle.send(post(f"{BASE}/i", b"i"))
    idle.response()
    time.sleep(0.2)
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    t.check(idle.closed(2), "SIGTERM: an idle keep-alive connection is closed at once")
    st, hd, _ = c.response()
    t.check(st == 200 and hd.get("connection") == "close", "SIGTERM: the request in flight is answered (Connection: close)",
            f"{st} {hd}")
    rc = g.proc.wait(10)
    t.check(rc == 0 and time.monotonic() - t0 < 3, "... and mgate exits 0 right after, before the grace period",
            f"rc {rc} after {time.monotonic() - t0:.2f} s")


def main():
    h.need_binaries()
    t = h.Checks("http")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        echo = Echo(tmp)
        g = gate(tmp, echo.port)
        t.case("allowed and refused", allowed_and_refused, t, g, echo)
        t.case("credentials", credentials, t, g)
        t.case("two Authorization headers", two_authorizations, t, g, echo)
        t.case("the authorization parameter's forms", query_forms, t, g, echo)
        t.case("obsolete line folding", obs_fold, t, g, echo)
        t.case("pending verdicts", pending, t, g)
        t.case("keep-alive and pipelining", keepalive_pipelining, t, g)
        t.case("chunked, Expect", chunked_expect, t, g)
        t.case("bypass and origins", bypass_and_origins, t, tmp, echo)
        t.case("handler chain", chain, t, tmp, echo)
        t.case("limits and smuggling", limits, t, tmp, echo)
        t.case("target down, slow, streaming", target_down_slow, t, tmp, echo)
        t.case("200 in parallel, rates, memory", parallel, t, g, results)
        t.case("own answers nobody reads", own_answers_flood, t, tmp, echo, results)
        t.case("a refusal flood's log lines", refusal_log_flood, t, tmp, echo, results)
        t.case("drain", drain, t, tmp, echo)
        t.check(g.alive(), "mgate still runs")
        rc = h.finish(t)
        echo.stop()
        return rc


if __name__ == "__main__":
    h.run_main(main)
