"""The SP4D weights on Hugging Face and their licence: one definition for Blender and the backend.

Blender shows the licence with its link before the first download and, once the artist accepts
it, says so in every request that may download (the job setting ``accept_licence``, the
``weights`` request's field of that name; the acceptance lives in the add-on's preferences, never
in a .blend file); the backend refuses to download without it (``licence_required``). An explicit
field, not an environment variable: the backend reads no switch of its own from the environment.
Standard library only.
"""

HUB_REPO = "stabilityai/sp4d"
HUB_FILE = "sp4d.safetensors"
MODEL_PAGE = f"https://huggingface.co/{HUB_REPO}"
LICENCE_NAME = "Stability AI Community License"
LICENCE_URL = f"{MODEL_PAGE}/blob/main/LICENSE.md"
