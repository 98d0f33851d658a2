"""The job folder: the one boundary between Blender and the backend, defined once for both.

``layout``: file names, views, stages, format version, atomic writes; ``arrays``: the npz files'
keys, dtypes and shapes; ``settings``: job.json's settings with their types and allowed values.
Standard library and numpy only, so that Blender imports it without torch (the add-on through
sp4d_blender/jobfolder.py; the extension zip carries this folder beside sp4d_blender/ and
backend/). Documented in docs/job-folder.md.
"""
