"""Loopback HTTP servers standing in for the internet in tests: 127.0.0.1 on a free port, real sockets, so the clients
(huggingface_hub; tfds through requests) run as they would against the real hosts."""

import hashlib
import http.server
import re
import ssl
import subprocess
import threading
import urllib.parse

# The commit every revision of a FakeHub repository resolves to.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LoopbackServer:
    """What both servers share: a quiet handler of HEAD and GET that calls `respond(handler, send_body)`, a
    thread serving from `with` to its end, and the sending of a response body, cut off halfway if asked."""

    def handler_class(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                server.respond(self, send_body=False)

            def do_GET(self):
                server.respond(self, send_body=True)

            def log_message(self, *args):
                pass

        return Handler

    @staticmethod
    def send(handler, status, content=b"", headers=(), send_body=True, dropped=False):
        """A response of `content`; `dropped`: the body cut off halfway and the connection closed, as a dropped
        connection would."""
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if send_body:
            handler.wfile.write(content[: len(content) // 2] if dropped else content)
            if dropped:
                handler.close_connection = True

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeHub(LoopbackServer):
    """The Hugging Face Hub's file resolution, `HEAD|GET /{owner}/{name}/resolve/{revision}/{file}`, for the
    directories of `repos` ({repo id: directory}) at revision "main" (or COMMIT): the headers huggingface_hub reads
    (X-Repo-Commit, ETag, Content-Length) and its error codes (X-Error-Code). A file named in `drop` is cut off
    halfway, its connection closed, as a dropped connection would.

    Example:
        with FakeHub({"test/tiny-bert": directory}) as hub:
            os.environ["HF_ENDPOINT"] = hub.url
    """

    def __init__(self, repos, drop=()):
        self.repos = repos
        self.drop = set(drop)
        self.requests = []  # (method, path), in order
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def respond(self, handler, send_body):
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        self.requests.append((handler.command, path))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/(.+?)/([^/]+)", path)
        if not match:
            return self.error(handler, 404, "RepoNotFound")
        repo, revision, name = match.groups()
        if repo not in self.repos:
            return self.error(handler, 404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self.error(handler, 404, "RevisionNotFound")
        file = self.repos[repo] / name
        if not file.is_file():
            return self.error(handler, 404, "EntryNotFound")
        content = file.read_bytes()
        headers = [("X-Repo-Commit", COMMIT), ("ETag", f'"{hashlib.sha256(content).hexdigest()}"')]
        self.send(handler, 200, content, headers, send_body, dropped=name in self.drop)

    def error(self, handler, status, code):
        self.send(handler, status, headers=[("X-Error-Code", code)])


class HttpsMirror(LoopbackServer):
    """The internet for the https URLs of `files` ({url: bytes}): an HTTPS proxy on 127.0.0.1 that answers every
    request itself. A client reaches it as any proxy (HTTPS_PROXY); its CONNECT is accepted and the TLS ends here,
    with a certificate for the hosts served that the client trusts through REQUESTS_CA_BUNDLE, so the client's
    proxy, TLS and HTTP code runs as against the real hosts. Other URLs answer 404; a URL in `drop` is cut off
    halfway, its connection closed. `environment` holds the variables that point a client at the mirror.

    Example:
        with HttpsMirror({"https://example.org/a.txt": b"a"}, tmp_path) as mirror:
            os.environ.update(mirror.environment)
    """

    def __init__(self, files, directory, drop=()):
        self.files = files
        self.drop = set(drop)
        self.requests = []  # (method, url), in order
        hosts = sorted({urllib.parse.urlsplit(url).hostname for url in files})
        certificate, key = directory / "mirror.crt", directory / "mirror.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=loopback mirror"]
            + ["-addext", "subjectAltName=" + ",".join(f"DNS:{host}" for host in hosts)]
            + ["-keyout", str(key), "-out", str(certificate)],
            check=True,
            capture_output=True,
        )
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(certificate, key)
        mirror = self

        class TunnelHandler(self.handler_class()):
            """Requests inside a CONNECT tunnel, once its TLS is up: https://{Host}{path}."""

            protocol_version = "HTTP/1.1"

        class ProxyHandler(http.server.BaseHTTPRequestHandler):
            def do_CONNECT(self):
                self.send_response(200, "Connection established")
                self.end_headers()
                with mirror.tls.wrap_socket(self.connection, server_side=True) as tunnel:
                    TunnelHandler(tunnel, self.client_address, self.server)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ProxyHandler)
        proxy = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.environment = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "REQUESTS_CA_BUNDLE": str(certificate)}

    def respond(self, handler, send_body):
        host = handler.headers["Host"].removesuffix(":443")
        url = f"https://{host}{handler.path}"
        self.requests.append((handler.command, url))
        if url not in self.files:
            return self.send(handler, 404)
        self.send(handler, 200, self.files[url], send_body=send_body, dropped=url in self.drop)
