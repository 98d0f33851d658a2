"""The SP4D and SVD weights on Hugging Face and their licences: one definition for Blender and the backend.

Blender shows the licence with its link before the first download and, once the artist accepts
it, says so in every request that may download (the job setting ``accept_licence``, the
``weights`` request's field of that name; the acceptance lives in the add-on's preferences, never
in a .blend file); the backend refuses to download without it (``licence_required``). SVD-XT 1.1
(the front stage of Rig Image, docs/svd.md) is a second gated repository with its own acceptance
(the setting ``accept_svd_licence``, the ``weights`` request's ``model: svd``). An explicit
field, not an environment variable: the backend reads no switch of its own from the environment.
Standard library only.
"""

HUB_REPO = "stabilityai/sp4d"
HUB_FILE = "sp4d.safetensors"
MODEL_PAGE = f"https://huggingface.co/{HUB_REPO}"
LICENCE_NAME = "Stability AI Community License"
LICENCE_URL = f"{MODEL_PAGE}/blob/main/LICENSE.md"

SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
SVD_FILE = "svd_xt_1_1.safetensors"
SVD_MODEL_PAGE = f"https://huggingface.co/{SVD_REPO}"
SVD_LICENCE_URL = f"{SVD_MODEL_PAGE}/blob/main/LICENSE.md"

# per model: what Blender shows and asks, and where the backend downloads from
MODELS = {
    "sp4d": {"title": "SP4D", "repo": HUB_REPO, "file": HUB_FILE, "page": MODEL_PAGE, "licence_url": LICENCE_URL,
             "size": "about 10 GB", "setting": "accept_licence", "button": "Accept Licence"},
    "svd": {"title": "SVD-XT 1.1", "repo": SVD_REPO, "file": SVD_FILE, "page": SVD_MODEL_PAGE,
            "licence_url": SVD_LICENCE_URL, "size": "about 4.8 GB", "setting": "accept_svd_licence",
            "button": "Accept SVD Licence"},
}


def model_of_repo(repo: str) -> dict:
    """MODELS' entry of ``repo`` (SP4D's for a repository it does not list)."""
    return next((m for m in MODELS.values() if m["repo"] == repo), MODELS["sp4d"])
