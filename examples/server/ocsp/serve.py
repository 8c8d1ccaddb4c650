#!/usr/bin/env python3
"""HTTP on loopback for the example OCSP/CRL responder (see responder.sh).

Serves the files of a directory (CRLs, CA certificates) and, for each
--ocsp PORT,INDEX,CA,SIGNER,KEY, an OCSP responder on that port that hands
every request (POST, or GET with the base64 request in the path) to
`openssl ocsp -index INDEX -CA CA -rsigner SIGNER -rkey KEY -reqin -`.
So the answers are the real `openssl ocsp` ones, but the sockets are bound to
127.0.0.1 only, many clients are served at once, and a connection that sends
nothing harms no one.  The index file is read again for every request.

Standard library only; logs one line per request on stderr.
"""
import argparse
import base64
import functools
import http.server
import subprocess
import sys
import threading
import urllib.parse

MAX_REQUEST = 64 * 1024
# OCSPResponse { responseStatus malformedRequest (1) }, RFC 6960 4.2.1.
MALFORMED = bytes.fromhex("30030a0101")
# internalError (2)
INTERNAL_ERROR = bytes.fromhex("30030a0102")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Quiet:
    """One short log line per request, tagged with the port."""

    def log_message(self, fmt, *args):
        port = self.server.server_address[1]
        sys.stderr.write("serve.py:%d: %s\n" % (port, fmt % args))
        sys.stderr.flush()


class Files(Quiet, http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".pem": "application/x-pem-file",
        ".der": "application/octet-stream",
    }


class Ocsp(Quiet, http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def __init__(self, *args, openssl_args=None, nmin=0, **kwargs):
        self.openssl_args = openssl_args
        self.nmin = nmin
        super().__init__(*args, **kwargs)

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_error(411)
            return
        if n < 0 or n > MAX_REQUEST:
            self.send_error(413)
            return
        self.answer(self.rfile.read(n))

    def do_GET(self):
        last = self.path.rsplit("/", 1)[-1]
        try:
            der = base64.b64decode(urllib.parse.unquote(last), validate=True)
        except ValueError:
            der = b""
        self.answer(der)

    def answer(self, der):
        # Same words as `openssl ocsp -port` uses, so one grep counts both.
        sys.stderr.write("ocsp: Received request, 1st line: %s\n" % self.requestline)
        sys.stderr.flush()
        cmd = ["openssl", "ocsp", *self.openssl_args, "-reqin", "-", "-respout", "-"]
        if self.nmin > 0:
            cmd += ["-nmin", str(self.nmin)]
        try:
            p = subprocess.run(cmd, input=der, capture_output=True, timeout=10)
            body = p.stdout if p.returncode == 0 and p.stdout else MALFORMED
            if p.returncode != 0:
                sys.stderr.write("serve.py: openssl ocsp: %s\n"
                                 % p.stderr.decode(errors="replace").strip())
        except (OSError, subprocess.TimeoutExpired) as e:
            sys.stderr.write("serve.py: openssl ocsp: %s\n" % e)
            body = INTERNAL_ERROR
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--www", help="directory to serve")
    ap.add_argument("--http-port", type=int)
    ap.add_argument("--ocsp", action="append", default=[],
                    metavar="PORT,INDEX,CA,SIGNER,KEY")
    ap.add_argument("--nmin", type=int, default=0,
                    help="minutes until an answer's nextUpdate (0: none)")
    a = ap.parse_args()

    servers = []
    if a.http_port:
        h = functools.partial(Files, directory=a.www)
        servers.append(Server((a.bind, a.http_port), h))
    for spec in a.ocsp:
        port, index, ca, signer, key = spec.split(",")
        args = ["-index", index, "-CA", ca, "-rsigner", signer, "-rkey", key]
        h = functools.partial(Ocsp, openssl_args=args, nmin=a.nmin)
        servers.append(Server((a.bind, int(port)), h))
    if not servers:
        ap.error("nothing to serve")
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
        sys.stderr.write("serve.py: listening on %s:%d\n" % s.server_address[:2])
    sys.stderr.flush()
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
