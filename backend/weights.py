"""sp4d.safetensors from Hugging Face: progress, cancel, resume, the licence, offline and refusals.

``fetch_weights`` returns the file from the hub cache when it is there (no network at all), and
otherwise downloads it into that cache, so that ``hf_hub_download(..., local_files_only=True)``
and the ``hf`` tools find it afterwards. Why not ``hf_hub_download`` itself: it reports through a
tqdm bar that cannot be cancelled, and since huggingface_hub 1.x a download that stops (a
cancel, a dropped connection, Blender closed) deletes its partial file, so a 10 GB download would
start again from zero. Here the file grows in ``blobs/<etag>.incomplete`` (the name older
huggingface_hub versions resume from too) and a later call continues it with an HTTP Range
request; every chunk is a cancellation point, and progress events carry the bytes done and in
all, the rate and the time left. The finished file is checked (size, and SHA-256 when the etag
is one, as the hub's is for large files) before it is moved into ``blobs/<etag>`` and linked
from ``snapshots/<commit>/``: the hub cache's documented layout.

Before any download: Blender's online access (HF_HUB_OFFLINE, ``offline``), the licence
(``licence_required`` unless the caller says it was accepted: sp4d_job.hub), and the hub's refusal of the gated repo
(``gated``, saying what to do). Tokens come from the hub's own store or HF_TOKEN, never from us.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from sp4d_job.hub import HUB_FILE, HUB_REPO, LICENCE_NAME, MODELS, model_of_repo
from sp4d_job.lock import Busy, JobLock

from .context import StageContext
from .errors import BackendError

STAGE = "weights"
CHUNK = 1 << 20  # bytes read at a time: each is a cancellation point
REPORT_EVERY = 0.25  # seconds between progress events
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def offline_reason(environ=None) -> str | None:
    """Why the hub must not be asked (HF_HUB_OFFLINE, which Blender sets when its online access is
    off), or None."""
    value = (environ if environ is not None else os.environ).get("HF_HUB_OFFLINE", "")
    if value.strip().lower() in ("1", "on", "yes", "true"):
        return "network access is off (HF_HUB_OFFLINE is set; in Blender: Preferences > System > Network > " \
               "Allow Online Access)"
    return None


def hub_reachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when a connection to the hub's host opens within ``timeout`` s, else why not. Skipped
    (None) behind a proxy, where only the proxy knows."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as exc:
        return f"cannot reach {url.hostname} ({exc})"
    return None


def cached(repo: str = HUB_REPO, filename: str = HUB_FILE, revision: str = "main") -> Path | None:
    """The file in the hub cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(p) if isinstance(p, str) and Path(p).is_file() else None


def licence_message(repo: str = HUB_REPO) -> str:
    m = model_of_repo(repo)
    cli = ("python -m backend weights --accept-licence (or generate --accept-licence)" if m is MODELS["sp4d"] else
           "python -m backend weights --model svd --accept-licence (or generate --accept-svd-licence)")
    return (f"the {m['title']} weights are under the {LICENCE_NAME} ({m['licence_url']}): read it and accept it before "
            f"they are downloaded — in Blender: Edit > Preferences > Add-ons > SP4D Rig > {m['button']}; on the "
            f"command line: {cli}; in job.json: the setting {m['setting']}: true")


def gated_message(detail: str = "", repo: str = HUB_REPO) -> str:
    m = model_of_repo(repo)
    return (f"Hugging Face refused {m['repo']}{f' ({detail})' if detail else ''}: the repository is gated. Open "
            f"{m['page']}, log in and accept the licence there, then log in on this computer with `hf auth login` "
            "(or `huggingface-cli login`), or set HF_TOKEN in the environment Blender starts from, and try again. "
            "Tokens are never stored in .blend files or the SP4D preferences")


def fetch_weights(ctx: StageContext | None = None, repo: str = HUB_REPO, filename: str = HUB_FILE,
                  revision: str = "main", token: str | None = None, accepted: bool = False) -> Path:
    """The local path of ``repo``/``filename``: from the hub cache, else downloaded into it with
    progress (``ctx``), resuming a partial download; ``accepted``: the artist accepted the licence
    (without it nothing is downloaded). BackendError ``offline``, ``licence_required``,
    ``gated``, ``missing_weights``, ``busy``, ``cancelled`` (the partial file kept for the next
    call), ``bad_checkpoint`` (the download does not match the hub's digest)."""
    ctx = ctx or StageContext()
    found = cached(repo, filename, revision)
    if found is not None:
        return found
    from huggingface_hub import constants

    why = offline_reason() or hub_reachable(constants.ENDPOINT)
    if why:
        raise BackendError("offline", f"{why}, and {filename} is not in the hub cache: connect and try again, or "
                           "download it elsewhere and set a local weights file")
    if not accepted:
        raise BackendError("licence_required", licence_message(repo))
    meta = _metadata(repo, filename, revision, token)
    storage = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    lock_dir = Path(constants.HF_HUB_CACHE) / ".locks" / f"sp4d-{storage.name}"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        with JobLock(lock_dir, f"downloading {filename}"):
            found = cached(repo, filename, revision)  # another process finished it while we waited
            if found is not None:
                return found
            return _download_into_cache(ctx, meta, storage, filename, revision, token)
    except Busy as exc:
        raise BackendError("busy", f"{filename} is being downloaded by another process: {exc}") from None


def _metadata(repo: str, filename: str, revision: str, token: str | None):
    """The hub's answer about the file (etag, size, commit, where to get it), its refusals as
    BackendErrors."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), token=token, timeout=10)
    except GatedRepoError as exc:
        raise BackendError("gated", gated_message("access to the gated repository was refused", repo)) from exc
    except RepositoryNotFoundError as exc:  # the hub says "not found" to a token that cannot see a gated repo
        raise BackendError("gated", gated_message("not found, or not visible without an accepted licence and a "
                                                  "login", repo)) from exc
    except (EntryNotFoundError, RevisionNotFoundError) as exc:
        raise BackendError("missing_weights", f"{repo} has no {filename} at {revision}") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise BackendError("gated", gated_message(f"HTTP {status}", repo)) from exc
        raise BackendError("offline", f"Hugging Face did not answer as expected (HTTP {status}): try again "
                           "later") from exc
    except Exception as exc:
        if _network_error(exc):
            raise BackendError("offline", f"cannot reach Hugging Face ({type(exc).__name__}: {exc})") from exc
        raise
    if not meta.etag or not meta.commit_hash:
        raise BackendError("offline", f"{os.environ.get('HF_ENDPOINT') or 'the hub'} did not answer like a Hugging "
                           "Face endpoint (no etag or commit)")
    return meta


def _network_error(exc: BaseException) -> bool:
    """A connection that failed or broke (OSError, or the HTTP client's transport errors)."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore",
                                                                               "httpcore2", "requests", "urllib3")


def _download_into_cache(ctx: StageContext, meta, storage: Path, filename: str, revision: str,
                         token: str | None) -> Path:
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / meta.etag
    if not blob.is_file():
        partial = blobs / f"{meta.etag}.incomplete"
        _download(ctx, meta.location, token, partial, meta.size, meta.etag if SHA256.match(meta.etag) else None,
                  filename)
        os.replace(partial, blob)
    pointer = storage / "snapshots" / meta.commit_hash / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if not pointer.exists():
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:  # no symlinks (Windows without developer mode): the file itself, as the hub does
            os.replace(blob, pointer)
    if revision != meta.commit_hash:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / revision).write_text(meta.commit_hash)
    return pointer


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _download(ctx: StageContext, url: str, token: str | None, partial: Path, size: int | None, sha256: str | None,
              filename: str) -> None:
    """Grow ``partial`` to the whole file from ``url`` (a Range request from its current size),
    reporting progress; checks the size and digest at the end."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    done = partial.stat().st_size if partial.exists() else 0
    if size is not None and done > size:
        done = 0
    hasher = hashlib.sha256() if sha256 else None
    if hasher is not None and done:
        _hash_prefix(ctx, partial, done, hasher, size)
    resumed = done
    if size is None or done < size:
        headers = build_hf_headers(token=token)
        headers["Accept-Encoding"] = "identity"
        if done:
            headers["Range"] = f"bytes={done}-"
        t0 = last = time.monotonic()
        try:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as r:
                hf_raise_for_status(r)
                if done and r.status_code != 206:  # the server ignored the Range: the whole file again
                    done, resumed = 0, 0
                    hasher = hashlib.sha256() if sha256 else None
                with open(partial, "r+b" if done else "wb") as f:
                    f.seek(done)
                    f.truncate()
                    for chunk in r.iter_bytes(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        now = time.monotonic()
                        if now - last >= REPORT_EVERY:
                            last = now
                            f.flush()
                            _report(ctx, filename, done, size, (done - resumed) / max(now - t0, 1e-6), resumed)
        except BackendError:
            raise
        except Exception as exc:
            if _network_error(exc):
                raise BackendError("offline", f"the download of {filename} stopped ({type(exc).__name__}: {exc}) at "
                                   f"{_gb(done)}: try again, it continues from there") from exc
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                repo = next((m["repo"] for m in MODELS.values() if f"/{m['repo']}/" in url), HUB_REPO)
                raise BackendError("gated", gated_message(f"HTTP {status}", repo)) from exc
            raise
    if size is not None and done != size:
        raise BackendError("offline", f"the download of {filename} ended at {_gb(done)} of {_gb(size)}: try again, "
                           "it continues from there")
    if hasher is not None and hasher.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise BackendError("bad_checkpoint", f"the downloaded {filename} does not match the hub's SHA-256 "
                           f"({sha256[:12]}…); it was deleted: download it again")
    _report(ctx, filename, done, size, 0.0, resumed, final=True)


def _hash_prefix(ctx: StageContext, partial: Path, n: int, hasher, size: int | None) -> None:
    """Feed the first ``n`` bytes of ``partial`` (a download to resume) to ``hasher``."""
    left, last = n, 0.0
    with open(partial, "rb") as f:
        while left:
            block = f.read(min(CHUNK * 8, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)
            if time.monotonic() - last >= REPORT_EVERY:
                last = time.monotonic()
                ctx.progress(STAGE, n - left, size or n, f"checking the {_gb(n)} downloaded before")


def _report(ctx: StageContext, filename: str, done: int, size: int | None, rate: float, resumed: int,
            final: bool = False) -> None:
    total = size or done
    text = (f"downloaded {filename} ({_gb(done)})" if final else
            f"downloading {filename}: {_gb(done)} of {_gb(total) if size else '?'} at {rate / 1e6:.1f} MB/s")
    ctx.progress(STAGE, done, total, text, bytes=done, bytes_total=size, rate_bps=round(rate),
                 resumed_from=resumed)
