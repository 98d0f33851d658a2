"""Stable error codes shared by the CLI, the server protocol and status.json."""

from __future__ import annotations

import errno

# code -> short meaning (documented in docs/protocol.md; never rename a code)
ERROR_CODES = {
    "bad_request": "the request line is not valid JSON or misses a field",
    "bad_input": "the job's input (clip, mesh, parts, job.json, settings) cannot be used",
    "missing_weights": "no SP4D checkpoint and no other part source for this job",
    "no_gpu": "SP4D needs a CUDA GPU and none is available (and no other part source for this job)",
    "offline": "the weights must be downloaded but the network is off or unreachable",
    "bad_checkpoint": "the checkpoint's keys or shapes do not match the model",
    "out_of_memory": "the device ran out of memory",
    "numeric_overflow": "half precision overflowed (non-finite values): bf16 or fp32 precision avoids it",
    "busy": "another job is running on this job folder",
    "io_error": "the job folder cannot be written (read-only, no permission, disk full)",
    "cancelled": "the job was cancelled",
    "timeout": "the job did not finish in the time it was given, and was stopped",
    "backend_died": "the backend process exited before the job finished",
    "internal": "an unexpected error in the backend",
}

# errno values that mean "this folder cannot be written", with what to do about it
_IO_ERRNOS = {errno.EACCES: "no permission", errno.EPERM: "not permitted", errno.EROFS: "read-only file system",
              errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "disk quota exceeded"}


class BackendError(Exception):
    """An error with a stable code and a message meant for the artist."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class Cancelled(BackendError):
    """A job stopped on request: by the user (``cancelled``) or by its caller's time limit (``timeout``)."""

    def __init__(self, message: str = "cancelled by the user", code: str = "cancelled"):
        super().__init__(code if code in ("cancelled", "timeout") else "cancelled", message)


def from_exception(exc: BaseException) -> BackendError:
    """Map any exception to a BackendError with a helpful message."""
    if isinstance(exc, BackendError):
        return exc
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return BackendError(
            "out_of_memory",
            f"ran out of memory ({text.strip() or type(exc).__name__}); lower the image size, "
            "the number of frames or decoding chunk, use a shorter or smaller clip, or switch on low-VRAM mode",
        )
    if isinstance(exc, OSError) and exc.errno in _IO_ERRNOS:
        where = exc.filename or "the job folder"
        return BackendError("io_error", f"cannot write {where}: {_IO_ERRNOS[exc.errno]} ({exc.strerror}); "
                            "make the job folder writable or choose another cache folder")
    if isinstance(exc, RecursionError):
        return BackendError("bad_input", f"the input is nested too deeply ({text})")
    return BackendError("internal", f"{type(exc).__name__}: {text}")
