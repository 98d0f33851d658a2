import numpy as np
import pytest

from backend.errors import BackendError
from backend.jobdir import read_png
from backend.parts.decode import decode_parts, find_part_colours
from backend.parts.encoding import part_colours
from backend.sample.degrade import degrade_part_image, swap_part_colour


def _views(job, frames=(0, 1, 2, 3), views=range(13)):
    parts = np.stack([read_png(job.view_image("parts", v, t)) for t in frames for v in views])
    rgb = np.stack([read_png(job.view_image("rgb", v, t)) for t in frames for v in views])
    return parts, rgb


def test_encoding_is_spatial_and_distinct(creature):
    cols = part_colours(creature.vertices, creature.labels).astype(int)
    assert cols.shape == (len(creature.names), 3)
    assert cols.min() >= 15 and cols.max() <= 240  # never white, never black
    d = np.linalg.norm(cols[:, None] - cols[None], axis=2) + 1000 * np.eye(len(cols))
    assert d.min() > 22  # every pair separable by the decoder's merge distance
    # the head (+X end) is redder than the tail (-X end): colour follows position
    assert cols[creature.names.index("head"), 0] > cols[creature.names.index("tail_tip"), 0]


def test_decode_clean_oracle_finds_every_part(generated_job, creature):
    parts, rgb = _views(generated_job)
    labels, colours = decode_parts(parts, rgb)
    assert len(colours) == len(creature.names)
    # every decoded colour is close to one true colour (one-to-one)
    true = part_colours(creature.vertices, creature.labels).astype(float)
    d = np.linalg.norm(colours[:, None].astype(float) - true[None], axis=2)
    assert sorted(d.argmin(1).tolist()) == list(range(len(true)))
    assert d.min(1).max() < 6
    # background stays background
    assert (labels[parts.min(-1) >= 250] == 0).mean() > 0.99


def test_decode_degraded_is_consistent_across_views(generated_job, creature):
    parts, rgb = _views(generated_job, frames=(0,))
    clean, _ = decode_parts(parts, rgb)
    rng = np.random.default_rng(0)
    true = part_colours(creature.vertices, creature.labels)
    parts = parts.copy()
    parts[5] = swap_part_colour(parts[5], true[1], true[2])  # one view disagrees about one part
    noisy, cols = decode_parts(np.stack([degrade_part_image(p, rng) for p in parts]), rgb)
    assert abs(len(cols) - len(creature.names)) <= 1
    fg = (clean > 0) & (noisy > 0)
    # same labelling up to a renaming: map each noisy label to its majority clean label
    agree = 0
    for k in np.unique(noisy[fg]):
        agree += np.bincount(clean[fg][noisy[fg] == k]).max()
    assert agree / fg.sum() > 0.9


def test_tiny_spurious_cluster_is_merged():
    rng = np.random.default_rng(1)
    a = rng.normal([40, 80, 200], 3, (5000, 3))
    b = rng.normal([200, 60, 40], 3, (5000, 3))
    junk = rng.normal([120, 220, 120], 3, (5, 3))  # 0.05 % of the pixels
    c = find_part_colours(np.clip(np.concatenate([a, b, junk]), 0, 255))
    assert len(c) == 2


def test_no_foreground_is_a_clear_error():
    with pytest.raises(BackendError, match="no foreground"):
        decode_parts(np.full((2, 16, 16, 3), 255, np.uint8))
