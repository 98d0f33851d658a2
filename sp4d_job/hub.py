"""The SP4D weights on Hugging Face and their licence: one definition for Blender and the backend.

Blender shows the licence with its link before the first download and, once the artist accepts
it, starts the backend with ``LICENCE_ENV=1`` (the acceptance lives in the add-on's preferences,
never in a .blend file); the backend refuses to download without it (``licence_required``).
Standard library only.
"""

HUB_REPO = "stabilityai/sp4d"
HUB_FILE = "sp4d.safetensors"
MODEL_PAGE = f"https://huggingface.co/{HUB_REPO}"
LICENCE_NAME = "Stability AI Community License"
LICENCE_URL = f"{MODEL_PAGE}/blob/main/LICENSE.md"
LICENCE_ENV = "SP4D_LICENCE_ACCEPTED"


def licence_accepted(environ) -> bool:
    """Whether ``environ`` says the licence was accepted (LICENCE_ENV set to 1/true/yes/on)."""
    return str(environ.get(LICENCE_ENV, "")).strip().lower() in ("1", "true", "yes", "on")
