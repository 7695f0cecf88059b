"""A local HTTP server standing in for the Hugging Face Hub in tests.

It answers the two requests ``huggingface_hub.hf_hub_download`` makes
(``HEAD`` then ``GET`` of ``/{repo_id}/resolve/{revision}/{filename}``) with
the headers the Hub sends (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``Content-Length``) and the Hub's error codes (``X-Error-Code``:
``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). It also counts
requests so tests can prove that offline use made none.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


@dataclass
class FakeRepo:
    """Commits of one repository: commit sha -> {filename: bytes}; branches/tags -> commit."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def add_commit(self, files: dict[str, bytes], *, ref: str = "main") -> str:
        blob = b"".join(k.encode() + hashlib.sha256(v).digest() for k, v in sorted(files.items()))
        sha = hashlib.sha1(blob + str(len(self.commits)).encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.refs[ref] = sha
        return sha

    def add_folder(self, folder: str | Path, *, ref: str = "main") -> str:
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return self.add_commit(files, ref=ref)


class FakeHub:
    """A threaded fake Hub on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = unquote(self.path.split("?", 1)[0]).strip("/").split("/")
                # /{org}/{name}/resolve/{revision}/{filename...}
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound", "unknown route")
                repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                commit = repo.refs.get(revision, revision if revision in repo.commits else None)
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                data = repo.commits[commit].get(filename)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
                etag = hashlib.sha256(data).hexdigest()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str) -> None:
                payload = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def repo(self, repo_id: str) -> FakeRepo:
        return self.repos.setdefault(repo_id, FakeRepo())

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
