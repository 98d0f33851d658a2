"""Stable error codes shared by the CLI, the server protocol and status.json."""

from __future__ import annotations

# code -> short meaning (documented in docs/protocol.md; never rename a code)
ERROR_CODES = {
    "bad_request": "the request line is not valid JSON or misses a field",
    "bad_input": "the job's input (clip, mesh, parts) cannot be used",
    "missing_weights": "no SP4D checkpoint and no other part source for this job",
    "bad_checkpoint": "the checkpoint's keys or shapes do not match the model",
    "out_of_memory": "the device ran out of memory",
    "cancelled": "the job was cancelled",
    "backend_died": "the backend process exited before the job finished",
    "internal": "an unexpected error in the backend",
}


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
    def __init__(self, message: str = "cancelled by the user"):
        super().__init__("cancelled", message)


def from_exception(exc: BaseException) -> BackendError:
    """Map any exception to a BackendError with a helpful message."""
    if isinstance(exc, BackendError):
        return exc
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return BackendError(
            "out_of_memory",
            f"ran out of memory ({text.strip() or type(exc).__name__}); lower the image size, "
            "the number of frames or decoding chunk, or switch on low-VRAM mode",
        )
    return BackendError("internal", f"{type(exc).__name__}: {text}")
