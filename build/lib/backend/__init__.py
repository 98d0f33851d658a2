"""sp4d-blender backend: SP4D generation and rigging, run as a subprocess of Blender.

Never imports bpy. The only boundary with Blender is the job folder (see docs/job-folder.md)
and the JSON-lines protocol of ``python -m backend serve`` (see docs/protocol.md).
"""

__version__ = "0.1.0"
