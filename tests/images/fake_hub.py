"""A Hugging Face Hub stand-in: local folders served as model repos over the parts of the
hub's HTTP API that `snapshot_download` uses (revision info, the file tree, resolve with its
metadata headers). Containers reach it through HF_ENDPOINT, as they would reach a mirror.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "5eb0c0ffee5eb0c0ffee5eb0c0ffee5eb0c0ffee"


class _Repo:
    def __init__(self, folder: Path) -> None:
        self.files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}

    def tree(self) -> list[dict]:
        return [{"type": "file", "path": name, "size": path.stat().st_size, "oid": self.etag(name)}
                for name, path in self.files.items()]

    def etag(self, name: str) -> str:
        return hashlib.sha256(self.files[name].read_bytes()).hexdigest()


def _handler(repos: Mapping[str, _Repo], requests: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _route(self) -> tuple[str, _Repo, str] | None:
            """(kind, repo, rest) for /api/models/<repo>/(revision|tree)/... and /<repo>/resolve/<rev>/<file>."""
            path = unquote(urlsplit(self.path).path)
            for repo_id, repo in repos.items():
                for kind, prefix in (("revision", f"/api/models/{repo_id}/revision/"),
                                     ("tree", f"/api/models/{repo_id}/tree/"),
                                     ("resolve", f"/{repo_id}/resolve/")):
                    if path.startswith(prefix):
                        return kind, repo, path.removeprefix(prefix)
            return None

        def _reply(self, status: int, body: bytes = b"", headers: Mapping[str, str] = {}, send_body: bool = True):
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _serve(self, send_body: bool) -> None:
            requests.append(f"{self.command} {self.path}")
            route = self._route()
            if route is None:
                return self._reply(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            kind, repo, rest = route
            if kind == "revision":
                info = {"id": rest, "sha": COMMIT, "siblings": [{"rfilename": n} for n in repo.files]}
                return self._reply(200, json.dumps(info).encode(), send_body=send_body)
            if kind == "tree":
                return self._reply(200, json.dumps(repo.tree()).encode(), send_body=send_body)
            name = rest.split("/", 1)[1]
            if name not in repo.files:
                return self._reply(404, b"", {"X-Error-Code": "EntryNotFound"})
            body = repo.files[name].read_bytes()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{repo.etag(name)}"'}
            return self._reply(200, body, headers, send_body=send_body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._serve(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(send_body=False)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_hub(repos: Mapping[str, Path], host: str = "0.0.0.0") -> Iterator[tuple[int, list[str]]]:
    """Serves `repos` (repo id -> folder) on a free port; yields (port, requests seen)."""
    requests: list[str] = []
    server = ThreadingHTTPServer((host, 0), _handler({k: _Repo(v) for k, v in repos.items()}, requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()
