"""From part labels to a rig: lifting to the mesh, skeleton, harmonic skinning weights."""
