"""JSON Web Tokens and keys for tests and the bench, with the standard library and the openssl CLI.

    key = Key.generate(tmpdir, "RSA", kid="rs1")       # "RSA", "EC" (P-256), "ED25519", or Key.secret(...)
    tok = key.token({"sub": "alice", "exp": int(time.time()) + 60})
    key.verify(tok)                                      # True: checked by openssl, not by this module
    doc = jwks([key, other])                             # {"keys": [...]} with each public JWK

Tokens are compact JWS (RFC 7515): base64url without padding of the header, the payload and the
signature. RS256 is PKCS#1 v1.5 with SHA-256 (`openssl dgst -sha256 -sign`); ES256 is the raw
r||s (64 bytes) RFC 7518 3.4 wants, converted from the DER openssl writes; EdDSA is Ed25519
(`openssl pkeyutl -sign -rawin`); HS256 is hmac/hashlib. JWK parameters (n, e, x, y) come from the
public key's DER (SubjectPublicKeyInfo) as openssl writes it. Nothing here talks to a network.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile

ALG_OF = {"RSA": "RS256", "EC": "ES256", "ED25519": "EdDSA", "HS": "HS256"}


def b64url(data):
    """base64url without padding (str in, str out also accepted)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    if isinstance(s, bytes):
        s = s.decode()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def _openssl(*args, input=None):
    r = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def _der_len(buf, off):
    """(length, offset of the content) of a DER length at buf[off]."""
    n = buf[off]
    if n < 0x80:
        return n, off + 1
    k = n & 0x7F
    return int.from_bytes(buf[off + 1:off + 1 + k], "big"), off + 1 + k


def ecdsa_der_to_raw(der, size=32):
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r||s, each size bytes, big-endian."""
    if der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    _, off = _der_len(der, 1)
    out = b""
    for _ in range(2):
        if der[off] != 0x02:
            raise ValueError("not a DER INTEGER")
        n, off = _der_len(der, off + 1)
        v = der[off:off + n].lstrip(b"\x00")
        off += n
        if len(v) > size:
            raise ValueError("integer too long")
        out += v.rjust(size, b"\x00")
    return out


def ecdsa_raw_to_der(raw):
    """r||s -> the DER openssl verifies."""
    half = len(raw) // 2
    parts = b""
    for v in (raw[:half], raw[half:]):
        v = v.lstrip(b"\x00") or b"\x00"
        if v[0] & 0x80:
            v = b"\x00" + v
        parts += b"\x02" + bytes([len(v)]) + v
    return b"\x30" + bytes([len(parts)]) + parts


def make_token(header, claims, sign):
    """header and claims: dicts (or bytes, used as they are); sign(signing_input) -> signature bytes
    (None: an empty signature part)."""
    h = header if isinstance(header, bytes) else _json(header)
    p = claims if isinstance(claims, bytes) else _json(claims)
    signing_input = (b64url(h) + "." + b64url(p)).encode()
    sig = sign(signing_input) if sign else b""
    return signing_input.decode() + "." + b64url(sig)


def hs256(secret, data):
    return hmac.new(secret, data, hashlib.sha256).digest()


def signature_part(token):
    """The third part of a compact token (what must never be logged)."""
    return token.rsplit(".", 1)[-1]


def parts(token):
    """(header dict, claims dict, signature bytes) of a token, without verifying anything."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


class Key:
    """One key: kind "RSA", "EC" (P-256), "ED25519" (private key in a PEM file, public in .pub.pem)
    or "HS" (a secret, bytes). kid None: tokens carry no kid, the JWK has none."""

    def __init__(self, kind, kid=None, path=None, secret=None):
        self.kind, self.kid, self.path, self.secret = kind, kid, path, secret
        self.alg = ALG_OF[kind]
        self.pub_path = path[:-4] + ".pub.pem" if path else None

    @classmethod
    def generate(cls, directory, kind, kid=None, bits=2048):
        fd, path = tempfile.mkstemp(prefix=f"jwt-{kind.lower()}-", suffix=".pem", dir=directory)
        os.close(fd)
        if kind == "RSA":
            _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", path)
        elif kind == "EC":
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
        elif kind == "ED25519":
            _openssl("genpkey", "-algorithm", "ED25519", "-out", path)
        else:
            raise ValueError(kind)
        k = cls(kind, kid, path)
        _openssl("pkey", "-in", path, "-pubout", "-out", k.pub_path)
        return k

    @classmethod
    def hs(cls, secret, kid=None):
        return cls("HS", kid, secret=secret)

    def public_pem(self):
        with open(self.pub_path, "rb") as f:
            return f.read()

    def public_der(self):
        return _openssl("pkey", "-pubin", "-in", self.pub_path, "-outform", "DER")

    def jwk(self, **extra):
        """The public JWK (RFC 7517/7518/8037): kty, kid (when set), use sig, alg, and n/e or crv/x/y."""
        if self.kind == "RSA":
            out = _openssl("rsa", "-pubin", "-in", self.pub_path, "-noout", "-modulus").decode()
            n = bytes.fromhex(out.strip().split("=", 1)[1])
            text = _openssl("pkey", "-pubin", "-in", self.pub_path, "-noout", "-text").decode()
            e = int(text.split("Exponent:", 1)[1].split()[0])
            d = {"kty": "RSA", "n": b64url(n), "e": b64url(e.to_bytes((e.bit_length() + 7) // 8, "big"))}
        elif self.kind == "EC":
            der = self.public_der()
            point = der[-65:]  # the BIT STRING's content: 04 || x || y
            if point[0] != 4 or len(der) != 91:
                raise ValueError("unexpected P-256 public key DER")
            d = {"kty": "EC", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:])}
        elif self.kind == "ED25519":
            der = self.public_der()
            if len(der) != 44:
                raise ValueError("unexpected Ed25519 public key DER")
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64url(der[-32:])}
        else:
            d = {"kty": "oct", "k": b64url(self.secret)}
        if self.kid is not None:
            d["kid"] = self.kid
        d["use"] = "sig"
        d["alg"] = self.alg
        d.update(extra)
        return d

    def sign(self, data):
        """The JWS signature of data (bytes) with this key."""
        if self.kind == "HS":
            return hs256(self.secret, data)
        if self.kind == "ED25519":
            with tempfile.NamedTemporaryFile() as f:
                f.write(data)
                f.flush()
                return _openssl("pkeyutl", "-sign", "-rawin", "-inkey", self.path, "-in", f.name)
        sig = _openssl("dgst", "-sha256", "-sign", self.path, input=data)
        return ecdsa_der_to_raw(sig) if self.kind == "EC" else sig

    def token(self, claims, header=None, kid=True, alg=None):
        """A signed token. header: more header fields (or replacements); kid=False leaves this key's
        kid out, a str puts that kid in; alg: the header's alg (default this key's)."""
        hdr = {"alg": alg or self.alg, "typ": "JWT"}
        if kid is True and self.kid is not None:
            hdr["kid"] = self.kid
        elif isinstance(kid, str):
            hdr["kid"] = kid
        hdr.update(header or {})
        return make_token(hdr, claims, self.sign)

    def verify(self, token):
        """True when openssl (not this module) accepts the token's signature with the public key."""
        h, p, s = token.split(".")
        data = (h + "." + p).encode()
        sig = b64url_decode(s)
        if self.kind == "HS":
            return hmac.compare_digest(hs256(self.secret, data), sig)
        with tempfile.TemporaryDirectory() as d:
            dp, sp = os.path.join(d, "data"), os.path.join(d, "sig")
            with open(dp, "wb") as f:
                f.write(data)
            with open(sp, "wb") as f:
                f.write(ecdsa_raw_to_der(sig) if self.kind == "EC" else sig)
            if self.kind == "ED25519":
                args = ["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", self.pub_path, "-sigfile", sp, "-in", dp]
            else:
                args = ["dgst", "-sha256", "-verify", self.pub_path, "-signature", sp, dp]
            r = subprocess.run(["openssl", *args], capture_output=True, timeout=20)
            return r.returncode == 0 and b"Verif" in r.stdout + r.stderr and b"Failure" not in r.stdout


def jwks(keys, **extra):
    """A JWKS document (dict) holding each key's public JWK."""
    return {"keys": [k.jwk(**extra) for k in keys]}


def tamper(token):
    """The token with one bit of its signature flipped (still valid base64url)."""
    h, p, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    sig[len(sig) // 2] ^= 0x01
    return f"{h}.{p}.{b64url(bytes(sig))}"


def self_test(directory):
    """Every algorithm's tokens verify with openssl; a tampered one does not; the JWKs are well
    formed. Returns a list of problems (empty when all is well)."""
    problems = []
    for kind in ("RSA", "EC", "ED25519"):
        k = Key.generate(directory, kind, kid=f"t-{kind}")
        tok = k.token({"sub": "x"})
        if not k.verify(tok):
            problems.append(f"{kind}: openssl does not verify a token made here")
        if k.verify(tamper(tok)):
            problems.append(f"{kind}: openssl verifies a tampered token")
        j = k.jwk()
        if kind == "EC" and (len(b64url_decode(j["x"])) != 32 or len(parts(tok)[2]) != 64):
            problems.append("EC: x or the signature has the wrong size")
        if kind == "RSA" and (len(b64url_decode(j["n"])) != 256 or j["e"] != "AQAB"):
            problems.append(f"RSA: n or e wrong ({j['e']})")
    hk = Key.hs(b"k" * 32)
    tok = hk.token({"sub": "x"})
    if not hk.verify(tok) or hk.verify(tamper(tok)):
        problems.append("HS256 round trip")
    return problems


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        found = self_test(d)
        print("\n".join(found) or "jwt_tools: self test ok")
        raise SystemExit(1 if found else 0)
