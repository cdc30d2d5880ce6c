"""Registry fixtures for the integration suite.

Everything listens on 127.0.0.1 only, keeps its files in the caller's temp
directory and is stopped by PID.  Pieces:

  Registry      Debian's docker-registry (distribution 2.8) on a free port:
                plain HTTP, HTTPS (make_tls), Basic auth (htpasswd_file) or
                token auth (TokenServer); access log parsed by requests().
  TokenServer   a small Docker token service (http.server): issues RS256
                JWTs signed with the openssl CLI and carrying the signing
                certificate in "x5c", which docker-registry checks against its
                rootcertbundle.  This is the real challenge/token flow, not a
                stand-in proxy.
  FaultProxy    an HTTP proxy in front of a registry that injects faults:
                N times 500, 429 with Retry-After, a blob cut mid-stream, a
                corrupted byte, a canned response (e.g. a schema 1 manifest),
                a redirect of blobs to another server; records every request.
  BlobStore     a plain HTTP server of blobs by digest, as a redirect target.
  images        umoci + skopeo helpers that build OCI layouts with several
                layers and push them (gzip, zstd, Docker schema 2, and a
                multi-platform index).

Tools: docker-registry, umoci, skopeo, openssl; htpasswd (apache2-utils) only
if python's crypt cannot make bcrypt hashes.  require_tools() skips the
test with the missing tool's name.
"""

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------- helpers

def require_tools(*tools):
    """pytest.skip naming the first missing tool."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError):
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port}")


def run(cmd, **kw):
    """subprocess.run that raises with the command's output on failure."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                           f"{r.stdout}\n{r.stderr}")
    return r


def stop_process(proc, timeout=5.0):
    """Stop one process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- TLS

def make_tls(directory, name="registry"):
    """A CA and a server certificate for 127.0.0.1/localhost signed by it.
    Returns dict(ca=, cert=, key=) paths."""
    d = os.path.join(str(directory), f"tls-{name}")
    os.makedirs(d, exist_ok=True)
    p = {k: os.path.join(d, f) for k, f in
         (("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "server.pem"),
          ("key", "server.key"), ("csr", "server.csr"), ("ext", "server.ext"))}
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN=alps test CA {name}", "-keyout", p["ca_key"], "-out", p["ca"],
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", p["key"], "-out", p["csr"]])
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"],
         "-CAcreateserial", "-days", "2", "-extfile", p["ext"], "-out", p["cert"]])
    return p


# ---------------------------------------------------------------- Basic auth

def bcrypt_hash(password):
    """A $2b$/$2y$ hash as docker-registry's htpasswd wants."""
    with contextlib.suppress(Exception):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: deprecated in 3.11, still here in Debian 12
            h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
            if h and h.startswith("$2"):
                return h
    if shutil.which("htpasswd") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "apache2-utils"],
                       capture_output=True)
    require_tools("htpasswd")
    out = run(["htpasswd", "-nbB", "x", password]).stdout.strip()
    return out.split(":", 1)[1]


def htpasswd_file(directory, users):
    path = os.path.join(str(directory), "htpasswd")
    with open(path, "w") as f:
        for user, password in users.items():
            f.write(f"{user}:{bcrypt_hash(password)}\n")
    return path


# ---------------------------------------------------------------- registry

class Registry:
    """docker-registry serving storage_dir on a free loopback port."""

    def __init__(self, workdir, storage_dir=None, tls=None, htpasswd=None, token=None,
                 name="registry"):
        require_tools("docker-registry")
        self.workdir = os.path.join(str(workdir), name)
        os.makedirs(self.workdir, exist_ok=True)
        self.storage = storage_dir or os.path.join(self.workdir, "storage")
        self.port = free_port()
        self.tls = tls
        self.log_path = os.path.join(self.workdir, "registry.log")
        self.config_path = os.path.join(self.workdir, "config.yml")
        self._write_config(htpasswd, token)
        self.proc = None

    @property
    def host(self):
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _write_config(self, htpasswd, token):
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:",
                 "    disabled: false", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}", "  secret: alps-test-secret"]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls['cert']}",
                      f"    key: {self.tls['key']}"]
        if htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: alps-test", f"    path: {htpasswd}"]
        elif token:
            lines += ["auth:", "  token:", f"    realm: {token.url}/token",
                      f"    service: {token.service}", f"    issuer: {token.issuer}",
                      f"    rootcertbundle: {token.cert}"]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config_path],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def requests(self):
        """[(method, path, status)] from the access log, in order."""
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        return [(m.group(1), m.group(2), int(m.group(3))) for m in
                re.finditer(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ', text)]

    def blob_gets(self):
        return [p for (m, p, s) in self.requests() if m == "GET" and "/blobs/" in p]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- token service

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass


class _Server:
    """A ThreadingHTTPServer on a free loopback port in a thread."""

    def _serve(self, handler):
        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, self.port), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if getattr(self, "httpd", None):
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def host(self):
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self):
        return f"http://{self.host}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _TokenHandler(_QuietHandler):
    def do_GET(self):
        ts = self.server.owner
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization")
        with ts.lock:
            ts.requests.append({"path": self.path, "query": q, "authorization": auth})
        user = ts.check(auth)
        if user is None:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        token = ts.issue(user, q.get("service", [""])[0], q.get("scope", []))
        body = json.dumps({"token": token, "access_token": token,
                           "expires_in": ts.expires_in,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TokenServer(_Server):
    """Docker token service.  users: {name: password}; None allows anonymous
    pulls.  Tokens grant the requested actions on repository scopes."""

    def __init__(self, workdir, users=None, expires_in=300):
        require_tools("openssl")
        self.dir = os.path.join(str(workdir), "token")
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "token.key")
        self.cert = os.path.join(self.dir, "token.pem")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=alps test token issuer", "-keyout", self.key, "-out", self.cert])
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.expires_in = expires_in
        self.service = "alps-test-registry"
        self.issuer = "alps-test-issuer"
        self.requests = []
        self.lock = threading.Lock()

    def start(self):
        return self._serve(_TokenHandler)

    def check(self, auth):
        if self.users is None:
            return ""
        if not auth or not auth.startswith("Basic "):
            return None
        with contextlib.suppress(Exception):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(user) == password:
                return user
        return None

    def _sign(self, data):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=data,
                              capture_output=True, check=True).stdout

    def issue(self, user, service, scopes):
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) >= 3 and parts[0] == "repository":
                    access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                   "actions": parts[-1].split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": service, "iat": now,
                  "nbf": now - 10, "exp": now + self.expires_in,
                  "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode())).encode()
        return signing_input.decode() + "." + _b64url(self._sign(signing_input))


# ---------------------------------------------------------------- blob store

class _BlobHandler(_QuietHandler):
    def do_GET(self):
        store = self.server.owner
        with store.lock:
            store.requests.append({"path": self.path,
                                   "authorization": self.headers.get("Authorization")})
        data = store.blobs.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class BlobStore(_Server):
    """Serves /blobs/<digest> from a dict; records Authorization headers so
    that a test can check no credentials followed a redirect."""

    def __init__(self, blobs=None):
        self.blobs = dict(blobs or {})
        self.requests = []
        self.lock = threading.Lock()

    def start(self):
        return self._serve(_BlobHandler)


# ---------------------------------------------------------------- fault proxy

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
        "trailer", "upgrade", "content-length"}


class _ProxyHandler(_QuietHandler):
    def _record(self):
        proxy = self.server.owner
        entry = {"method": self.command, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()}}
        with proxy.lock:
            proxy.requests.append(entry)
        return proxy

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        proxy = self._record()
        rule = proxy.match(self.command, self.path)
        kind = rule["kind"] if rule else None
        if kind == "fail":
            return self._send(rule["status"], rule.get("headers", {}), rule.get("body", b""))
        if kind == "serve":
            return self._send(rule.get("status", 200), rule.get("headers", {}), rule["body"])
        if kind == "redirect":
            digest = self.path.rsplit("/", 1)[-1]
            return self._send(307, {"Location": f"{rule['target']}/blobs/{digest}"}, b"")
        status, headers, body = proxy.forward(self.command, self.path, self.headers)
        if kind == "corrupt" and status == 200 and len(body) > rule["offset"]:
            b = bytearray(body)
            b[rule["offset"]] ^= 0xFF
            body = bytes(b)
        if kind == "cut" and status == 200:
            return self._send_cut(status, headers, body, rule["after"])
        self._send(status, headers, body)

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_cut(self, status, headers, body, after):
        """Promise the whole body, send part of it, drop the connection."""
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:after])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FaultProxy(_Server):
    """HTTP proxy to upstream ("127.0.0.1:PORT", plain HTTP) with rules.

    Each rule matches a method and a path regex and applies `count` times
    (None: always), first match wins:
      fail(pattern, status, count, headers, body)     answer without forwarding
      serve(pattern, body, headers, status)           a canned answer
      cut(pattern, after, count)                      send `after` body bytes, drop
      corrupt(pattern, offset, count)                 flip one byte of the body
      redirect(pattern, target, count)                307 to target/blobs/<digest>
    """

    def __init__(self, upstream):
        self.upstream = upstream
        self.rules = []
        self.requests = []
        self.lock = threading.Lock()

    def start(self):
        return self._serve(_ProxyHandler)

    def _add(self, kind, pattern, count=None, method="GET", **kw):
        with self.lock:
            self.rules.append(dict(kind=kind, pattern=re.compile(pattern), count=count,
                                   method=method, **kw))
        return self

    def fail(self, pattern, status=500, count=1, headers=None, body=b""):
        return self._add("fail", pattern, count, status=status, headers=headers or {},
                         body=body)

    def serve(self, pattern, body, headers=None, status=200, count=None):
        return self._add("serve", pattern, count, method=None, body=body,
                         headers=headers or {}, status=status)

    def cut(self, pattern, after, count=1):
        return self._add("cut", pattern, count, after=after)

    def corrupt(self, pattern, offset=0, count=None):
        return self._add("corrupt", pattern, count, offset=offset)

    def redirect(self, pattern, target, count=None):
        return self._add("redirect", pattern, count, target=target)

    def match(self, method, path):
        with self.lock:
            for rule in self.rules:
                if rule["method"] not in (None, method) or not rule["pattern"].search(path):
                    continue
                if rule["count"] is not None:
                    if rule["count"] <= 0:
                        continue
                    rule["count"] -= 1
                return rule
        return None

    def forward(self, method, path, headers):
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP | {"host"}}
        conn.request(method, path, headers=fwd)
        resp = conn.getresponse()
        body = resp.read()
        out = {k: v for k, v in resp.getheaders()}
        conn.close()
        return resp.status, out, body

    def seen(self, pattern, method="GET"):
        with self.lock:
            return [r for r in self.requests
                    if r["method"] == method and re.search(pattern, r["path"])]


# ---------------------------------------------------------------- images

def _umoci_unpack_flags():
    return [] if os.geteuid() == 0 else ["--rootless"]


class Layout:
    """An OCI image layout built with umoci."""

    def __init__(self, path):
        self.path = str(path)

    def blob(self, digest):
        algo, hexd = digest.split(":", 1)
        with open(os.path.join(self.path, "blobs", algo, hexd), "rb") as f:
            return f.read()

    def index(self):
        with open(os.path.join(self.path, "index.json")) as f:
            return json.load(f)

    def manifest_digest(self, tag):
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m["digest"]
        raise KeyError(tag)

    def manifest(self, tag):
        return json.loads(self.blob(self.manifest_digest(tag)))

    def write_blob(self, data):
        digest = sha256_digest(data)
        with open(os.path.join(self.path, "blobs", "sha256", digest[7:]), "wb") as f:
            f.write(data)
        return digest


def build_image(workdir, tag, layers, layout=None, arch=None, config=None):
    """Build tag in an OCI layout (created if needed) with one layer per
    entry of layers ({path: bytes}).  config: dict of umoci config flags
    ("config.env": [...], "config.cmd": ..., "config.label": [...] ...)."""
    require_tools("umoci")
    layout = layout or Layout(os.path.join(str(workdir), "oci"))
    if not os.path.exists(os.path.join(layout.path, "index.json")):
        run(["umoci", "init", "--layout", layout.path])
    image = f"{layout.path}:{tag}"
    run(["umoci", "new", "--image", image])
    cfg = dict(config or {})
    if arch:
        cfg["architecture"] = arch
    flags = []
    for key, value in cfg.items():
        for v in (value if isinstance(value, list) else [value]):
            flags += [f"--{key}={v}"]
    if flags:
        run(["umoci", "config", "--image", image] + flags)
    for i, files in enumerate(layers):
        bundle = os.path.join(str(workdir), f"bundle-{tag}-{i}")
        shutil.rmtree(bundle, ignore_errors=True)
        run(["umoci", "unpack"] + _umoci_unpack_flags() + ["--image", image, bundle])
        for rel, data in files.items():
            p = os.path.join(bundle, "rootfs", rel.lstrip("/"))
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        run(["umoci", "repack", "--image", image, bundle])
        shutil.rmtree(bundle, ignore_errors=True)
    run(["umoci", "gc", "--layout", layout.path])
    return layout


def add_index(layout, tag, entries):
    """Write an OCI image index over entries [(manifest_tag, os, arch, variant)]
    into layout and name it tag (for `skopeo copy --all`)."""
    manifests = []
    for mtag, os_, arch, variant in entries:
        d = layout.manifest_digest(mtag)
        plat = {"architecture": arch, "os": os_}
        if variant:
            plat["variant"] = variant
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": d, "size": len(layout.blob(d)), "platform": plat})
    data = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests}).encode()
    digest = layout.write_blob(data)
    idx = layout.index()
    idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                             "digest": digest, "size": len(data),
                             "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(os.path.join(layout.path, "index.json"), "w") as f:
        json.dump(idx, f)
    return digest


def push(layout, tag, registry_host, repo, dest_tag=None, fmt=None, compress=None,
         all_images=False, creds=None):
    """skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:DEST_TAG."""
    require_tools("skopeo")
    cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if fmt:
        cmd += ["--format", fmt]
    if compress:
        cmd += ["--dest-compress", "--dest-compress-format", compress]
    if all_images:
        cmd += ["--all"]
    if creds:
        cmd += ["--dest-creds", creds]
    cmd += [f"oci:{layout.path}:{tag}", f"docker://{registry_host}/{repo}:{dest_tag or tag}"]
    run(cmd)


def pull_oci(registry_host, repo, tag, dest, creds=None):
    """skopeo copy docker://... oci:DEST:TAG, digests preserved: the
    reference copy that fetched blobs are compared with."""
    require_tools("skopeo")
    cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--preserve-digests"]
    if creds:
        cmd += ["--src-creds", creds]
    run(cmd + [f"docker://{registry_host}/{repo}:{tag}", f"oci:{dest}:{tag}"])
    return Layout(dest)


def random_bytes(n, seed):
    """Incompressible, reproducible content (so gzip keeps blobs large)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


SCHEMA1_MANIFEST = json.dumps({
    "schemaVersion": 1, "name": "test/old", "tag": "v1", "architecture": "amd64",
    "fsLayers": [{"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],
    "history": [{"v1Compatibility": "{}"}],
    "signatures": []}).encode()
SCHEMA1_TYPE = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def gunzip_if(data):
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
