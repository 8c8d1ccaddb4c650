#!/usr/bin/python3
"""The `acl` handler in front of a mosquitto that lets everyone in, and the handler chain.

Password files are written by the real mosquitto_passwd (2.0.11): `-H sha512-pbkdf2` ($7$, its
default) for some users and `-H sha512` ($6$) for others. The ACL file is the scenario of the
mosquitto-on-Azure README: devices dev00001..3 publish only dt/demo/+/<own name>/# and use
cmd/demo/+/<own name>/#, mqttservice reads dt/demo/# and uses cmd/demo/#, mqttuser has #.

* CONNECT: CONNACK 4 / 0x86 for a wrong password, an unknown user, a missing password;
  5 / 0x87 for an anonymous client when MGATE_ACL_ALLOW_ANONYMOUS is off; refused clients
  never reach the broker; both hash kinds work.
* The Azure scenario with mosquitto_pub/mosquitto_sub (3.1.1 and 5.0), then raw clients for the
  exact codes: v5 PUBACK 0x87, 3.1.1 closed; SUBACK 0x80 / 0x87 per filter; a refused message
  never arrives (a marker published after it arrives first).
* Delivery: a `deny` inside a granted filter keeps those messages from the subscriber.
* Injection: usernames "+", "#", "a/b" (in the password file) and client ids "+", "a/b" do not
  widen %u / %c patterns.
* Anonymous clients with MGATE_ACL_ALLOW_ANONYMOUS=true get the lines before the first `user`.
* USE_CN_AS_USERNAME on mTLS: the certificate's CN is the user, no password needed.
* SIGHUP: new files apply to open sessions; a broken file keeps the old rules and logs the file
  and line.
* Start-up: exit 2 with the variable, file and line for bad files; acl settings without the acl
  handler; bad chains.
* The chain: log,acl logs every request and acl decides; example,acl: a handler that passes
  now (MGATE_IGNORE) or later (mgate_resume with MGATE_IGNORE) leaves the verdict to acl.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

PASSWORDS = {  # user: (password, mosquitto_passwd -H)
    "mqttuser": ("Secret1", "sha512-pbkdf2"),
    "mqttservice": ("Secret2", "sha512"),
    "dev00001": ("Secret3", "sha512-pbkdf2"),
    "dev00002": ("Secret4", "sha512"),
    "dev00003": ("Secret5", "sha512-pbkdf2"),
    "auditor": ("Secret6", "sha512-pbkdf2"),
    "+": ("plus", "sha512-pbkdf2"),
    "x#y": ("hash", "sha512"),
    "a/b": ("slash", "sha512-pbkdf2"),
    "pass-alice": ("alice-pw", "sha512-pbkdf2"),
    "latepass-bob": ("bob-pw", "sha512"),
}

ACL = """\
# anonymous clients (when MGATE_ACL_ALLOW_ANONYMOUS=true)
topic read public/#

user mqttuser
topic readwrite #

user mqttservice
topic read dt/demo/#
topic readwrite cmd/demo/#

user auditor
topic read #
topic deny dt/demo/+/dev00003/#

# devices: their own data and commands
pattern write dt/demo/+/%u/#
pattern readwrite cmd/demo/+/%u/#
pattern read clients/%c/inbox
pattern read %c/#
"""

REFUSED_IDS = []


def pw(user):
    return PASSWORDS[user][0]


def make_password_file(path, users=PASSWORDS):
    """With the real mosquitto_passwd, each user with the hash kind PASSWORDS names."""
    if os.path.exists(path):
        os.unlink(path)
    for i, (user, (password, kind)) in enumerate(users.items()):
        args = ["mosquitto_passwd", "-H", kind] + (["-c"] if i == 0 else []) + ["-b", path, user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=10)
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def connack(port, version, cid, user=None, password=None):
    c = h.RawClient(port)
    rc = c.connect(version, cid, username=user, password=password.encode() if password is not None else None)
    if rc != 0:
        c.expect_closed(3.0)
    c.close()
    return rc


def login(port, version, user, cid=None):
    return h.raw_client(port, version, cid or f"{user}-{version}-{time.monotonic_ns() % 10**6}", username=user,
                        password=pw(user).encode())


def files(t, pwfile):
    text = make_password_file(pwfile)
    kinds = dict(re.findall(r"^([^:\n]+):\$(\d)\$", text, re.M))
    t.eq(kinds.get("mqttuser"), "7", "mosquitto_passwd -H sha512-pbkdf2 wrote a $7$ line")
    t.eq(kinds.get("mqttservice"), "6", "mosquitto_passwd -H sha512 wrote a $6$ line")
    t.eq(len(kinds), len(PASSWORDS), "every user is in the password file")


def connect_codes(t, g, broker):
    mark = broker.log.mark()
    cases = [
        (4, "c-right", "mqttuser", pw("mqttuser"), 0, "3.1.1 mqttuser ($7$), right password: CONNACK 0"),
        (4, "c-svc", "mqttservice", pw("mqttservice"), 0, "3.1.1 mqttservice ($6$), right password: CONNACK 0"),
        (5, "c-right5", "dev00002", pw("dev00002"), 0, "5.0 dev00002 ($6$), right password: CONNACK 0"),
        (3, "c-right3", "dev00001", pw("dev00001"), 0, "3.1 dev00001 ($7$), right password: CONNACK 0"),
        (4, "c-wrong", "mqttuser", "secret1", 4, "3.1.1 wrong password: CONNACK 4"),
        (4, "c-wrong6", "mqttservice", "Secret1", 4, "3.1.1 wrong password for a $6$ user: CONNACK 4"),
        (5, "c-wrong5", "mqttuser", "nope", 0x86, "5.0 wrong password: CONNACK 0x86"),
        (3, "c-wrong3", "dev00001", "Secret", 4, "3.1 wrong password: CONNACK 4"),
        (4, "c-unknown", "mallory", "Secret1", 4, "3.1.1 unknown user: CONNACK 4"),
        (5, "c-unknown5", "mallory", "Secret1", 0x86, "5.0 unknown user: CONNACK 0x86"),
        (4, "c-nopw", "mqttuser", None, 4, "3.1.1 username without a password: CONNACK 4"),
        (5, "c-nopw5", "mqttuser", None, 0x86, "5.0 username without a password: CONNACK 0x86"),
        (4, "c-anon", None, None, 5, "3.1.1 anonymous, MGATE_ACL_ALLOW_ANONYMOUS off: CONNACK 5"),
        (5, "c-anon5", None, None, 0x87, "5.0 anonymous: CONNACK 0x87"),
        (3, "c-anon3", None, None, 5, "3.1 anonymous: CONNACK 5"),
    ]
    for version, cid, user, password, want, what in cases:
        t.eq(connack(g.port, version, cid, user, password), want, what)
        if want:
            REFUSED_IDS.append(cid)
    t.check(broker.wait_client("c-right3", 5.0, mark) and broker.saw_client("c-right", mark),
            "allowed clients reached the broker")
    time.sleep(0.2)  # a refused client is never dialled: nothing to wait for but a moment for a wrong one
    seen = [cid for cid in REFUSED_IDS if broker.saw_client(cid, mark)]
    t.eq(seen, [], "no refused client id ever reached the broker")
    lines = [j for j in g.json_lines() if str(j.get("msg", "")).startswith("acl: CONNECT refused")]
    whys = {j["msg"].split(": ", 2)[2] for j in lines}
    t.check({"wrong password", "unknown user", "no password"} <= whys and
            any("MGATE_ACL_ALLOW_ANONYMOUS" in w for w in whys),
            "each refusal is logged with its reason", whys)
    t.check(not any("Secret" in line for line in g.log.text().splitlines()), "no password in the log")


def mosq(port, version, user, *args, password=None):
    return ["-p", str(port), "-V", version, "-u", user, "-P", password or pw(user), *args]


def azure_tools(t, g, broker):
    """The README's own commands (through mgate on 127.0.0.1, without TLS)."""
    for version in ("311", "5"):
        sub = h.spawn(["mosquitto_sub", "-h", h.HOST, *mosq(g.port, version, "mqttservice"), "-i", f"svc-{version}",
                       "-t", "dt/demo/#", "-F", "%t %p", "-C", "2", "-W", "8"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mark = broker.log.mark()
        h.wait_until(lambda: broker.log.search(rf"Received SUBSCRIBE from svc-{version}\b", mark), 5.0)

        def pub(user, topic, msg):
            return subprocess.run(["mosquitto_pub", "-h", h.HOST, *mosq(g.port, version, user), "-i",
                                   f"pub-{user}-{version}", "-q", "1", "-t", topic, "-m", msg],
                                  capture_output=True, text=True, timeout=10)
        denied = pub("dev00001", "dt/demo/1/dev00002", "Dev 1 sending a message on Dev 2 topic does not work")
        ok1 = pub("dev00001", "dt/demo/1/dev00001/senml", '[{"bn":"dev00001_","n":"temperature","v":23.1}]')
        ok2 = pub("dev00003", "dt/demo/7/dev00003", "three")
        try:
            out, err = sub.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            h.stop(sub)
            out, err = "", "mosquitto_sub did not end"
        t.check(ok1.returncode == 0 and ok2.returncode == 0, f"v{version}: dev00001 and dev00003 publish their own data",
                ok1.stderr + ok2.stderr)
        if version == "5":
            t.check("Not authorized" in denied.stdout + denied.stderr,
                    "v5: mosquitto_pub on another device's topic is told Not authorized (PUBACK 0x87)",
                    denied.stdout + denied.stderr)
        else:
            t.check(denied.returncode != 0 or "rror" in denied.stderr,
                    "3.1.1: mosquitto_pub on another device's topic fails (the connection is closed)",
                    f"{denied.returncode} {denied.stderr}")
        t.eq(out.splitlines(), ['dt/demo/1/dev00001/senml [{"bn":"dev00001_","n":"temperature","v":23.1}]',
                                "dt/demo/7/dev00003 three"],
             f"v{version}: mqttservice (mosquitto_sub dt/demo/#) gets both, and never the refused one")


def publish_codes(t, g):
    svc = login(g.port, 5, "mqttservice", "watch-svc")
    t.eq(svc.subscribe(1, [("dt/demo/#", 1), ("cmd/demo/#", 1)]), [1, 1], "mqttservice subscribes dt/demo/# and cmd/demo/#")
    d1 = login(g.port, 5, "dev00001", "raw-dev1")
    cases = [
        ("dt/demo/1/dev00001/senml", 0, "v5 dev00001 QoS 1 on its own data topic: PUBACK 0"),
        ("dt/demo/1/dev00002/senml", 0x87, "v5 dev00001 on dev00002's data topic: PUBACK 0x87"),
        ("dt/demo/dev00001", 0x87, "v5 dev00001 on dt/demo/dev00001 (one level short): PUBACK 0x87"),
        ("cmd/demo/1/dev00001/res", 0, "v5 dev00001 on its own command topic: PUBACK 0"),
        ("cmd/demo/1/dev00002/req", 0x87, "v5 dev00001 on dev00002's command topic: PUBACK 0x87"),
        ("other/topic", 0x87, "v5 dev00001 outside any rule: PUBACK 0x87"),
    ]
    for i, (topic, want, what) in enumerate(cases):
        t.eq(d1.publish_wait(topic, f"m{i}".encode(), 1, i + 1), want, what)
    t.eq(d1.publish_wait("dt/demo/1/dev00002/x", b"q2", 2, 20), 0x87, "v5 QoS 2 on another's topic: PUBREC 0x87")
    d1.publish("dt/demo/1/dev00002/q0", b"q0")  # QoS 0: dropped without an answer
    t.eq(d1.publish_wait("dt/demo/1/dev00001/marker", b"marker", 1, 30), 0, "then a marker on its own topic: PUBACK 0")
    msgs, found = svc.collect_until(lambda m: m.payload == b"marker", 5.0)
    t.check(found, "mqttservice gets the marker")
    t.eq([m.topic for m in msgs], ["dt/demo/1/dev00001/senml", "cmd/demo/1/dev00001/res", "dt/demo/1/dev00001/marker"],
         "mqttservice got exactly the allowed messages, in order: no refused one (QoS 0, 1 or 2)")
    d1.close()
    # 3.1.1 cannot refuse a PUBLISH but by closing
    d2 = login(g.port, 4, "dev00002", "raw-dev2-311")
    d2.publish("dt/demo/1/dev00001/forged", b"forged", 1, 1)
    t.check(d2.expect_closed(3.0), "3.1.1 dev00002 publishing on dev00001's topic: the connection is closed")
    d2.close()
    d3 = login(g.port, 4, "dev00003", "raw-dev3-311")
    t.eq(d3.publish_wait("dt/demo/9/dev00003", b"after-forged", 1, 1), 0, "3.1.1 dev00003 on its own topic: PUBACK")
    msgs, found = svc.collect_until(lambda m: m.payload == b"after-forged", 5.0)
    t.eq([m.payload for m in msgs], [b"after-forged"], "the forged message never arrived")
    d3.close()
    svc.close()


def subscribe_codes(t, g):
    for version, no in ((4, 0x80), (5, 0x87)):
        d1 = login(g.port, version, "dev00001", f"sub-dev1-{version}")
        codes = d1.subscribe(1, [("cmd/demo/+/dev00001/#", 1), ("cmd/demo/#", 1), ("dt/demo/1/dev00001/x", 0),
                                 ("cmd/demo/5/dev00001/req", 2), ("#", 0), ("cmd/demo/+/+/#", 1)])
        t.eq(codes, [1, no, no, 2, no, no], f"v{version} dev00001 SUBSCRIBE: own commands granted, cmd/demo/#, "
                                            f"write-only data, #, cmd/demo/+/+/# refused ({no:#x}), in order")
        t.eq(d1.subscribe(2, [("cmd/demo/#", 1)]), [no], f"v{version} a SUBSCRIBE of refused filters only: SUBACK {no:#x}")
        svc = login(g.port, version, "mqttservice", f"sub-svc-{version}")
        t.eq(svc.subscribe(1, [("$SYS/#", 0)]), [no], f"v{version} mqttservice $SYS/#: refused (no rule for it)")
        t.eq(svc.publish_wait("cmd/demo/5/dev00001/req", b"for-dev1", 1, 1) if version == 5 else
             (svc.publish("cmd/demo/5/dev00001/req", b"for-dev1", 1, 1), h.ack_reason(4, svc.expect(h.PUBACK)))[1],
             0, f"v{version} mqttservice sends dev00001 a command")
        m = d1.recv_publish(3.0)
        t.eq((m.topic, m.payload), ("cmd/demo/5/dev00001/req", b"for-dev1"), f"v{version} dev00001 receives it")
        mu = login(g.port, version, "mqttuser", f"sub-user-{version}")
        t.eq(mu.subscribe(1, [("#", 0), ("$SYS/broker/uptime", 0)]), [0, no],
             f"v{version} mqttuser: # granted, $SYS refused (a leading # does not cover $-topics)")
        for c in (d1, svc, mu):
            c.close()


def delivery(t, g):
    """auditor reads # except dev00003's data: the SUBSCRIBE is granted, those deliveries are not made."""
    a = login(g.port, 5, "auditor", "auditor")
    t.eq(a.subscribe(1, [("dt/demo/#", 1)]), [1], "auditor subscribes dt/demo/# (granted by read #)")
    t.eq(a.subscribe(2, [("dt/demo/+/dev00003/#", 1)]), [0x87], "auditor's SUBSCRIBE wholly inside its deny: refused")
    for user, topic in (("dev00003", "dt/demo/1/dev00003/t"), ("dev00002", "dt/demo/1/dev00002/t"),
                        ("dev00003", "dt/demo/2/dev00003"), ("dev00001", "dt/demo/1/dev00001/end")):
        c = login(g.port, 5, user, f"deliv-{user}-{topic.count('/')}-{topic[-1]}")
        t.eq(c.publish_wait(topic, topic.encode(), 1, 1), 0, f"{user} publishes {topic}")
        c.close()
    msgs, found = a.collect_until(lambda m: m.topic == "dt/demo/1/dev00001/end", 5.0)
    t.check(found, "auditor gets the last message")
    t.eq([m.topic for m in msgs], ["dt/demo/1/dev00002/t", "dt/demo/1/dev00001/end"],
         "auditor never gets dev00003's data (deny at delivery), the rest arrives")
    a.close()


def injection(t, g):
    # users of the password file ("#..." would be a comment line there, as in mosquitto)
    for i, user in enumerate(("+", "x#y", "a/b")):
        c = login(g.port, 5, user, f"inj-user-{i}")
        codes = c.subscribe(1, [("cmd/demo/+/+/#", 0), ("cmd/demo/1/+/#", 0), ("cmd/demo/+/#", 0), ("cmd/demo/1/a/b", 0),
                                ("cmd/demo/#", 0)])
        t.eq(codes, [0x87] * 5, f"username {user!r}: the %u pattern grants nothing wider (or deeper)")
        t.eq(c.publish_wait("dt/demo/1/dev00001/x", b"x", 1, 1), 0x87,
             f"username {user!r}: cannot publish on dev00001's data topic")
        t.eq(c.publish_wait("dt/demo/1/a/b/x", b"x", 1, 2), 0x87, f"username {user!r}: nor on dt/demo/1/a/b/x")
        c.close()
    for cid, filt in (("+", "clients/+/inbox"), ("#", "clients/#"), ("a/b", "clients/a/b/inbox"), ("x", "clients/+/inbox")):
        c = h.raw_client(g.port, 5, cid, username="dev00002", password=pw("dev00002").encode())
        t.eq(c.subscribe(1, [(filt, 0)]), [0x87], f"client id {cid!r}: %c does not grant {filt}")
        c.close()
    c = h.raw_client(g.port, 5, "me", username="dev00002", password=pw("dev00002").encode())
    t.eq(c.subscribe(1, [("clients/me/inbox", 0), ("me/#", 0)]), [0, 0],
         "client id 'me' may read clients/me/inbox and me/# (the checks can pass)")
    c.close()
    c = h.raw_client(g.port, 5, "$SYS", username="dev00002", password=pw("dev00002").encode())
    t.eq(c.subscribe(1, [("$SYS/#", 0), ("$SYS/broker/uptime", 0)]), [0x87, 0x87],
         "client id '$SYS': 'pattern read %c/#' does not reach the broker's $SYS topics")
    c.close()


def injection_unverified(t, tmp, broker, aclfile):
    """Without a password file any username is believed: the one place a client picks its own."""
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_FILE=aclfile)
    t.check(g.log.search(r"MGATE_ACL_PASSWORD_FILE is not set"), "without a password file mgate warns at start")
    for i, user in enumerate(("+", "#", "a/b", "dev00001/+", "$SYS")):
        c = h.raw_client(g.port, 5, f"unverified-{i}", username=user)
        codes = c.subscribe(1, [("cmd/demo/+/+/#", 0), ("cmd/demo/1/#", 0), ("cmd/demo/1/+", 0), ("cmd/demo/#", 0),
                                ("cmd/demo/1/dev00001/#", 0)])
        t.eq(codes, [0x87] * 5, f"claimed username {user!r}: the %u pattern grants nothing")
        t.eq(c.publish_wait("dt/demo/1/dev00001/x", b"x", 1, 1), 0x87, f"claimed username {user!r}: no publishing as dev00001")
        c.close()
    c = h.raw_client(g.port, 5, "unverified-ok", username="dev00001")
    t.eq(c.subscribe(1, [("cmd/demo/1/dev00001/#", 0)]), [0], "claimed username dev00001 gets dev00001's pattern rights")
    c.close()
    t.eq(connack(g.port, 5, "unverified-anon"), 0x87, "anonymous is still refused")
    g.stop()


def anonymous(t, tmp, broker, pwfile, aclfile):
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile,
                MGATE_ACL_ALLOW_ANONYMOUS="true")
    for version in (4, 5):
        c = h.raw_client(g.port, version, f"anon-{version}")
        t.eq(c.subscribe(1, [("public/#", 0), ("dt/demo/#", 0)]), [0, 0x80 if version == 4 else 0x87],
             f"v{version} anonymous, MGATE_ACL_ALLOW_ANONYMOUS=true: CONNACK 0, reads public/#, not dt/demo/#")
        if version == 5:
            t.eq(c.publish_wait("public/x", b"x", 1, 1), 0x87, "v5 anonymous cannot publish (read-only rule)")
        c.close()
    t.eq(connack(g.port, 4, "anon-wrong", "mqttuser", "bad"), 4, "a wrong password is still refused")
    t.eq(connack(g.port, 4, "anon-right", "mqttuser", pw("mqttuser")), 0, "a right one still works")
    g.stop()


def cn_as_username(t, tmp, broker, aclfile, pwfile):
    pki = h.Pki(tmp)
    t.eq(pki.cn("client.crt"), "dev00001", "client.crt's CN is dev00001")
    g = h.TlsGate(tmp, broker.port, pki, USE_CN_AS_USERNAME="true",
                  glob={"MGATE_HANDLER": "acl", "MGATE_ACL_PASSWORD_FILE": pwfile, "MGATE_ACL_FILE": aclfile})
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("client"), "cn-dev", version=5)
    t.check(code == 0, "mTLS + USE_CN_AS_USERNAME: client.crt connects without a password", f"{code} {err}")
    if c:
        rc = c.publish_wait("dt/demo/1/dev00001/tls", b"x", 1, 1)
        t.check(rc < 0x80, "... and publishes as dev00001 (own topic: PUBACK 0 or 0x10)", rc)
        t.eq(c.publish_wait("dt/demo/1/dev00002/tls", b"x", 1, 2), 0x87, "... not on dev00002's topic")
        c.close()
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("client"), "cn-liar", version=5, username="mqttuser",
                              password=b"wrong")
    t.check(code == 0, "a username the client sends is replaced by the CN (its password is not checked)", f"{code} {err}")
    if c:
        t.eq(c.publish_wait("anything/else", b"x", 1, 1), 0x87, "... and it has dev00001's rights, not mqttuser's")
        c.close()
    t.eq(connack(g.port, 5, "plain-anon"), 0x87, "the plain listener of the same mgate still refuses anonymous clients")
    g.stop()


def reload(t, tmp, broker, pwfile, aclfile):
    live_pw, live_acl = os.path.join(tmp, "live.pw"), os.path.join(tmp, "live.acl")
    write(live_pw, open(pwfile).read())
    write(live_acl, ACL)
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=live_pw, MGATE_ACL_FILE=live_acl)
    d1 = login(g.port, 5, "dev00001", "reload-dev1")
    t.eq(d1.publish_wait("extra/dev00001", b"x", 1, 1), 0x87, "before SIGHUP: dev00001 may not publish extra/dev00001")
    t.eq(connack(g.port, 4, "reload-new", "newuser", "newpw"), 4, "before SIGHUP: newuser is unknown")

    make_password_file(live_pw + ".tmp", {**PASSWORDS, "newuser": ("newpw", "sha512-pbkdf2")})
    os.replace(live_pw + ".tmp", live_pw)
    write(live_acl, ACL + "pattern write extra/%u\n")
    mark = g.log.mark()
    g.proc.send_signal(signal.SIGHUP)
    t.check(g.log.wait(r"SIGHUP: acl reloaded", 5.0, mark), "SIGHUP: mgate logs that acl reloaded")
    rc = d1.publish_wait("extra/dev00001", b"x", 1, 2)
    t.check(rc < 0x80, "after SIGHUP: the open session of dev00001 gets the new rule (PUBACK 0 or 0x10)", rc)
    t.eq(connack(g.port, 4, "reload-new2", "newuser", "newpw"), 0, "after SIGHUP: newuser connects")

    for path, text, name in ((live_acl, ACL + "topik read x\n", "MGATE_ACL_FILE"),
                             (live_pw, open(live_pw).read() + "broken line\n", "MGATE_ACL_PASSWORD_FILE")):
        good = open(path).read() if path == live_pw else ACL + "pattern write extra/%u\n"
        write(path, text)
        mark = g.log.mark()
        g.proc.send_signal(signal.SIGHUP)
        line = g.log.wait(r"SIGHUP: .*keeping the previous rules", 5.0, mark)
        nlines = text.count("\n")
        want = f"{name}: {path}:{nlines}:"
        t.check(line and want in line.group(0), f"broken {name} + SIGHUP: an error naming {want}",
                g.log.text(mark)[-300:])
        t.check(g.alive(), f"broken {name} + SIGHUP: mgate keeps running")
        rc = d1.publish_wait("extra/dev00001", b"y", 1, 3)
        t.check(rc < 0x80, f"broken {name}: the rules from before are kept", rc)
        t.eq(connack(g.port, 4, "reload-new3", "newuser", "newpw"), 0, f"broken {name}: so are the passwords")
        t.eq(connack(g.port, 4, "reload-bad", "newuser", "newpw2"), 4, f"broken {name}: and still checked")
        write(path, good if path == live_acl else good.replace("broken line\n", ""))
    d1.close()
    g.stop()


def startup_errors(t, tmp, broker, pwfile, aclfile):
    bad_acl = os.path.join(tmp, "bad.acl")
    write(bad_acl, "user x\ntopic read a\npattern write dt/dev-%u/#\n")
    bad_pw = os.path.join(tmp, "bad.pw")
    write(bad_pw, open(pwfile).read() + "plain:text\n")
    npw = open(bad_pw).read().count("\n")
    cases = [
        ({"MGATE_HANDLER": "acl", "MGATE_ACL_FILE": bad_acl}, f"MGATE_ACL_FILE: {bad_acl}:3: ", "whole topic level"),
        ({"MGATE_HANDLER": "acl", "MGATE_ACL_PASSWORD_FILE": bad_pw}, f"MGATE_ACL_PASSWORD_FILE: {bad_pw}:{npw}: ",
         "plain-text"),
        ({"MGATE_HANDLER": "acl", "MGATE_ACL_FILE": "/nonexistent.acl"}, "MGATE_ACL_FILE: /nonexistent.acl: cannot open",
         "No such file"),
        ({"MGATE_HANDLER": "acl"}, "MGATE_HANDLER: \"acl\" needs", "MGATE_ACL_PASSWORD_FILE"),
        ({"MGATE_HANDLER": "log", "MGATE_ACL_FILE": aclfile}, "MGATE_ACL_FILE is set, but MGATE_HANDLER", "does not name acl"),
        ({"MGATE_HANDLER": "log,nope"}, "MGATE_HANDLER: unknown handler \"nope\"", "acl"),
        ({"MGATE_HANDLER": "acl,log,acl", "MGATE_ACL_FILE": aclfile}, "MGATE_HANDLER: \"acl\" is named twice", ""),
        ({"MGATE_HANDLER": "acl,,log"}, "MGATE_HANDLER", "handler list"),
    ]
    for env, want1, want2 in cases:
        e = h.mgate_env(h.free_port(), broker.port, **env)
        r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
        what = ", ".join(f"{k}={v}" for k, v in env.items())
        t.check(r.returncode == 2 and want1 in r.stderr and want2 in r.stderr and r.stderr.count("\n") == 1,
                f"{what}: exit 2, one line naming {want1.strip()}", f"{r.returncode} {r.stderr.strip()}")
    e = h.mgate_env(h.free_port(), broker.port, MGATE_HANDLER="log,acl", MGATE_ACL_FILE=aclfile, MGATE_ACL_PASSWORD_FILE=pwfile)
    r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
    t.check(r.returncode == 0 and "handler log,acl" in r.stdout, "--check-config with good files: OK",
            f"{r.returncode} {r.stdout} {r.stderr}")


def chain(t, tmp, broker, pwfile, aclfile):
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="log,acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    mark = g.log.mark()
    t.eq(connack(g.port, 4, "chain-bad", "mqttuser", "bad"), 4, "log,acl: a wrong password is refused by acl")
    c = login(g.port, 5, "dev00001", "chain-ok")
    t.eq(c.publish_wait("dt/demo/1/dev00002/x", b"x", 1, 1), 0x87, "log,acl: acl refuses a PUBLISH that log passed on")
    c.close()
    lines = g.json_since(mark)
    auth = [j.get("client_id") for j in lines if j.get("msg") == "auth_connect"]
    t.eq(auth, ["chain-bad", "chain-ok"], "log,acl: log logged every CONNECT, the refused one too")
    t.check(any(j.get("msg") == "connect" and j.get("client_id") == "chain-ok" for j in lines),
            "log,acl: log's connect hook ran for the allowed client")
    g.stop()

    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl,log", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    c = login(g.port, 4, "dev00002", "chain-acl-first")
    c.close()
    t.check(g.log.wait(r'"msg":"disconnect".*chain-acl-first', 5.0),
            "acl,log: acl decides, and log's connect/disconnect hooks still run", g.log.text()[-300:])
    t.check(not g.log.search(r'"msg":"auth_connect"'), "acl,log: log's auth_connect is not asked (acl decided first)")
    g.stop()

    # example,acl: the example handler passes now ("pass-*") or 150 ms later ("latepass-*")
    g = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_HANDLER="example,acl", MGATE_ACL_PASSWORD_FILE=pwfile,
                MGATE_ACL_FILE=aclfile)
    for version in (4, 5):
        bad = 4 if version == 4 else 0x86
        t.eq(connack(g.port, version, f"ex-pass-{version}", "pass-alice", "alice-pw"), 0,
             f"v{version} example passes now (MGATE_IGNORE), acl checks the password: CONNACK 0")
        t.eq(connack(g.port, version, f"ex-pass-bad-{version}", "pass-alice", "x"), bad,
             f"v{version} ... and a wrong one: CONNACK {bad:#x}")
        t0 = time.monotonic()
        rc = connack(g.port, version, f"ex-late-{version}", "latepass-bob", "bob-pw")
        took = time.monotonic() - t0
        t.eq(rc, 0, f"v{version} example passes 150 ms later (mgate_resume MGATE_IGNORE), then acl allows: CONNACK 0")
        t.check(took >= 0.14, f"v{version} ... after the late pass ({took * 1000:.0f} ms)")
        t.eq(connack(g.port, version, f"ex-late-bad-{version}", "latepass-bob", "x"), bad,
             f"v{version} late pass, wrong password: acl refuses ({bad:#x})")
        t.eq(connack(g.port, version, "deny-first", "pass-alice", "alice-pw"), 5 if version == 4 else 0x87,
             f"v{version} the example denies first (client id deny*): acl is not asked")
    # packets pipelined behind a CONNECT whose first handler passes late keep their order
    c = h.RawClient(g.port)
    c.version = 4
    c.send(h.connect_packet(4, "late-pipe", username="latepass-bob", password=b"bob-pw")
           + h.subscribe_packet(4, 1, [("cmd/demo/1/latepass-bob/#", 1), ("cmd/demo/#", 1)])
           + h.publish_packet(4, "cmd/demo/1/latepass-bob/x", b"own", 1, 2))
    p = c.read_packet(3.0)
    t.check(p.type == h.CONNACK and p.body[1] == 0, "pipelined behind a late pass: CONNACK 0 first", p)
    t.eq(list(c.expect(h.SUBACK, 3.0).body[2:]), [1, 0x80], "then the SUBACK, acl's verdict per filter")
    m = c.recv_publish(3.0)
    t.eq((m.topic, m.payload), ("cmd/demo/1/latepass-bob/x", b"own"), "and the client gets its own command")
    c.close()
    g.stop()


def pbkdf2_line(user, password, iterations):
    """A $7$ line with a chosen iteration count, written here with hashlib (mosquitto_passwd 2.0.11
    always writes 101): PBKDF2-HMAC-SHA512, 12 bytes of salt, 64 bytes of hash, standard base64."""
    import base64
    import hashlib
    salt = os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}\n"


def costly_hashes(t, tmp, broker, pwfile, aclfile):
    """$7$ entries with 50000 iterations (~20 ms each) are checked off the loop: while 30 such CONNECTs
    are being checked, a connected client's PINGREQ is answered at once. The 30 are 30 users, so
    none is answered from the cache of successful checks."""
    n = 30
    slow_pw = os.path.join(tmp, "slow.pw")
    write(slow_pw, open(pwfile).read() + pbkdf2_line("slowhash", "slow-pw", 50000)
          + "".join(pbkdf2_line(f"slowhash{i}", "slow-pw", 50000) for i in range(n)))
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=slow_pw, MGATE_ACL_FILE=aclfile,
                MGATE_WORKERS="1")
    t.eq(connack(g.port, 4, "slow-ok", "slowhash", "slow-pw"), 0, "50000 iterations, right password: CONNACK 0")
    t.eq(connack(g.port, 5, "slow-bad", "slowhash", "slow-pwx"), 0x86, "50000 iterations, wrong password: CONNACK 0x86")
    t0 = time.monotonic()
    t.eq(connack(g.port, 4, "slow-one", "slowhash0", "slow-pw"), 0, "(one check, timed)")
    one = time.monotonic() - t0
    watcher = login(g.port, 4, "dev00001", "slow-watch")
    ping = {}

    def ping_meanwhile():
        time.sleep(0.02)  # let mgate read the CONNECTs before the ping
        p0 = time.monotonic()
        ping["ok"] = watcher.ping(5.0)
        ping["s"] = time.monotonic() - p0
    codes, total = h.connect_burst(g.port, 4, [(f"slow-{i}", f"slowhash{i}", b"slow-pw") for i in range(n)],
                                   between=ping_meanwhile)
    pong, ping = ping["ok"], ping["s"]
    t.eq(codes, [0] * n, f"{n} costly CONNECTs at once: all CONNACK 0 ({total * 1000:.0f} ms, one alone {one * 1000:.0f} ms)")
    t.check(total > n * one / 8, f"(they were checked: {total * 1000:.0f} ms for {n}, not answered from the cache)")
    t.check(pong and ping < max(0.1, total / 4),
            f"meanwhile a PINGREQ on the same worker is answered in {ping * 1000:.0f} ms (the loop is not blocked)",
            f"ping {ping * 1000:.0f} ms, checks {total * 1000:.0f} ms")
    watcher.close()
    g.stop()


def timed_connack(port, cid, user, password):
    t0 = time.monotonic()
    rc = connack(port, 5, cid, user, password)
    return rc, time.monotonic() - t0


def check_cache(t, tmp, broker, aclfile):
    """A username and password that passed a costly check are let in again without one (the cache
    of successful checks); a wrong password is never answered from it; SIGHUP empties it."""
    cache_pw = os.path.join(tmp, "cache.pw")
    write(cache_pw, pbkdf2_line("cached", "cache-pw", 50000) + pbkdf2_line("other", "other-pw", 50000))
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=cache_pw, MGATE_ACL_FILE=aclfile)
    rc, one = timed_connack(g.port, "cache-1", "cached", "cache-pw")
    t.eq(rc, 0, f"first CONNECT: checked ({one * 1000:.1f} ms)")
    again = [timed_connack(g.port, f"cache-r{i}", "cached", "cache-pw") for i in range(10)]
    worst = max(s for _, s in again)
    t.check(all(rc == 0 for rc, _ in again) and worst < one / 4, f"10 reconnects: CONNACK 0 from the cache, "
            f"the slowest in {worst * 1000:.1f} ms (a check takes {one * 1000:.1f} ms)", str(again))
    rc, wrong = timed_connack(g.port, "cache-w", "cached", "cache-pwx")
    t.check(rc == 0x86 and wrong > one / 2, f"a wrong password for a cached user: 0x86 after a full check "
            f"({wrong * 1000:.1f} ms)", f"{rc:#x}, {wrong * 1000:.1f} ms")
    rc, other = timed_connack(g.port, "cache-o", "other", "cache-pw")
    t.check(rc == 0x86 and other > one / 2, f"another user with the cached password: 0x86 after a full check "
            f"({other * 1000:.1f} ms)", f"{rc:#x}, {other * 1000:.1f} ms")
    mark = g.log.mark()
    g.proc.send_signal(signal.SIGHUP)
    t.check(g.log.wait(r"SIGHUP: acl reloaded", 5.0, mark), "SIGHUP: reloaded")
    rc, after = timed_connack(g.port, "cache-h", "cached", "cache-pw")
    t.check(rc == 0 and after > one / 2, f"after SIGHUP the same login is checked again ({after * 1000:.1f} ms)",
            f"{rc}, {after * 1000:.1f} ms")
    g.stop()


def main():
    h.need_binaries()
    t = h.Checks("acl")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        pwfile, aclfile = os.path.join(tmp, "passwd"), os.path.join(tmp, "acl")
        write(aclfile, ACL)
        t.case("password file from mosquitto_passwd", files, t, pwfile)
        g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
        t.case("CONNECT", connect_codes, t, g, broker)
        t.case("Azure scenario with mosquitto_pub/sub", azure_tools, t, g, broker)
        t.case("PUBLISH refusals", publish_codes, t, g)
        t.case("SUBSCRIBE refusals", subscribe_codes, t, g)
        t.case("delivery", delivery, t, g)
        t.case("injection", injection, t, g)
        t.case("injection without a password file", injection_unverified, t, tmp, broker, aclfile)
        t.case("anonymous", anonymous, t, tmp, broker, pwfile, aclfile)
        t.case("SIGHUP", reload, t, tmp, broker, pwfile, aclfile)
        t.case("start-up errors", startup_errors, t, tmp, broker, pwfile, aclfile)
        t.case("chain", chain, t, tmp, broker, pwfile, aclfile)
        t.case("costly hashes off the loop", costly_hashes, t, tmp, broker, pwfile, aclfile)
        t.case("the cache of successful checks", check_cache, t, tmp, broker, aclfile)
        t.case("USE_CN_AS_USERNAME", cn_as_username, t, tmp, broker, aclfile, pwfile)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
