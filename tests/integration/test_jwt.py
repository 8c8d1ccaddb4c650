#!/usr/bin/python3
"""The `jwt` handler against a real mosquitto, with tokens and keys made here (jwt_tools.py:
the standard library and the openssl CLI) and a JWKS served by a threaded http.server in this
process (it counts fetches, swaps key sets, sets Cache-Control, answers 500, garbage or hangs).

* Good tokens, RS256, ES256, EdDSA (a JWKS URL; a PEM file) and HS256 (a secret file), in 3.1.1
  and 5.0: CONNACK 0 and a QoS 1 publish reaches a subscriber on mosquitto; `aud` as an array; exp
  and nbf inside MGATE_JWT_LEEWAY (30 s by default); the sub claim is the username the broker
  sees (`u'...'` in its log).
* Refused (CONNACK 4 / 0x86, never at the broker), each counted in
  mgate_jwt_refused_total{reason} and logged once with its reason: expired, not yet valid, issued
  in the future, no exp, exp not a number, wrong issuer (and none), wrong audience (a string, an
  array), a flipped signature bit, a payload changed under its signature, `alg: none`, HS256
  signed with the RSA key's PEM (the key confusion attack), an unknown kid, not a token, no
  token, another username, no sub, an acl claim of the wrong shape; and what a lenient parser would
  take: '=' padding, duplicate JSON keys, over 8192 bytes, a kid over 255 bytes, a "crit" header,
  an ES256 signature in DER, an alg that does not fit the kid's key type, an "oct" key or a
  1024-bit RSA key published in the JWKS (both skipped), an empty signature part.
* The acl claim ({"pub", "sub", "all"} with %u and %c) in 3.1.1 and 5.0: PUBACK 0x87 or (3.1.1)
  the message never at the broker, SUBACK 0x80 / 0x87 per filter, a will outside it refuses the
  CONNECT; without the claim MGATE_HANDLER=jwt,acl lets the acl file decide.
* The JWKS: fetched lazily, one fetch for an unknown kid, none more within
  MGATE_JWT_JWKS_MIN_INTERVAL; rotation; a flood of 200 made-up kids costs at most 2 fetches and a
  good client still gets in (waiting for the fetch in flight); an URL down at start, then 500,
  garbage, a hang past MGATE_JWT_JWKS_TIMEOUT, then up; Cache-Control max-age drops a removed
  key; mgate_jwt_jwks_fetches_total{result}.
* Sessions end at exp + leeway (v5 DISCONNECT 0xA0 within 1.5 s, 3.1.1 closed; LEEWAY=2s: 2 s
  later), not with MGATE_JWT_EXPIRE_SESSIONS=false.
* MGATE_JWT_USERNAME=set, MGATE_JWT_CLIENT_ID_CLAIM, MGATE_JWT_TOKEN_FROM=username,
  MGATE_JWT_USERNAME_CLAIM, MGATE_JWT_ACL_CLAIM, MGATE_JWT_REQUIRE_EXP=false.
* The WebSocket listener (Authorization: Bearer on the upgrade) and the HTTP bridge (a POST with
  Bearer is published; 401 for a bad token, 403 outside the acl claim).
* SIGHUP reads MGATE_JWT_JWKS_FILE again. Bad settings exit 2 naming the variable.
* No token's signature ever appears in mgate's log (one gate logs at debug).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import jwt_tools as jt  # noqa: E402
from test_ws import RawWs  # noqa: E402

ISS = "https://issuer.test"
AUD = "mgate"
SIGS = set()  # the signature part of every token made here: none may be in a log
WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
HTTP = "MGATE_HTTP_WITHOUT_TLS_"
_n = [0]


def uid(prefix):
    _n[0] += 1
    return f"{prefix}-{_n[0]}"


def now():
    return int(time.time())


def claims(sub="alice", ttl=300, **kw):
    """Standard claims for this test's issuer and audience; a value of None leaves the claim out."""
    c = {"iss": ISS, "aud": AUD, "sub": sub, "iat": now(), "exp": now() + ttl}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def tok(key, cl=None, **kw):
    t = key.token(cl if cl is not None else claims(), **kw)
    SIGS.add(jt.signature_part(t))
    return t


def remember(token):
    if token.count(".") == 2 and len(jt.signature_part(token)) >= 16:
        SIGS.add(jt.signature_part(token))
    return token


# ---------------------------------------------------------------------------
# the JWKS server


class JwksServer:
    """A JWKS on http://127.0.0.1:port/jwks. mode: "ok", "500", "garbage", "hang" (answers after
    `hang` seconds). delay: seconds before an "ok" answer. fetches counts every GET."""

    def __init__(self, doc, port=0, max_age=None):
        self.doc, self.mode, self.max_age, self.delay, self.hang = doc, "ok", max_age, 0.0, 4.0
        self.lock = threading.Lock()
        self.fetches = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with srv.lock:
                    srv.fetches += 1
                    mode, doc, max_age, delay = srv.mode, srv.doc, srv.max_age, srv.delay
                try:
                    if mode == "hang":
                        time.sleep(srv.hang)
                    if mode == "500":
                        status, body = 500, b"oops"
                    elif mode == "garbage":
                        status, body = 200, b"this is not a key set"
                    else:
                        time.sleep(delay)
                        status, body = 200, json.dumps(doc).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if max_age is not None:
                        self.send_header("Cache-Control", f"public, max-age={max_age}")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256
            daemon_threads = True

        self.server = Server((h.HOST, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{h.HOST}:{self.port}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.fetches

    def set(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, v)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# mgate, clients, metrics


def gate(tmp, broker, admin=True, **env):
    env.setdefault("MGATE_HANDLER", "jwt")
    port = None
    if admin:
        port = h.free_port()
        env["MGATE_ADMIN_PORT"] = port
    g = h.Mgate(tmp, broker.port, **env)
    g.admin = port
    return g


def stopped(t, g):
    """SIGTERM: mgate exits 0 (h.finish checks only the gates still running)."""
    t.eq(g.stop(), 0, f"mgate :{g.port} exits 0 on SIGTERM")


def metrics(g):
    with urllib.request.urlopen(f"http://{h.HOST}:{g.admin}/metrics", timeout=5) as r:
        body = r.read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def refused_metric(reason):
    return f'mgate_jwt_refused_total{{reason="{reason}"}}'


def fetch_metric(result):
    return f'mgate_jwt_jwks_fetches_total{{result="{result}"}}'


VERIFIED = "mgate_jwt_verified_total"


def sub_of(token):
    """The sub claim of a token, or "x": 3.1.1 sends no password without a username (MQTT-3.1.2-22),
    so a 3.1.1 client sends the token's own sub as its username."""
    try:
        return str(jt.parts(token)[1].get("sub", "x"))
    except Exception:  # noqa: BLE001 - not a token: any username
        return "x"


def v4_user(version, user, password):
    if version < 5 and user is None and password is not None:
        return sub_of(password.decode() if isinstance(password, bytes) else password)
    return user


def connack(port, version, cid, user=None, password=None, will=None, timeout=5.0):
    user = v4_user(version, user, password)
    c = h.RawClient(port, timeout=timeout)
    if isinstance(password, str):
        password = password.encode()
    rc = c.connect(version, cid, username=user, password=password, will=will, timeout=timeout)
    c.close()
    return rc


def login(port, version, token, cid=None, user=None, will=None):
    """A connected RawClient (raises when the CONNACK is not 0)."""
    c = h.RawClient(port)
    user = v4_user(version, user, token)
    rc = c.connect(version, cid or uid(f"ok{version}"), username=user,
                   password=token.encode() if token is not None else None, will=will)
    if rc != 0:
        c.close()
        raise AssertionError(f"CONNACK {rc} for a token that should get in")
    return c


class Watcher:
    """A v5 client of mosquitto itself, subscribed to # at QoS 1: what the broker got."""

    def __init__(self, broker):
        self.c = h.raw_client(broker.port, 5, uid("watcher"))
        self.c.subscribe(1, [("#", 1)])

    def until(self, topic, timeout=5.0):
        """Messages up to the one on topic: (list of (topic, payload), whether it came)."""
        msgs, found = self.c.collect_until(lambda m: m.topic == topic, timeout)
        return [(m.topic, m.payload) for m in msgs], found


def reason_lines(g, since, reason):
    return [j for j in g.json_since(since) if j.get("reason") == reason]


_last_refusal = [0.0]


def refused(t, g, broker, what, token, reasons, version=5, user=None, cid=None, will=None):
    """A CONNECT with this token is refused: CONNACK 4 / 0x86, the reason's counter +1 (when the
    gate has an admin port), one log line with the reason, never at the broker."""
    reasons = (reasons,) if isinstance(reasons, str) else tuple(reasons)
    # at most ~8 refusals a second: each is 3 log lines (accepted, refused, closed) and a listener's
    # log budget is 50 lines a second (src/session/session.h), past which lines are left out
    wait = _last_refusal[0] + 0.12 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    _last_refusal[0] = time.monotonic()
    cid = cid or uid("refused")
    mark = g.log.mark()
    before = metrics(g) if g.admin else None
    bmark = broker.log.mark()
    rc = connack(g.port, version, cid, user, token, will)
    want = 0x86 if version == 5 else 4
    t.eq(rc, want, f"{what}: CONNACK {want:#x}")
    lines = h.wait_until(lambda: [j for j in g.json_since(mark) if j.get("reason") in reasons], 2.0) or []
    t.check(len(lines) == 1, f"{what}: one log line with reason {'|'.join(reasons)}",
            [(j.get("msg"), j.get("reason")) for j in g.json_since(mark)])
    got = lines[0].get("reason") if lines else reasons[0]
    if before is not None:
        after = h.wait_until(lambda: (lambda m: m if sum(m.get(refused_metric(r), 0) for r in reasons)
                                      > sum(before.get(refused_metric(r), 0) for r in reasons) else None)(metrics(g)),
                             2.0) or metrics(g)
        t.eq(after.get(refused_metric(got), 0) - before.get(refused_metric(got), 0), 1,
             f'{what}: mgate_jwt_refused_total{{reason="{got}"}} +1')
        t.eq(after.get(VERIFIED, 0) - before.get(VERIFIED, 0), 0, f"{what}: {VERIFIED} unchanged")
    t.check(not broker.saw_client(cid, bmark), f"{what}: the client never reached the broker")
    return rc


def gets_in(t, g, watcher, what, token, version=5, user=None, cid=None):
    """CONNACK 0, and a QoS 1 PUBLISH reaches mosquitto."""
    cid = cid or uid("in")
    c = h.RawClient(g.port)
    rc = c.connect(version, cid, username=v4_user(version, user, token), password=token.encode())
    if not t.eq(rc, 0, f"{what}: CONNACK 0"):
        c.close()
        return False
    topic = f"jwt/in/{cid}"
    ack = c.publish_wait(topic, what.encode(), 1, 1)
    t.check(ack < 0x80, f"{what}: PUBACK {ack:#x}", ack)
    msgs, found = watcher.until(topic)
    t.check(found and (topic, what.encode()) in msgs, f"{what}: the message reached mosquitto", msgs[-3:])
    c.disconnect()
    c.close()
    return True


# ---------------------------------------------------------------------------
# cases on the main gate: a JWKS URL with RS256, ES256 and EdDSA keys


def good_tokens(t, g, broker, watcher, keys):
    rs, ec, ed = keys["rs1"], keys["ec1"], keys["ed1"]
    before = metrics(g)
    for version in (4, 5):
        for key in (rs, ec, ed):
            gets_in(t, g, watcher, f"v{version} {key.alg} good token", tok(key), version)
    after = metrics(g)
    t.eq(after.get(VERIFIED, 0) - before.get(VERIFIED, 0), 6, f"{VERIFIED} counts the 6 good tokens")
    t.check(after.get(fetch_metric("ok"), 0) >= 1, 'mgate_jwt_jwks_fetches_total{result="ok"} >= 1', after)
    gets_in(t, g, watcher, "aud an array holding the audience", tok(rs, claims(aud=["other", AUD])))
    gets_in(t, g, watcher, "exp 10 s ago, inside the default 30 s leeway", tok(ec, claims(exp=now() - 10, iat=now() - 60)))
    gets_in(t, g, watcher, "nbf in 10 s, inside the leeway", tok(ed, claims(nbf=now() + 10)))
    gets_in(t, g, watcher, "username sent equal to the sub claim (USERNAME=match)", tok(rs), user="alice")
    cid = uid("claim-user")
    mark = broker.log.mark()
    gets_in(t, g, watcher, "no username sent", tok(rs, claims(sub="zoe")), cid=cid)
    t.check(broker.log.search(r"as " + cid + r" \(.*u'zoe'", mark),
            "no username sent: the sub claim is the username the broker sees (u'zoe')",
            broker.log.text(mark)[-400:])


def refusals(t, g, broker, keys, srv):
    rs, ec, ed = keys["rs1"], keys["ec1"], keys["ed1"]
    good = tok(rs)
    cases = [
        ("expired (exp 120 s ago, leeway 30 s)", tok(rs, claims(exp=now() - 120, iat=now() - 600)), "expired"),
        ("not yet valid (nbf in 120 s)", tok(ec, claims(nbf=now() + 120)), "not_yet_valid"),
        ("issued in the future (iat in 120 s)", tok(ed, claims(iat=now() + 120)), "issued_in_future"),
        ("no exp (MGATE_JWT_REQUIRE_EXP default true)", tok(rs, claims(exp=None)), "no_expiry"),
        ("exp a string", tok(rs, claims(exp=str(now() + 300))), "bad_claim"),
        ("wrong issuer", tok(rs, claims(iss="https://evil.test")), "wrong_issuer"),
        ("no issuer", tok(ec, claims(iss=None)), "wrong_issuer"),
        ("wrong audience", tok(rs, claims(aud="other")), "wrong_audience"),
        ("wrong audience (an array without it)", tok(ed, claims(aud=["a", "b"])), "wrong_audience"),
        ("a flipped signature bit (RS256)", remember(jt.tamper(good)), "bad_signature"),
        ("a flipped signature bit (ES256)", remember(jt.tamper(tok(ec))), "bad_signature"),
        ("a flipped signature bit (EdDSA)", remember(jt.tamper(tok(ed))), "bad_signature"),
    ]
    h0, _, s0 = good.split(".")
    changed = jt.b64url(json.dumps(claims(sub="mallory")).encode())
    cases.append(("a payload changed under its signature", f"{h0}.{changed}.{s0}", "bad_signature"))
    rs_sig = rs.sign(b"x.y")
    cases.append(('alg "none" (with a signature)',
                  remember(jt.make_token({"alg": "none", "kid": "rs1"}, claims(), lambda d: rs_sig)), "bad_alg"))
    cases.append(('alg "none", empty signature part',
                  jt.make_token({"alg": "none", "typ": "JWT"}, claims(), None), ("bad_alg", "malformed")))
    confused = jt.make_token({"alg": "HS256", "kid": "rs1"}, claims(),
                             lambda d: jt.hs256(rs.public_pem(), d))
    remember(confused)
    cases.append(("HS256 signed with the RSA public key's PEM (kid rs1 in the JWKS)", confused,
                  ("bad_alg", "unknown_kid", "bad_signature")))
    confused_nokid = jt.make_token({"alg": "HS256"}, claims(), lambda d: jt.hs256(rs.public_pem(), d))
    remember(confused_nokid)
    cases.append(("HS256 signed with the RSA PEM, no kid", confused_nokid, ("bad_alg", "unknown_kid", "bad_signature")))
    cases += [
        ("not a token", "hello.world", "malformed"),
        ("three parts, not base64url JSON", "a!b.c$d.e", "malformed"),
        ("a header that is not JSON", jt.b64url(b"{nope") + "." + jt.b64url(b"{}") + "." + jt.b64url(b"x" * 64),
         "malformed"),
        ("no sub claim (the username claim)", tok(rs, claims(sub=None)), "identity"),
        ("an acl claim of the wrong shape ({\"pub\": \"dev/#\"})", tok(rs, claims(acl={"pub": "dev/#"})), "bad_claim"),
        ("an acl claim with an unknown key", tok(rs, claims(acl={"publish": ["a"]})), "bad_claim"),
        ("an acl claim with an invalid filter (a/#/b)", tok(rs, claims(acl={"sub": ["a/#/b"]})), "bad_claim"),
    ]
    # strictness: what a lenient parser would let through
    good_parts = good.split(".")
    cases += [
        ("padding '=' on the signature part", good + "=", "malformed"),
        ("a payload with sub twice (duplicate JSON keys)",
         tok(rs, b'{"iss":"%s","aud":"%s","sub":"nobody","sub":"alice","exp":%d}' % (ISS.encode(), AUD.encode(),
                                                                                    now() + 300)), "malformed"),
        ("a token over 8192 bytes", tok(rs, claims(pad="x" * 9000)), "malformed"),
        ("a kid over 255 bytes", tok(rs, kid="k" * 300), ("malformed", "unknown_kid")),
        ('a "crit" header', tok(rs, header={"crit": ["exp"], "exp": 1}), "bad_alg"),
        ("ES256 with the DER signature openssl writes (not r||s)",
         remember(jt.make_token({"alg": "ES256", "kid": "ec1"}, claims(), lambda d: jt.ecdsa_raw_to_der(ec.sign(d)))),
         ("bad_signature", "malformed")),
        ("RS256 header with the EC key's kid", remember(jt.make_token({"alg": "RS256", "kid": "ec1"}, claims(), rs.sign)),
         ("unknown_kid", "bad_alg", "bad_signature")),
        ("an oct key published in the JWKS (skipped): HS256 with it", tok(keys["oct"], claims()),
         ("unknown_kid", "bad_alg")),
        ("a 1024-bit RSA key in the JWKS (skipped, under 2048)", tok(keys["weak"], claims()), "unknown_kid"),
        ("the signature part empty", f"{good_parts[0]}.{good_parts[1]}.", ("malformed", "bad_signature")),
    ]
    for what, token, reason in cases:
        refused(t, g, broker, what, token, reason)
    refused(t, g, broker, "no password (no token)", None, "no_token")
    refused(t, g, broker, "a username other than the sub claim (USERNAME=match)", tok(rs), "identity", user="bob")
    refused(t, g, broker, "3.1.1 expired", tok(rs, claims(exp=now() - 120)), "expired", version=4)
    refused(t, g, broker, "3.1.1 bad signature", remember(jt.tamper(tok(ec))), "bad_signature", version=4)
    refused(t, g, broker, "3.1.1 username other than sub", tok(ed), "identity", version=4, user="mallory")
    # an unknown kid within MGATE_JWT_JWKS_MIN_INTERVAL (60 s on this gate) of the last fetch: refused, no fetch
    other = jt.Key.generate(g.cwd, "RSA", kid="nobody")
    n = srv.count()
    refused(t, g, broker, "an unknown kid (within MIN_INTERVAL of the last fetch)", tok(other), "unknown_kid")
    t.eq(srv.count(), n, "... without another JWKS fetch (MIN_INTERVAL=60s)")


def acl_claim(t, g, broker, watcher, keys):
    rs = keys["rs1"]
    acl = {"pub": ["dev/%u/#"], "sub": ["dev/%u/in/#", "shared/#"], "all": ["room/%c/#"]}
    alice, bob = tok(rs, claims(sub="alice", acl=acl)), tok(rs, claims(sub="bob", acl=acl))
    c = login(g.port, 5, alice, cid="acl-c5")
    for topic, want, what in (("dev/alice/t", True, "its own dev/%u/#"), ("dev/bob/t", False, "another's dev/bob"),
                              ("room/acl-c5/x", True, '"all" room/%c/#'), ("room/other/x", False, "another's room"),
                              ("shared/x", False, "a sub-only filter"), ("dev/alicex/t", False, "dev/alicex (%u is a whole level)")):
        rc = c.publish_wait(topic, b"v5", 1, _n[0] % 60000 + 1)
        _n[0] += 1
        t.check((rc < 0x80) if want else (rc == 0x87), f"v5 acl claim, PUBLISH on {what}: "
                f"{'allowed' if want else 'PUBACK 0x87'}", f"{rc:#x}")
    c.publish_wait("dev/alice/marker5", b"m", 1, 999)
    msgs, found = watcher.until("dev/alice/marker5")
    t.eq([tp for tp, _ in msgs], ["dev/alice/t", "room/acl-c5/x", "dev/alice/marker5"],
         "v5: mosquitto got exactly the allowed messages")
    def filters(cid):
        return [("dev/alice/in/#", 1), ("dev/bob/in/#", 1), ("shared/#", 1), ("#", 0), (f"room/{cid}/#", 1),
                ("dev/alice/#", 0), ("room/acl-c5/#", 0) if cid != "acl-c5" else ("room/+/#", 0)]
    t.eq(c.subscribe(1, filters("acl-c5")), [1, 0x87, 1, 0x87, 1, 0x87, 0x87],
         "v5 SUBSCRIBE: granted by sub and all (room/%c/#), others 0x87")
    c.close()
    c4 = login(g.port, 4, alice, cid="acl-c4")
    t.eq(c4.subscribe(1, filters("acl-c4")), [1, 0x80, 1, 0x80, 1, 0x80, 0x80],
         "3.1.1 SUBSCRIBE: the same, refused ones 0x80 (another client id's room/%c too)")
    c4.publish("dev/alice/t4", b"ok4", 1, 1)
    t.eq(h.ack_reason(4, c4.expect(h.PUBACK, 5.0)), 0, "3.1.1 PUBLISH on its own topic: PUBACK")
    c4.publish("dev/bob/t4", b"no4", 1, 2)
    try:
        c4.expect(h.PUBACK, 1.0)
    except (TimeoutError, h.Closed):
        pass
    c4.close()
    m4 = login(g.port, 4, alice, cid="acl-m4")
    m4.publish_wait("dev/alice/marker4", b"m", 1, 3)
    m4.close()
    msgs, found = watcher.until("dev/alice/marker4")
    t.check(found and ("dev/bob/t4", b"no4") not in msgs and ("dev/alice/t4", b"ok4") in msgs,
            "3.1.1: the refused QoS 1 PUBLISH never reached mosquitto, the allowed one did", msgs)
    # %u is the claim: bob gets dev/bob, not dev/alice
    b = login(g.port, 5, bob, cid="acl-bob")
    t.check(b.publish_wait("dev/bob/x", b"b", 1, 1) < 0x80, "%u is bob for bob's token: dev/bob/x allowed")
    t.eq(b.publish_wait("dev/alice/x", b"b", 1, 2), 0x87, "... dev/alice/x refused (0x87)")
    b.close()
    # a will on a topic the claim does not allow refuses the CONNECT; one it allows is fine
    for version, no in ((5, 0x87), (4, 5)):
        cid = uid(f"will{version}")
        mark = broker.log.mark()
        rc = connack(g.port, version, cid, None, alice, will={"topic": "dev/bob/will", "payload": b"w", "qos": 1})
        t.eq(rc, no, f"v{version} a will on dev/bob/will (outside the claim): CONNACK {no:#x}")
        t.check(not broker.saw_client(cid, mark), f"v{version} ... the client never reached the broker")
        rc = connack(g.port, version, uid("willok"), None, alice, will={"topic": "dev/alice/will", "payload": b"w"})
        t.eq(rc, 0, f"v{version} a will on dev/alice/will (inside it): CONNACK 0")


def websocket(t, g, watcher, keys, ws_port):
    rs = keys["rs1"]
    good = tok(ec_or(keys), claims(sub="wsuser"))
    for version in (4, 5):
        w = RawWs(ws_port, headers=[("Authorization", "Bearer " + good)])
        t.check("101" in w.status, f"v{version} WebSocket upgrade with Authorization: Bearer <token>: 101", w.status)
        cid = uid(f"ws{version}")
        w.send_frame(h.connect_packet(version, cid))
        data = w.recv_mqtt()
        t.eq(data[3] if len(data) > 3 and data[0] >> 4 == h.CONNACK else data, 0,
             f"v{version} WebSocket, CONNECT without credentials, the Bearer token judged: CONNACK 0")
        topic = f"jwt/ws/{cid}"
        w.send_frame(h.publish_packet(version, topic, b"ws", 1, 7))
        ack = w.recv_mqtt()
        t.eq(ack[0] >> 4, h.PUBACK, f"v{version} WebSocket PUBLISH: PUBACK")
        msgs, found = watcher.until(topic)
        t.check(found, f"v{version} WebSocket: the message reached mosquitto", msgs[-2:])
        w.s.close()
        bad = remember(jt.tamper(tok(rs)))
        w = RawWs(ws_port, headers=[("Authorization", "Bearer " + bad)])
        if "101" in w.status:
            w.send_frame(h.connect_packet(version, uid("wsbad")))
            data = w.recv_mqtt()
            code = data[3] if len(data) > 3 else None
        else:
            code = w.status
        want = 0x86 if version == 5 else 4
        t.eq(code, want, f"v{version} WebSocket with a bad Bearer token: CONNACK {want:#x}")
        w.s.close()
    w = RawWs(ws_port)
    w.send_frame(h.connect_packet(5, uid("wspw"), password=good.encode()))
    data = w.recv_mqtt()
    t.eq(data[3] if len(data) > 3 else None, 0, "WebSocket without the header, the token as the CONNECT's password: 0")
    w.s.close()


def ec_or(keys):
    return keys["ec1"]


def post(port, path, body, headers):
    c = http.client.HTTPConnection(h.HOST, port, timeout=10)
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def http_bridge(t, g, watcher, keys, http_port):
    rs = keys["rs1"]
    good = tok(rs, claims(sub="httpuser", acl={"pub": ["jwt/http/%u/#"]}))
    st, body = post(http_port, "/mqtt/jwt/http/httpuser/1?qos=1", b"posted", {"Authorization": "Bearer " + good})
    t.eq(st, 200, "HTTP POST with Authorization: Bearer <token>: 200 (published)")
    msgs, found = watcher.until("jwt/http/httpuser/1")
    t.check(found and ("jwt/http/httpuser/1", b"posted") in msgs, "... the message reached mosquitto", msgs[-2:])
    st, _ = post(http_port, "/mqtt/jwt/http/httpuser/q?qos=1&authorization=" + good, b"query", {})
    t.eq(st, 200, "HTTP POST with the token in ?authorization=: 200 (published)")
    st, _ = post(http_port, "/mqtt/jwt/http/other/1?qos=1", b"no", {"Authorization": "Bearer " + good})
    t.eq(st, 403, "HTTP POST outside the token's acl claim: 403")
    bad = remember(jt.tamper(tok(rs, claims(sub="httpuser"))))
    st, _ = post(http_port, "/mqtt/jwt/http/httpuser/2?qos=1", b"bad", {"Authorization": "Bearer " + bad})
    t.eq(st, 401, "HTTP POST with a bad token: 401")
    expired = tok(rs, claims(sub="httpuser", exp=now() - 300))
    st, _ = post(http_port, "/mqtt/jwt/http/httpuser/3?qos=1", b"exp", {"Authorization": "Bearer " + expired})
    t.eq(st, 401, "HTTP POST with an expired token: 401")
    st, _ = post(http_port, "/mqtt/jwt/http/httpuser/4?qos=1", b"none", {})
    t.eq(st, 401, "HTTP POST without a token: 401")
    st, _ = post(http_port, "/mqtt/jwt/http/other/q?qos=1&authorization=" + good, b"no", {})
    t.eq(st, 403, "HTTP POST with ?authorization=, outside the token's acl claim: 403")
    st, _ = post(http_port, "/mqtt/jwt/http/httpuser/5?qos=1&authorization=" + good, b"marker", {})
    msgs, found = watcher.until("jwt/http/httpuser/5")
    t.check(found and not any(tp in ("jwt/http/other/1", "jwt/http/other/q", "jwt/http/httpuser/2", "jwt/http/httpuser/3",
                                     "jwt/http/httpuser/4") for tp, _ in msgs),
            "the refused POSTs never reached mosquitto (a marker after them did)", msgs)


# ---------------------------------------------------------------------------
# gates of their own


def key_sources(t, tmp, broker, watcher, keys):
    """A PEM file with an RSA and an Ed25519 public key (tokens without kid), and an HS256 secret
    file in the chain jwt,acl (no acl claim: the acl file decides)."""
    pem = os.path.join(tmp, "pub.pem")
    with open(pem, "wb") as f:
        f.write(keys["rs1"].public_pem() + keys["ed1"].public_pem())
    g = gate(tmp, broker, admin=False, MGATE_JWT_PUBLIC_KEY_FILE=pem)
    gets_in(t, g, watcher, "PEM file: RS256 without kid", tok(keys["rs1"], kid=False))
    gets_in(t, g, watcher, "PEM file: EdDSA without kid", tok(keys["ed1"], kid=False), version=4)
    refused(t, g, broker, "PEM file: ES256 (no EC key in the file)", tok(keys["ec1"], kid=False),
            ("unknown_kid", "bad_signature"))
    refused(t, g, broker, "PEM file: RS256 by another RSA key", tok(keys["rs2"], kid=False),
            ("bad_signature", "unknown_kid"))
    stopped(t, g)

    secret = os.urandom(24).hex().encode()  # 48 bytes
    sfile = os.path.join(tmp, "secret")
    with open(sfile, "wb") as f:
        f.write(secret + b"\n")  # one trailing newline is not part of the secret
    aclfile = os.path.join(tmp, "acl")
    with open(aclfile, "w") as f:
        f.write("pattern readwrite chain/%u/#\n")
    hs = jt.Key.hs(secret)
    g = gate(tmp, broker, admin=False, MGATE_HANDLER="jwt,acl", MGATE_JWT_SECRET_FILE=sfile,
             MGATE_JWT_ALGORITHMS="HS256", MGATE_JWT_ISSUER=ISS, MGATE_ACL_FILE=aclfile)
    carol = tok(hs, claims(sub="carol"))
    for version in (4, 5):
        c = login(g.port, version, carol, cid=uid(f"hs{version}"))
        topic = f"chain/carol/{version}"
        c.publish(topic, b"hs", 1, 1)
        t.eq(h.ack_reason(version, c.expect(h.PUBACK, 5.0)), 0, f"v{version} HS256 (secret file): PUBLISH allowed")
        msgs, found = watcher.until(topic)
        t.check(found, f"v{version} HS256: the message reached mosquitto", msgs[-2:])
        no = 0x80 if version == 4 else 0x87
        t.eq(c.subscribe(2, [("chain/carol/#", 1), ("chain/dave/#", 1)]), [1, no],
             f"v{version} jwt,acl without an acl claim: the acl file decides the SUBSCRIBE (%u = sub)")
        if version == 5:
            t.eq(c.publish_wait("chain/dave/x", b"x", 1, 3), 0x87, "v5 jwt,acl: the acl file refuses chain/dave/x")
        c.close()
    refused(t, g, broker, "HS256 with another secret", tok(jt.Key.hs(b"s" * 48), claims(sub="carol")), "bad_signature")
    refused(t, g, broker, "RS256 where MGATE_JWT_ALGORITHMS=HS256", tok(keys["rs1"], claims(sub="carol")), "bad_alg")
    refused(t, g, broker, "HS256 with the newline in the secret", tok(jt.Key.hs(secret + b"\n"), claims(sub="carol")),
            "bad_signature")
    stopped(t, g)


def identities(t, tmp, broker, watcher, keys, jwks_file):
    rs = keys["rs1"]
    g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_USERNAME="set",
             MGATE_JWT_CLIENT_ID_CLAIM="cid")
    erin = tok(rs, claims(sub="erin", cid="erin-dev"))
    mark = broker.log.mark()
    c = login(g.port, 5, erin, cid="erin-dev", user="someone-else")
    c.close()
    t.check(broker.log.wait(r"as erin-dev \(.*u'erin'", 5.0, mark),
            "USERNAME=set: a username sent is replaced, the broker sees the claim (u'erin')", broker.log.text(mark)[-300:])
    t.check(not broker.log.search(r"u'someone-else'", mark), "... and never the username the client sent")
    refused(t, g, broker, "CLIENT_ID_CLAIM=cid: another client id", erin, "identity", cid="not-erin")
    refused(t, g, broker, "CLIENT_ID_CLAIM=cid: the token has no cid claim", tok(rs, claims(sub="erin")), "identity",
            cid="erin-dev")
    refused(t, g, broker, "3.1.1 CLIENT_ID_CLAIM: another client id", erin, "identity", version=4, cid="erin-dev2")
    stopped(t, g)

    g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_TOKEN_FROM="username",
             MGATE_JWT_USERNAME="set")
    frank = tok(rs, claims(sub="frank"))
    for version in (4, 5):
        cid = uid(f"tfu{version}")
        mark = broker.log.mark()
        c = h.RawClient(g.port)
        rc = c.connect(version, cid, username=frank)
        t.eq(rc, 0, f"v{version} TOKEN_FROM=username: the token as the username: CONNACK 0")
        c.close()
        t.check(broker.log.wait(r"as " + cid + r" \(.*u'frank'", 5.0, mark),
                f"v{version} ... the broker sees the sub claim as the username", broker.log.text(mark)[-300:])
    refused(t, g, broker, "TOKEN_FROM=username: the token in the password", frank, ("no_token", "malformed"),
            user="frank")
    stopped(t, g)


def other_claims(t, tmp, broker, watcher, keys, jwks_file):
    """MGATE_JWT_USERNAME_CLAIM, MGATE_JWT_ACL_CLAIM with other names, MGATE_JWT_REQUIRE_EXP=false."""
    rs = keys["rs1"]
    g = gate(tmp, broker, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_USERNAME_CLAIM="preferred_username",
             MGATE_JWT_ACL_CLAIM="perms", MGATE_JWT_REQUIRE_EXP="false")
    token = tok(rs, claims(sub="not-this", preferred_username="gina", exp=None, perms={"pub": ["gina/%u/#"]},
                           acl={"pub": ["#"]}))
    cid = uid("gina")
    mark = broker.log.mark()
    c = login(g.port, 5, token, cid=cid)
    t.check(broker.log.wait(r"as " + cid + r" \(.*u'gina'", 5.0, mark),
            "USERNAME_CLAIM=preferred_username: the broker sees u'gina'", broker.log.text(mark)[-300:])
    t.check(c.publish_wait("gina/gina/x", b"g", 1, 1) < 0x80, "ACL_CLAIM=perms: gina/%u/# allowed")
    t.eq(c.publish_wait("other/x", b"g", 1, 2), 0x87, "ACL_CLAIM=perms: the acl claim (pub #) is not read, other/x 0x87")
    c.close()
    t.eq(connack(g.port, 5, uid("noexp"), None, tok(rs, claims(sub="x", preferred_username="h", exp=None))), 0,
         "REQUIRE_EXP=false: a token without exp gets in")
    refused(t, g, broker, "REQUIRE_EXP=false: an expired token still refused",
            tok(rs, claims(preferred_username="h", exp=now() - 100)), "expired")
    refused(t, g, broker, "USERNAME_CLAIM=preferred_username: a token with only sub", tok(rs, claims(sub="h")),
            "identity")
    stopped(t, g)
    # "none" turns each off (an empty value means the default, as for every variable)
    g = gate(tmp, broker, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_USERNAME_CLAIM="none", MGATE_JWT_ACL_CLAIM="none")
    c = login(g.port, 5, tok(rs, claims(sub="alice", acl={"pub": ["only/this"]})), cid=uid("none"), user="bob")
    t.check(c.publish_wait("bob/x", b"n", 1, 1) < 0x80,
            "USERNAME_CLAIM=none, ACL_CLAIM=none: bob with alice's token gets in, and the acl claim is not read")
    c.close()
    stopped(t, g)


def sighup(t, tmp, broker, watcher, keys):
    f1, f2 = keys["ec1"], keys["ed2"]
    path = os.path.join(tmp, "jwks-sighup.json")
    with open(path, "w") as f:
        json.dump(jt.jwks([f1]), f)
    g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=path)
    gets_in(t, g, watcher, "JWKS_FILE: a token of its key", tok(f1))
    refused(t, g, broker, "JWKS_FILE: a kid not in the file", tok(f2), "unknown_kid")
    with open(path + ".new", "w") as f:
        json.dump(jt.jwks([f2]), f)
    os.replace(path + ".new", path)
    g.proc.send_signal(signal.SIGHUP)
    ok = h.wait_until(lambda: connack(g.port, 5, uid("hup"), None, tok(f2)) == 0, 3.0, 0.2)
    t.check(ok, "SIGHUP with a new JWKS_FILE: the new key's token gets in")
    refused(t, g, broker, "after SIGHUP: the old key's token", tok(f1), "unknown_kid")
    t.check(g.alive(), "mgate runs on after SIGHUP")
    bad = path
    with open(bad, "w") as f:
        f.write("{not json")
    mark = g.log.mark()
    g.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)  # nothing to wait for when the old keys are kept but a log line, whose wording is free
    t.check(g.alive(), "SIGHUP with a broken JWKS_FILE: mgate keeps running")
    t.eq(connack(g.port, 5, uid("hupbad"), None, tok(f2)), 0, "... and keeps the keys it had")
    t.check(any("MGATE_JWT_JWKS_FILE" in json.dumps(j) for j in g.json_since(mark)),
            "... and logs the broken file naming MGATE_JWT_JWKS_FILE", g.log.text(mark)[-300:])
    stopped(t, g)


def expiry(t, tmp, broker, keys, jwks_file):
    rs = keys["rs1"]
    g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_LEEWAY="0s")
    keep = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_LEEWAY="0s",
                MGATE_JWT_EXPIRE_SESSIONS="false")
    lee = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_LEEWAY="2s")
    exp = now() + 3
    short = tok(rs, claims(exp=exp))
    c5 = login(g.port, 5, short, cid="exp5")
    c4 = login(g.port, 4, short, cid="exp4")
    k5 = login(keep.port, 5, short, cid="keep5")
    l5 = login(lee.port, 5, short, cid="lee5")
    wait = exp - 1.2 - time.time()
    if wait > 0:
        time.sleep(wait)  # until shortly before exp: the sessions must still be up then
    t.check(c5.ping(1.0) and c4.ping(1.0), "before exp both sessions are up (PINGRESP)")
    closed, reason = c5.expect_disconnect(exp + 4 - time.time())
    at = time.time()
    t.check(closed and reason == 0xA0, "v5: DISCONNECT 0xA0 (maximum connect time) when the token expires",
            f"closed={closed} reason={reason} before={getattr(c5, 'before_close', None)}")
    t.check(exp - 0.3 <= at <= exp + 1.5, f"... {at - exp:+.2f} s from exp (LEEWAY=0s: within 1.5 s, not before)",
            at - exp)
    t.check(c4.expect_closed(max(0.5, exp + 2.5 - time.time())), "3.1.1: the connection is closed at exp")
    t.check(k5.ping(2.0), "MGATE_JWT_EXPIRE_SESSIONS=false: the session outlives its token")
    late = time.time() - exp
    t.check(late < 1.5 and l5.ping(0.3), f"LEEWAY=2s: the session is still up {late:+.2f} s after exp")
    closed, reason = l5.expect_disconnect(exp + 5 - time.time())
    at = time.time()
    t.check(closed and reason == 0xA0 and exp + 2 - 0.3 <= at <= exp + 2 + 1.5,
            f"LEEWAY=2s: DISCONNECT 0xA0 at exp + leeway ({at - exp:+.2f} s from exp)", f"{closed} {reason} {at - exp:+.2f}")
    l5.close()
    k5.close()
    c4.close()
    c5.close()
    stopped(t, g)
    stopped(t, keep)
    stopped(t, lee)


# ---------------------------------------------------------------------------
# the JWKS URL over time


def unknown_kid_and_rotation(t, tmp, broker, watcher, keys):
    srv = JwksServer(jt.jwks([keys["rs1"]]))
    try:
        g = gate(tmp, broker, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_JWKS_MIN_INTERVAL="1s")
        t.eq(srv.count(), 0, "the JWKS is fetched lazily: no fetch at start")
        stranger = jt.Key.generate(tmp, "RSA", kid="stranger")
        refused(t, g, broker, "an unknown kid on a fresh gate", tok(stranger), "unknown_kid")
        t.eq(srv.count(), 1, "... exactly one JWKS fetch")
        refused(t, g, broker, "another unknown kid right after", tok(stranger, kid="stranger2"), "unknown_kid")
        t.eq(srv.count(), 1, "... no second fetch within MIN_INTERVAL")
        gets_in(t, g, watcher, "a known kid, without a fetch", tok(keys["rs1"]))
        t.eq(srv.count(), 1, "... still one fetch")
        time.sleep(1.1)  # MIN_INTERVAL=1s
        refused(t, g, broker, "an unknown kid after MIN_INTERVAL", tok(stranger), "unknown_kid")
        t.eq(srv.count(), 2, "... one more fetch")
        # rotation: the issuer now signs with rs2 only
        srv.set(doc=jt.jwks([keys["rs2"]]))
        time.sleep(1.1)
        gets_in(t, g, watcher, "rotation: a token with the new kid rs2", tok(keys["rs2"]))
        t.eq(srv.count(), 3, "... after exactly one fetch")
        refused(t, g, broker, "rotation: the old kid rs1, gone from the set", tok(keys["rs1"]), "unknown_kid")
        m = metrics(g)
        t.eq(m.get(fetch_metric("ok"), 0), srv.count(), 'mgate_jwt_jwks_fetches_total{result="ok"} = the fetches served')
        stopped(t, g)
    finally:
        srv.stop()


def flood(t, tmp, broker, keys):
    srv = JwksServer(jt.jwks([keys["rs1"]]))
    srv.set(delay=0.3)
    try:
        g = gate(tmp, broker, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_JWKS_MIN_INTERVAL="10s", MGATE_WORKERS="4")
        one = keys["rs1"]
        sig = one.sign(b"x.y")
        logins = []
        for i in range(200):
            made_up = jt.make_token({"alg": "RS256", "kid": f"made-up-{i}"}, claims(), lambda d: sig)
            logins.append((f"flood-{i}", None, made_up.encode()))
        good = tok(one)
        logins.insert(100, ("flood-good", None, good.encode()))
        codes, took = h.connect_burst(g.port, 5, logins, timeout=10.0)
        t.eq(codes.count(0x86), 200, f"200 made-up kids at once: all CONNACK 0x86 ({took:.2f} s)")
        t.eq(codes[100], 0, "a good client in the middle of the flood gets in (it waited for the fetch in flight)")
        t.check(took < 2.0, f"... the flood took {took:.2f} s (< 2 s)")
        t.check(1 <= srv.count() <= 2, f"the flood cost {srv.count()} JWKS fetches (at most 2, MIN_INTERVAL=10s)")
        m = metrics(g)
        t.eq(m.get(refused_metric("unknown_kid"), 0), 200, 'mgate_jwt_refused_total{reason="unknown_kid"} = 200')
        t.eq(connack(g.port, 5, uid("after-flood"), None, tok(one)), 0, "after the flood a good client still gets in")
        stopped(t, g)
    finally:
        srv.stop()


def url_down(t, tmp, broker, watcher, keys):
    port = h.free_port()
    g = gate(tmp, broker, MGATE_JWT_JWKS_URL=f"http://{h.HOST}:{port}/jwks", MGATE_JWT_JWKS_MIN_INTERVAL="1s",
             MGATE_JWT_JWKS_TIMEOUT="1s")
    t.check(g.alive(), "mgate starts while the JWKS URL is down")
    good = tok(keys["ec1"])
    rc = connack(g.port, 5, uid("down"), None, good)
    t.check(rc in (0x86, 0x88), f"JWKS down: the CONNECT is refused ({rc})", rc)
    t.check(h.wait_until(lambda: metrics(g).get(fetch_metric("error"), 0) >= 1, 2.0),
            'JWKS down: mgate_jwt_jwks_fetches_total{result="error"} >= 1')
    srv = JwksServer(jt.jwks([keys["ec1"]]), port=port)
    try:
        for mode, result in (("500", "error"), ("garbage", "invalid")):
            srv.set(mode=mode)
            time.sleep(1.1)  # MIN_INTERVAL
            before = metrics(g)
            n = srv.count()
            rc = connack(g.port, 5, uid(mode), None, good)
            t.check(rc in (0x86, 0x88), f"JWKS answers {mode}: the CONNECT is refused ({rc})", rc)
            t.eq(srv.count(), n + 1, f"JWKS answers {mode}: one fetch")
            after = h.wait_until(lambda: (lambda m: m if m.get(fetch_metric(result), 0) > before.get(fetch_metric(result), 0)
                                          else None)(metrics(g)), 2.0) or metrics(g)
            t.eq(after.get(fetch_metric(result), 0) - before.get(fetch_metric(result), 0), 1,
                 f'JWKS answers {mode}: mgate_jwt_jwks_fetches_total{{result="{result}"}} +1')
        srv.set(mode="hang", hang=3.0)
        time.sleep(1.1)
        t0 = time.monotonic()
        rc = connack(g.port, 5, uid("hang"), None, good, timeout=6.0)
        took = time.monotonic() - t0
        t.check(rc in (0x86, 0x88) and took < 2.5, f"JWKS hangs, JWKS_TIMEOUT=1s: refused after {took:.2f} s", rc)
        srv.set(mode="ok")
        time.sleep(1.1)
        ok = h.wait_until(lambda: connack(g.port, 5, uid("up"), None, good) == 0, 3.0, 0.3)
        t.check(ok, "the JWKS is up and MIN_INTERVAL passed: the token gets in")
        gets_in(t, g, watcher, "JWKS up: publish through", good)
        stopped(t, g)
    finally:
        srv.stop()


def shutdown_waiting(t, tmp, broker, keys):
    """SIGTERM while CONNECTs wait for a JWKS fetch that hangs: mgate exits 0 within its grace, each
    waiting client gets a refusal or a close, none gets in."""
    srv = JwksServer(jt.jwks([keys["rs1"]]))
    srv.set(mode="hang", hang=8.0)
    try:
        g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_JWKS_TIMEOUT="6s",
                 MGATE_SHUTDOWN_GRACE="1s", MGATE_WORKERS="2")
        clients = []
        for i in range(6):
            c = h.RawClient(g.port, timeout=5.0)
            c.version = 5
            c.send(h.connect_packet(5, f"wait-{i}", password=tok(keys["rs1"]).encode()))
            clients.append(c)
        t.check(h.wait_until(lambda: srv.count() >= 1, 3.0), "the CONNECTs started a fetch, which hangs")
        time.sleep(0.3)  # the CONNECTs are read and waiting
        t0 = time.monotonic()
        rc = g.stop(signal.SIGTERM, 8.0)
        took = time.monotonic() - t0
        t.check(rc == 0 and took < 4.0, f"SIGTERM with 6 CONNECTs waiting for the JWKS: exit {rc} in {took:.2f} s")
        codes = []
        for c in clients:
            try:
                p = c.read_packet(2.0)
                codes.append(p.body[1] if p.type == h.CONNACK else p.type)
            except (TimeoutError, h.Closed):
                codes.append(None)
            c.close()
        t.check(all(code != 0 for code in codes), f"none of them got in ({codes})")
    finally:
        srv.stop()


def cache_control(t, tmp, broker, watcher, keys):
    """Cache-Control: max-age=1 beats MGATE_JWT_JWKS_REFRESH=5m: a key removed from the set is
    refused soon after, with no unknown kid to make mgate fetch."""
    srv = JwksServer(jt.jwks([keys["rs1"], keys["rs2"]]), max_age=1)
    try:
        g = gate(tmp, broker, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_JWKS_MIN_INTERVAL="1s",
                 MGATE_JWT_JWKS_REFRESH="5m")
        old = tok(keys["rs1"])
        gets_in(t, g, watcher, "max-age=1: rs1 while in the set", old)
        srv.set(doc=jt.jwks([keys["rs2"]]))
        t0 = time.monotonic()
        gone = h.wait_until(lambda: connack(g.port, 5, uid("cc"), None, old) != 0, 5.0, 0.25)
        took = time.monotonic() - t0
        t.check(gone, f"rs1 removed from the set: refused {took:.1f} s later (max-age=1 beats REFRESH=5m)")
        t.check(srv.count() <= 2 + took / 1.0 + 1, f"... {srv.count()} fetches in {took:.1f} s (none per CONNECT)")
        t.eq(connack(g.port, 5, uid("cc2"), None, tok(keys["rs2"])), 0, "rs2, still in the set, gets in")
        stopped(t, g)
    finally:
        srv.stop()


def revocation(t, tmp, broker, watcher, keys):
    """The identity provider empties its JWKS (revoking every key), then rotates to a set with a
    malformed key beside the new one: the old token is refused after the next refresh, and one
    bad key does not keep the new one out (the attack round's finding: both were kept out)."""
    srv = JwksServer(jt.jwks([keys["rs1"]]), max_age=1)
    try:
        g = gate(tmp, broker, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_JWKS_MIN_INTERVAL="1s")
        old = tok(keys["rs1"])
        gets_in(t, g, watcher, "revocation: rs1 while published", old)
        srv.set(doc={"keys": []})
        gone = h.wait_until(lambda: connack(g.port, 5, uid("rv"), None, old) != 0, 6.0, 0.3)
        t.check(gone, "an emptied JWKS revokes rs1: its token is refused after the refresh")
        bad_ec = dict(keys["ec1"].jwk(), kid="broken")
        bad_ec["y"] = bad_ec["x"]  # a point that is not on the curve
        srv.set(doc={"keys": [bad_ec, keys["rs2"].jwk()]})
        new = tok(keys["rs2"])
        back = h.wait_until(lambda: connack(g.port, 5, uid("rv2"), None, new) == 0, 6.0, 0.3)
        t.check(back, "a rotation to [malformed key, rs2]: rs2 gets in (the malformed key is skipped)")
        t.check(g.log.search(r"first fault: keys\[0\]") is not None, "... and the skipped key is logged")
        t.check(connack(g.port, 5, uid("rv3"), None, old) != 0, "... while rs1 stays refused")
        stopped(t, g)
    finally:
        srv.stop()


def what_the_broker_gets(t, tmp, broker, keys, jwks_file):
    """MGATE_JWT_FORWARD_TOKEN: by default the broker gets the CONNECT's password (the token) as
    sent; false takes it out once verified.  A username claim no broker takes (a control
    character) is refused as identity, not handed on to be dropped by the broker (0x88)."""
    import fake_broker as fb
    token = tok(keys["rs1"], claims(sub="fwd"))
    for forward in ("true", "false"):
        broker_side = fb.FakeBroker()
        g = gate(tmp, broker_side, admin=False, MGATE_JWT_JWKS_FILE=jwks_file, MGATE_JWT_FORWARD_TOKEN=forward)
        got = {}
        th = threading.Thread(target=lambda: got.update(rc=connack(g.port, 4, uid("fwd"), "fwd", token)))
        th.start()
        peer = broker_side.accept()
        pkt = peer.read_raw() if peer else b""
        if peer:
            peer.send(b"\x20\x02\x00\x00")  # a 3.1.1 CONNACK, accepted
        th.join(10)
        t.eq(got.get("rc"), 0, f"FORWARD_TOKEN={forward}: the client gets in")
        has = token.encode() in pkt
        t.check(has == (forward == "true"), f"FORWARD_TOKEN={forward}: the token {'is' if has else 'is not'} in the "
                f"broker's CONNECT", pkt[:40])
        if forward == "false":
            t.check(len(pkt) > 9 and not pkt[9] & 0x40 and pkt[9] & 0x80,
                    "... its password flag is off, its username flag on", pkt[:12])
        if peer:
            peer.close()
        broker_side.close()
        stopped(t, g)
    g = gate(tmp, broker, admin=False, MGATE_JWT_JWKS_FILE=jwks_file)
    refused(t, g, broker, "a sub with a control character (U+0001)", tok(keys["rs1"], claims(sub="a\u0001b")),
            "identity")
    refused(t, g, broker, "a sub with a noncharacter (U+FFFF)", tok(keys["rs1"], claims(sub="a\uffffb")), "identity")
    stopped(t, g)


def bad_config(t, tmp, broker, keys):
    short = os.path.join(tmp, "short-secret")
    with open(short, "w") as f:
        f.write("too-short")
    unreadable = os.path.join(tmp, "unreadable.pem")
    with open(unreadable, "wb") as f:
        f.write(keys["rs1"].public_pem())
    os.chmod(unreadable, 0)
    if os.geteuid() == 0:  # root reads anything: a missing file instead
        unreadable = os.path.join(tmp, "missing.pem")
    jwks_bad = os.path.join(tmp, "bad-jwks.json")
    with open(jwks_bad, "w") as f:
        f.write('{"keys": "nope"}')
    cases = [
        ({"MGATE_HANDLER": "jwt"}, ("MGATE_JWT_JWKS_URL", "MGATE_JWT_JWKS_FILE", "MGATE_JWT_PUBLIC_KEY_FILE",
                                    "MGATE_JWT_SECRET_FILE"), "no key source"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_PUBLIC_KEY_FILE": unreadable}, ("MGATE_JWT_PUBLIC_KEY_FILE",),
         "an unreadable key file"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_PUBLIC_KEY_FILE": keys["rs1"].path}, ("MGATE_JWT_PUBLIC_KEY_FILE",),
         "a private key as the public key file"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_SECRET_FILE": short}, ("MGATE_JWT_SECRET_FILE",), "a 9-byte secret"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_JWKS_FILE": jwks_bad}, ("MGATE_JWT_JWKS_FILE",), "a broken JWKS file"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_PUBLIC_KEY_FILE": keys["rs1"].pub_path, "MGATE_JWT_TOKEN_FROM": "username"},
         ("MGATE_JWT_TOKEN_FROM", "MGATE_JWT_USERNAME"), "TOKEN_FROM=username with USERNAME=match"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_PUBLIC_KEY_FILE": keys["rs1"].pub_path, "MGATE_JWT_ALGORITHMS": "RS256,XS1"},
         ("MGATE_JWT_ALGORITHMS",), "an unknown algorithm"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_PUBLIC_KEY_FILE": keys["rs1"].pub_path, "MGATE_JWT_LEEWAY": "soon"},
         ("MGATE_JWT_LEEWAY",), "a leeway that is no duration"),
        ({"MGATE_HANDLER": "jwt", "MGATE_JWT_JWKS_URL": "ftp://x/jwks"}, ("MGATE_JWT_JWKS_URL",), "an ftp:// URL"),
        ({"MGATE_HANDLER": "log", "MGATE_JWT_PUBLIC_KEY_FILE": keys["rs1"].pub_path},
         ("MGATE_JWT_PUBLIC_KEY_FILE",), "MGATE_JWT_* without jwt in MGATE_HANDLER"),
    ]
    for env, names, what in cases:
        e = h.mgate_env(h.free_port(), broker.port, **env)
        r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
        t.check(r.returncode == 2 and any(n in r.stderr for n in names),
                f"{what}: exit 2 naming {' or '.join(names)}", f"{r.returncode} {r.stderr.strip()[-300:]}")
    e = h.mgate_env(h.free_port(), broker.port, MGATE_HANDLER="jwt")
    r = subprocess.run([h.MGATE_BIN], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
    t.eq(r.returncode, 2, "mgate itself (not --check-config) without a key source: exit 2")
    e = h.mgate_env(h.free_port(), broker.port, MGATE_HANDLER="jwt", MGATE_JWT_JWKS_URL="http://127.0.0.1:1/jwks")
    r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
    t.eq(r.returncode, 0, "a JWKS URL that is down is no configuration error (fetched lazily)")


def no_token_in_logs(t):
    leaks = []
    for g in h._gates:
        text = g.log.text()
        for s in SIGS:
            if s in text:
                leaks.append((os.path.basename(g.cwd), s[:12]))
    t.check(len(SIGS) > 50, f"{len(SIGS)} tokens were made")
    t.eq(leaks, [], "no token's signature appears in any mgate log (one at debug)")


def coap_bridge(t, tmp, broker, watcher, keys, jwks_file):
    """The CoAP bridge's token= query becomes the password.  A Uri-Query option holds at most 255
    bytes (RFC 7252), so an RS256 token does not fit there: a short EdDSA one does."""
    from test_coap import CON, POST, Raw, code
    from test_coap_bridge import CHANGED, answer_of, bridge, query
    g = bridge(tmp, broker.port, MGATE_HANDLER="jwt", MGATE_JWT_JWKS_FILE=jwks_file)
    good = tok(keys["ed1"], {"sub": "cb", "exp": now() + 300, "acl": {"pub": ["cb/%u/#"]}})
    t.check(len("token=" + good) <= 255, f"the EdDSA token fits a Uri-Query option ({len(good)} bytes)")
    c = Raw(g.coap)
    r = answer_of(c, c.request(CON, POST, "ps/cb/cb/t", b"coap-jwt", opts=query(token=good, clientid="cb-1")))
    t.check(r and r[1] == CHANGED, "CoAP POST with token=: 2.04", r)
    msgs, found = watcher.until("cb/cb/t")
    t.check(found and msgs[-1][1] == b"coap-jwt", "... and the broker got the message", msgs[-2:])
    r = answer_of(c, c.request(CON, POST, "ps/cb/other/t", b"x", opts=query(token=good, clientid="cb-1")))
    t.check(r and r[1] == code(4, 3), "a topic outside the acl claim: 4.03", r)
    bad = remember(jt.tamper(good))
    for what, q in (("a tampered token", query(token=bad, clientid="cb-2")), ("no token", query(clientid="cb-3"))):
        w = Raw(g.coap)
        r = answer_of(w, w.request(CON, POST, "ps/cb/cb/t", b"y", opts=q))
        t.check(r and r[1] == code(4, 1), f"{what}: 4.01", r)
        w.close()
    c.close()
    t.eq(g.stop(), 0, "the CoAP bridge's mgate exits 0 on SIGTERM")


def main():
    h.need_binaries()
    t = h.Checks("jwt")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)
        keys = {"rs1": jt.Key.generate(tmp, "RSA", "rs1"), "rs2": jt.Key.generate(tmp, "RSA", "rs2"),
                "weak": jt.Key.generate(tmp, "RSA", "weak", bits=1024), "oct": jt.Key.hs(os.urandom(48), "oct1"),
                "ec1": jt.Key.generate(tmp, "EC", "ec1"), "ed1": jt.Key.generate(tmp, "ED25519", "ed1"),
                "ed2": jt.Key.generate(tmp, "ED25519", "ed2")}
        t.case("the tools: tokens verified by openssl", lambda: t.eq(jt.self_test(tmp), [], "jwt_tools self test"))
        jwks_file = os.path.join(tmp, "jwks.json")
        with open(jwks_file, "w") as f:
            json.dump(jt.jwks([keys["rs1"], keys["ec1"], keys["ed1"]]), f)
        broker = h.start_mosquitto(tmp)
        watcher = Watcher(broker)
        srv = JwksServer(jt.jwks([keys["rs1"], keys["ec1"], keys["ed1"], keys["weak"], keys["oct"]]))
        ws_port, http_port = h.free_port(), h.free_port()
        g = gate(tmp, broker, MGATE_JWT_JWKS_URL=srv.url, MGATE_JWT_ISSUER=ISS, MGATE_JWT_AUDIENCE=AUD,
                 MGATE_LOG_LEVEL="debug", MGATE_JWT_JWKS_MIN_INTERVAL="60s",
                 **{WS + "HOST": h.HOST, WS + "PORT": ws_port, WS + "TARGET_HOST": h.HOST,
                    WS + "TARGET_PORT": broker.port, WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt",
                    HTTP + "HOST": h.HOST, HTTP + "PORT": http_port, HTTP + "PATH_PREFIX": "/mqtt",
                    HTTP + "TARGET_HOST": h.HOST, HTTP + "TARGET_PORT": broker.port, HTTP + "TARGET_PROTOCOL": "mqtt"})
        h.wait_port(ws_port, 5.0, g.proc)
        h.wait_port(http_port, 5.0, g.proc)
        t.case("good tokens", good_tokens, t, g, broker, watcher, keys)
        t.case("refusals by reason", refusals, t, g, broker, keys, srv)
        t.case("the acl claim", acl_claim, t, g, broker, watcher, keys)
        t.case("WebSocket listener", websocket, t, g, watcher, keys, ws_port)
        t.case("HTTP bridge", http_bridge, t, g, watcher, keys, http_port)
        stopped(t, g)
        t.case("PEM file, HS256 secret, jwt,acl", key_sources, t, tmp, broker, watcher, keys)
        t.case("USERNAME=set, CLIENT_ID_CLAIM, TOKEN_FROM=username", identities, t, tmp, broker, watcher, keys, jwks_file)
        t.case("USERNAME_CLAIM, ACL_CLAIM, REQUIRE_EXP", other_claims, t, tmp, broker, watcher, keys, jwks_file)
        t.case("SIGHUP with a new JWKS_FILE", sighup, t, tmp, broker, watcher, keys)
        t.case("sessions end when the token expires", expiry, t, tmp, broker, keys, jwks_file)
        t.case("unknown kid and rotation", unknown_kid_and_rotation, t, tmp, broker, watcher, keys)
        t.case("a flood of made-up kids", flood, t, tmp, broker, keys)
        t.case("JWKS URL down, 500, garbage, hanging, then up", url_down, t, tmp, broker, watcher, keys)
        t.case("SIGTERM while CONNECTs wait for the JWKS", shutdown_waiting, t, tmp, broker, keys)
        t.case("Cache-Control max-age", cache_control, t, tmp, broker, watcher, keys)
        t.case("revocation and a rotation with a malformed key", revocation, t, tmp, broker, watcher, keys)
        t.case("what the broker gets: the token, a username claim", what_the_broker_gets, t, tmp, broker, keys,
               jwks_file)
        t.case("the CoAP bridge's token=", coap_bridge, t, tmp, broker, watcher, keys, jwks_file)
        t.case("bad configuration", bad_config, t, tmp, broker, keys)
        t.case("no token in the logs", no_token_in_logs, t)
        code = h.finish(t)
        srv.stop()
        return code


if __name__ == "__main__":
    h.run_main(main)
