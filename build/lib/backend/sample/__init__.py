"""The bundled procedural sample (a creature with a ground-truth rig) and its parts oracle."""
