"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

No Hub is reachable from the test machines, so the real `huggingface_hub`, `datasets` and
`transformers` clients are pointed at this server (`HF_ENDPOINT`, with `HF_HUB_DISABLE_XET=1`
for the classic preupload -> LFS batch -> NDJSON commit upload path). It keeps repos in
memory and implements what those clients call:

- auth: `Authorization: Bearer <token>`; `GET /api/whoami-v2`; an unknown token gets 401
  "Invalid credentials in Authorization header" on every route, like the Hub.
- `POST /api/repos/create` (`visibility` private/public; public when unspecified, like a
  user namespace on the Hub), `PUT /api/{type}s/{id}/settings`.
- `POST /api/{type}s/{id}/preupload/{rev}`, `POST /{prefix}{id}.git/info/lfs/objects/batch`,
  `PUT /lfs-upload/{key}/{oid}` (basic transfer), `POST /api/{type}s/{id}/commit/{rev}`.
- reads: `GET /api/{type}s/{id}[/revision/{rev}]`, `.../tree/{rev}/{path}`,
  `POST .../paths-info/{rev}`, `GET|HEAD /{prefix}{id}/resolve/{rev}/{path}` (with
  `X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`, byte ranges).

Privacy is enforced the way the Hub does it: a private repo answers 401 with
`X-Error-Code: RepoNotFound` to anyone but its owner, so tests can prove "private by default".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_MIN_SIZE = 1024  # binary or larger files go to LFS, like the Hub's default .gitattributes


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class RepoFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_oid(self) -> str:  # git blob sha1, what the Hub reports as `oid` / ETag for regular files
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    def entry(self, path: str) -> dict:
        info = {"type": "file", "path": path, "size": len(self.content), "oid": self.git_oid}
        if self.lfs:
            info["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return info


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    # commits[sha] = {path: RepoFile}; `main` points at the newest one.
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    main: str = ""
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    def files(self, revision: str) -> tuple[str, dict[str, RepoFile]]:
        sha = self.main if revision in ("main", "HEAD") else revision
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, self.commits[sha]


@dataclass
class HubState:
    tokens: dict[str, str]  # token -> user name
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    lfs_blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    upload_key: str = field(default_factory=lambda: secrets.token_hex(8))
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status) of every request


def _new_sha() -> str:
    return secrets.token_hex(20)


class HubHandler(BaseHTTPRequestHandler):
    server_version = "TinyHub/1.0"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> HubState:
        return self.server.state  # type: ignore[attr-defined]

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()
        path = unquote(url.path)
        status = 500
        try:
            self.user = self._authenticate()
            for route_method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and route_method == method or (match and route_method == "GET" and method == "HEAD"):
                    with self.state.lock:
                        status, body, headers = handler(self, **match.groupdict())
                    break
            else:
                raise HubError(404, f"TinyHub: no route for {method} {path}")
        except HubError as err:
            status, headers = err.status, {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            body = json.dumps({"error": err.message, **err.extra}).encode()
        self.state.log.append((method, path, status))
        self._respond(status, body, headers, head=method == "HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _respond(self, status: int, body, headers: dict, head: bool) -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _authenticate(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.state.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.state.tokens[token]

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid JSON body: {err}") from None

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self.user != repo.owner):
            # Same answer for "missing" and "private, not yours": the Hub leaks no existence.
            raise HubError(
                401 if self.user is None or repo is not None else 404,
                "Repository not found",
                "RepoNotFound",
            )
        if write and self.user != repo.owner:
            raise HubError(401 if self.user is None else 403, f"You don't have write access to {repo_id}")
        return repo

    def _repo_info(self, repo: Repo, revision: str = "main") -> dict:
        sha, files = repo.files(revision)
        info = {
            "id": repo.repo_id,
            "_id": repo.repo_id,
            "author": repo.owner,
            "sha": sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "createdAt": repo.created_at,
            "lastModified": repo.created_at,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return info

    # ------------------------------------------------------------------ routes

    def whoami(self):
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        return (
            200,
            {
                "type": "user",
                "id": self.user,
                "name": self.user,
                "fullname": self.user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            },
            {},
        )

    def create_repo(self):
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = self._json()
        namespace = payload.get("organization") or self.user
        if namespace != self.user:
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.state.repos:
            raise HubError(409, "You already created this repo", url=url)
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = Repo(repo_type, repo_id, self.user, private)
        repo.main = _new_sha()
        repo.commits[repo.main] = {".gitattributes": RepoFile(b"*.parquet filter=lfs\n", lfs=False)}
        self.state.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def validate_yaml(self):
        content = self._json().get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return 400, {"errors": [{"message": "README.md metadata block is not closed by '---'"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def settings(self, kind, repo_id):
        repo = self._repo(REPO_TYPES[kind], repo_id, write=True)
        payload = self._json()
        if "visibility" in payload or "private" in payload:
            repo.private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        return 200, {"private": repo.private}, {}

    def repo_info(self, kind, repo_id, revision="main"):
        repo = self._repo(REPO_TYPES[kind], repo_id)
        return 200, self._repo_info(repo, revision), {}

    def preupload(self, kind, repo_id, revision):
        repo = self._repo(REPO_TYPES[kind], repo_id, write=True)
        _, files = repo.files(revision)
        answers = []
        for item in self._json()["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = files.get(item["path"])
            answers.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.git_oid if existing else None,
                }
            )
        return 200, {"files": answers}, {}

    def lfs_batch(self, prefix, repo_id):
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix or ""]
        self._repo(repo_type, repo_id, write=True)
        objects = []
        for obj in self._json()["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs_blobs:
                href = f"{self.endpoint}/lfs-upload/{self.state.upload_key}/{obj['oid']}"
                answer["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def lfs_upload(self, key, oid):
        # The upload URL is pre-signed (no Authorization header), like the Hub's S3 URLs.
        if key != self.state.upload_key:
            raise HubError(403, "bad upload signature")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        self.state.lfs_blobs[oid] = self.body
        return 200, b"", {"ETag": f'"{oid}"'}

    def commit(self, kind, repo_id, revision):
        repo = self._repo(REPO_TYPES[kind], repo_id, write=True)
        parent_sha, parent_files = repo.files(revision)
        files = dict(parent_files)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        summary = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value.get("summary", "")
                if value.get("parentCommit") and value["parentCommit"] != parent_sha:
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = RepoFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                content = self.state.lfs_blobs.get(value["oid"])
                if content is None:
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = RepoFile(content, lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        sha = _new_sha()
        repo.commits[sha] = files
        repo.main = sha
        url = f"{self.endpoint}/{URL_PREFIX[repo.repo_type]}{repo_id}/commit/{sha}"
        return 200, {"commitUrl": url, "commitOid": sha, "commitMessage": summary, "pullRequestUrl": None}, {}

    def _entries(self, files: dict[str, RepoFile], folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries, folders = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest:
                parts = rest.split("/")[:-1]
                depth = len(parts) if recursive else 1
                for i in range(1, depth + 1):
                    folders.add(prefix + "/".join(parts[:i]))
                if not recursive:
                    continue
            entries.append(files[path].entry(path))
        entries += [
            {"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()}
            for f in sorted(folders)
        ]
        return entries

    def tree(self, kind, repo_id, revision, path=""):
        repo = self._repo(REPO_TYPES[kind], repo_id)
        _, files = repo.files(revision)
        folder = (path or "").strip("/")
        if folder and folder in files:
            raise HubError(400, f"{folder} is a file, not a folder")
        if folder and not any(p.startswith(folder + "/") for p in files):
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        return 200, self._entries(files, folder, recursive), {}

    def paths_info(self, kind, repo_id, revision):
        repo = self._repo(REPO_TYPES[kind], repo_id)
        _, files = repo.files(revision)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = self._json().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        answers = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                answers.append(files[path].entry(path))
            elif any(p.startswith(path + "/") for p in files) or path == "":
                answers.append(
                    {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}
                )
        return 200, answers, {}

    def resolve(self, prefix, repo_id, revision, path):
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix or ""]
        repo = self._repo(repo_type, repo_id)
        sha, files = repo.files(revision)
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        file = files[path]
        etag = file.sha256 if file.lfs else file.git_oid
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if file.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(file.content))
        content, status = file.content, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1]) if match[1] else max(0, len(content) - int(match[2]))
            end = int(match[2]) if match[1] and match[2] else len(content) - 1
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        return status, content, headers


_KIND = r"(?P<kind>models|datasets|spaces)"
_ID = r"(?P<repo_id>[^/]+/[^/]+)"
_PREFIX = r"(?P<prefix>datasets/|spaces/)?"
ROUTES = [
    ("GET", r"/api/whoami-v2", HubHandler.whoami),
    ("POST", r"/api/repos/create", HubHandler.create_repo),
    ("POST", r"/api/validate-yaml", HubHandler.validate_yaml),
    ("PUT", rf"/api/{_KIND}/{_ID}/settings", HubHandler.settings),
    ("POST", rf"/api/{_KIND}/{_ID}/preupload/(?P<revision>[^/]+)", HubHandler.preupload),
    ("POST", rf"/api/{_KIND}/{_ID}/commit/(?P<revision>[^/]+)", HubHandler.commit),
    ("GET", rf"/api/{_KIND}/{_ID}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", HubHandler.tree),
    ("POST", rf"/api/{_KIND}/{_ID}/paths-info/(?P<revision>[^/]+)", HubHandler.paths_info),
    ("GET", rf"/api/{_KIND}/{_ID}/revision/(?P<revision>[^/]+)", HubHandler.repo_info),
    ("GET", rf"/api/{_KIND}/{_ID}", HubHandler.repo_info),
    ("POST", rf"/{_PREFIX}{_ID}\.git/info/lfs/objects/batch", HubHandler.lfs_batch),
    ("PUT", r"/lfs-upload/(?P<key>[0-9a-f]+)/(?P<oid>[0-9a-f]{64})", HubHandler.lfs_upload),
    ("GET", rf"/{_PREFIX}{_ID}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubHandler.resolve),
]


class HubServer:
    """`with HubServer({"hf_alice": "alice"}) as hub: ...` serves on `hub.endpoint` in a daemon thread."""

    def __init__(self, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        self.state = HubState(tokens=dict(tokens))
        self.httpd = ThreadingHTTPServer((host, port), HubHandler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state  # type: ignore[attr-defined]
        host, port = self.httpd.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tiny-hub", daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.state.repos[(repo_type, repo_id)]

    def url(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> str:
        return f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
