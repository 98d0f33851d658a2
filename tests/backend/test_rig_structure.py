"""The rig's pieces on their own: welding, the part structure (root, tree, symmetry), names, joint
pivots from motion, bone roll, piece keeping in lifting, and the benchmark's metrics."""

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.rig import metrics
from backend.rig.joints import fit_pivot, mirror_joints
from backend.rig.naming import bone_names
from backend.rig.structure import (
    MID,
    between,
    build_structure,
    contacts,
    cross_part_pairs,
    detach_strays,
    end_to_end,
    find_symmetry,
    hang_by_ends,
    orient,
    part_stats,
    spanning_tree,
)
from backend.rig.weld import weld
from backend.sample.assets import QUADRUPED, build_asset, build_separate, split_seams
from backend.sample.catalogue import ASSETS, CENTAUR, HAND, HUMANOID, SPIDER, WOLF


def _structure(asset):
    v, f, back = weld(asset.vertices.astype(float), asset.faces)
    lab = np.zeros(len(v), int)
    lab[back] = asset.labels
    return build_structure(v, f, lab, len(asset.names)), v, lab


@pytest.fixture(scope="module")
def humanoid():
    return build_asset(HUMANOID, 90, blend=0.02)


def test_weld_joins_seams_and_keeps_the_users_vertices(humanoid):
    split, origin = split_seams(humanoid, charts=30)
    assert len(split.vertices) > len(humanoid.vertices)
    v, f, back = weld(split.vertices, split.faces)
    assert len(v) == len(humanoid.vertices) and len(back) == len(split.vertices)
    assert np.allclose(v[back], split.vertices)  # every input vertex maps to its own position
    from scipy.sparse.csgraph import connected_components

    from backend.rig.mesh import adjacency

    assert connected_components(adjacency(len(split.vertices), split.faces))[0] > 1
    assert connected_components(adjacency(len(v), f))[0] == 1


def test_weld_keeps_pieces_touching_face_to_face_apart():
    """A lid resting on its box: the coincident vertices of the lid's underside and the box's top
    face away from each other and stay two surfaces (each keeps its own part)."""
    asset = ASSETS["chest_lid_piece"][0]()
    v, f, back = weld(asset.vertices.astype(float), asset.faces)
    lab = np.full(len(v), -1)
    lab[back] = asset.labels
    shared = np.bincount(back, minlength=len(v)) > 1
    mixed = np.zeros(len(v), bool)
    mixed[back[asset.labels != lab[back]]] = True
    assert not (shared & mixed).any()  # welded regardless of normals, 1,504 vertices would join lid and box


def test_broad_contact_hinge_lies_on_the_patch_edge_the_motion_names():
    """A lid resting on its box: a broad contact; given a rough pivot from the lid's own motion
    (here the true hinge, 10 % of the diagonal off), the hinge is the middle of the patch's edge
    on that side, within 2 % of the diagonal of the true hinge."""
    from backend.rig.joints import broad_contact, contact_vertices, hinge_on_contact

    asset = ASSETS["chest_lid_piece"][0]()
    v, f, back = weld(asset.vertices.astype(float), asset.faces)
    lab = np.zeros(len(v), int)
    lab[back] = asset.labels
    diag = float(np.linalg.norm(np.ptp(v, 0)))
    patch = contact_vertices(v, lab, 1, 0)
    assert broad_contact(v, lab, 1, patch)
    rough = asset.joints[1] + np.array([0.08, -0.05, 0.09]) * diag
    frames = np.zeros((1, 1, 4, 4), np.uint16)
    h = hinge_on_contact(v, lab, 1, patch, frames, np.ones((1, 1), bool), None, 2, towards=rough)
    assert np.linalg.norm(h - asset.joints[1]) < 0.02 * diag


@pytest.mark.parametrize("name", ["chest_lid_piece", "chest", "humanoid", "spider"])
def test_broad_joints_are_lids_and_stout_segments_never_limbs(name):
    """broad_joints: a lid resting on its box touches it over its whole length (its pivot may lie
    at the patch's edge, so the tracker pulls it less); so may a short stout segment of a spine
    (its contact spans it); a limb segment (a sided part) touches its parent by a ring."""
    from backend.rig.joints import broad_joints

    asset = ASSETS[name][0]()
    v, f, back = weld(asset.vertices.astype(float), asset.faces)
    lab = np.zeros(len(v), int)
    lab[back] = asset.labels
    patches, is_broad = broad_joints(v, lab, asset.parents)
    assert set(patches) == set(np.nonzero(asset.parents >= 0)[0])
    names = {asset.names[k] for k in np.nonzero(is_broad)[0]}
    assert ("lid" in names) == ("lid" in asset.names)
    assert not {n for n in names if n.endswith((".L", ".R"))}, names


@pytest.mark.parametrize("name,root", [("humanoid", "hips"), ("wolf", "hips"), ("spider", "cephalothorax"),
                                       ("dragon", "body"), ("bird", "body"), ("desk_lamp", "base"),
                                       ("robot_arm", "base"), ("chest", "box"), ("starfish", "disc"),
                                       ("centaur", "hips")])
def test_root_and_tree_come_from_structure_not_size(name, root):
    a = ASSETS[name][0]()
    s, _, _ = _structure(a)
    assert a.names[s.root] == root
    assert np.array_equal(s.parent, a.parents), [(a.names[k], a.names[s.parent[k]]) for k in range(len(a.names))
                                                 if s.parent[k] != a.parents[k]]


def test_a_forearm_lying_against_the_hips_hangs_from_the_upper_arm():
    """A figure standing with its arms down (as scans stand): each forearm touches the hips along
    its length more than its elbow touches the upper arm; the tree still runs chest → upper arm →
    forearm → hand (hang_by_ends)."""
    a = ASSETS["scanned"][0]()
    s, _, _ = _structure(a)
    assert np.array_equal(s.parent, a.parents), [(a.names[k], a.names[s.parent[k]]) for k in range(len(a.names))
                                                 if s.parent[k] != a.parents[k]]


def test_hang_by_ends_moves_only_a_part_hung_by_its_side():
    """Parts 0 hips, 1 chest, 2 upper arm (on the chest), 3 forearm, 4 hand; the forearm hangs
    from the hips by its side (its end factor 0.2) and touches the upper arm at its end: it moves
    there. Not when the upper arm hangs from the hips too (siblings: nothing says which hangs
    from which), when that contact is a stray (under a quarter of the hips'), when the forearm
    is the larger part, or across the mirror plane."""
    parent = np.array([-1, 0, 1, 0, 3])
    w = np.zeros((5, 5))
    w[0, 1] = w[1, 2] = w[0, 3] = w[2, 3] = w[3, 4] = 10.0
    w = w + w.T
    ends = np.ones((5, 5))
    ends[3, 0] = 0.2
    areas = np.array([10.0, 10.0, 2.0, 2.0, 1.0])
    side = np.zeros(5)
    assert hang_by_ends(parent, w, ends, areas, side).tolist() == [-1, 0, 1, 2, 3]
    assert hang_by_ends(np.array([-1, 0, 0, 0, 3]), w, ends, areas, side).tolist() == [-1, 0, 0, 0, 3]
    stray = w.copy()
    stray[2, 3] = stray[3, 2] = 2.0
    assert hang_by_ends(parent, stray, ends, areas, side).tolist() == parent.tolist()
    assert hang_by_ends(parent, w, ends, np.array([10.0, 10.0, 2.0, 20.0, 1.0]), side).tolist() == parent.tolist()
    assert hang_by_ends(parent, w, ends, areas, np.array([0, 0, 1, -1, -1])).tolist() == parent.tolist()


def test_the_largest_part_is_not_the_root():
    """A helmeted head with more vertices than anything else (as on an artist's humanoid): the
    hips stay the root and the spine runs upwards from them."""
    big_head = [p if p[0] != "head" else ("head", "neck", [("ellipsoid", (0, -0.01, 1.74), (0.2, 0.22, 0.2))],
                                          p[3]) for p in HUMANOID]
    a = build_asset(big_head, 90, blend=0.02)
    sizes = np.bincount(a.labels, minlength=len(a.names))
    assert a.names[int(np.argmax(sizes))] == "head"
    s, _, _ = _structure(a)
    assert a.names[s.root] == "hips" and np.array_equal(s.parent, a.parents)


def test_a_flat_body_whose_abdomen_rides_higher_keeps_its_head_in_front():
    """A spider whose abdomen sits higher than its cephalothorax (by more than 15 % of its height,
    the body still far longer than it rises) is a horizontal body: its head end is the end its legs
    hang from, not the higher one (an artist's spider took its raised abdomen for a head and hung
    the body from the head)."""
    a = build_asset(SPIDER, 120, blend=0.01)
    v = a.vertices.astype(float).copy()
    v[a.labels == a.names.index("abdomen"), 2] += 0.12
    vw, f, back = weld(v, a.faces)
    lab = np.zeros(len(vw), int)
    lab[back] = a.labels
    s = build_structure(vw, f, lab, len(a.names))
    front = a.names.index("cephalothorax")
    assert s.root == front and s.head == front
    assert bone_names(s, vw, lab)[a.names.index("abdomen")] != "head"


def test_left_limbs_never_hang_from_right_ones():
    a = build_asset(WOLF, 90, blend=0.02)
    s, _, _ = _structure(a)
    assert s.mirror_axis == 1  # the wolf faces +X: its mirror plane is y = 0, not the front/back one
    for k, p in enumerate(s.parent):
        if p >= 0:
            assert s.side[k] * s.side[p] >= 0
    assert (s.side[[a.names.index(n) for n in ("hips", "chest", "neck", "head", "tail")]] == MID).all()



def test_a_part_no_vertex_carries_leaves_the_tree_whole():
    """A part index that no vertex carries (a decoded part the lifting gave nothing): the others'
    tree is unchanged and it hangs as a leaf; it used to fail looking for its closest vertex."""
    a = build_asset(HUMANOID, 40, blend=0.02)
    v, f, back = weld(a.vertices.astype(float), a.faces)
    lab = np.zeros(len(v), int)
    lab[back] = a.labels
    n = len(a.names)
    s = build_structure(v, f, lab, n + 1)
    assert np.array_equal(s.parent[:n], a.parents) and n not in s.parent
    assert np.isfinite(s.contact_centre).all()


def test_contacts_of_parts_too_small_to_place_keep_their_weight():
    """``between`` weighs a contact by where it lies between the two centroids; a part of a few
    vertices (an artist's low-poly clavicle of 2–4 vertices lying along the chest's top) has no
    centroid that says so, and the factor would hang it from the upper arm: such pairs keep
    their weight, the others are weighed as before."""
    cent = np.array([[0.0, 0, 0], [0.3, 0, 0.2], [0.0, 0, -1.0]])
    centre = np.full((3, 3, 3), np.nan)
    centre[0, 1] = centre[1, 0] = [0.3, 0, 0.1]  # beside the small part, not between the centroids
    centre[0, 2] = centre[2, 0] = [0.4, 0, -0.5]  # off the line between body and its other part
    w = np.array([[0.0, 2, 3], [2, 0, 0], [3, 0, 0]])
    plain = between(w, cent, centre)
    kept = between(w, cent, centre, small=np.array([False, True, False]))
    assert plain[0, 1] < 0.5 * w[0, 1] and kept[0, 1] == w[0, 1] == kept[1, 0]
    assert kept[0, 2] == plain[0, 2] < w[0, 2]

@pytest.fixture(scope="module")
def spider():
    a = build_asset(SPIDER, 120, blend=0.01)
    v, f, back = weld(a.vertices.astype(float), a.faces)
    lab = np.zeros(len(v), int)
    lab[back] = a.labels
    return a, v, f, lab


def test_a_leg_tips_stray_piece_on_the_next_legs_tip_goes_back(spider):
    """Noisy views leave a piece of one leg tip's label at the end of the neighbouring leg's tip
    (the spider at 2D mIoU 0.85): the tree then hangs one tip from the other. The stray piece
    touches none of its part's neighbours in the tree of the main pieces: it joins the part it
    lies on, and the tree is right again."""
    a, v, f, lab = spider
    n = len(a.names)
    tip, other = a.names.index("leg1.002.L"), a.names.index("leg2.002.L")
    pts = v[lab == other]
    end = pts[np.argmax(np.linalg.norm(pts - a.joints[other], axis=1))]
    dirty = lab.copy()
    dirty[(lab == other) & (np.linalg.norm(v - end, axis=1) < 0.7 * np.linalg.norm(end - a.joints[other]))] = tip
    assert not np.array_equal(build_structure(v, f, dirty, n).parent, a.parents)  # the stray piece bites
    clean = detach_strays(v, f, dirty, n)
    assert (detach_strays(v, f, lab, n) == lab).all()  # the true parts have no strays
    assert (clean[dirty != lab] == other).mean() > 0.75  # (a few vertices of the tip are a separate mesh piece)
    assert np.array_equal(build_structure(v, f, clean, n).parent, a.parents)


def test_a_hind_leg_bleeding_onto_the_abdomen_still_hangs_from_the_body(spider):
    """The hind legs' labels bled onto the abdomen they pass (noisy views) make their contact with
    it larger than with the cephalothorax they hang from: the plain maximum spanning tree hangs
    them from the abdomen; the body's mid parts first, contacts that lie between the two parts
    and the two sides pooled keep them on the cephalothorax."""
    from scipy.spatial import cKDTree

    a, v, f, lab = spider
    n = len(a.names)
    ceph, abdomen = a.names.index("cephalothorax"), a.names.index("abdomen")
    dirty = lab.copy()
    for leg in ("leg4.L", "leg4.R"):
        k = a.names.index(leg)
        d, _ = cKDTree(v[lab == k]).query(v)
        dirty[(lab == abdomen) & (d < 0.03)] = k
    w, _ = contacts(v, f, dirty, n)
    leg = a.names.index("leg4.L")
    assert w[leg, abdomen] > w[leg, ceph]
    cent, areas, _ = part_stats(v, f, dirty, n)
    _, side, _ = find_symmetry(v, cent, areas)
    assert orient(spanning_tree(w, side, mid_first=False), ceph)[leg] == abdomen
    s = build_structure(v, f, dirty, n)
    assert s.root == ceph and np.array_equal(s.parent, a.parents)


def test_a_mirror_pair_is_a_pair_both_ways():
    """A gripper's right finger whose labels took a piece of the hand has its centroid near the
    mirror plane: it is still the left finger's partner, on the other side (a left finger may
    then never hang from it)."""
    rng = np.random.default_rng(0)
    half = np.c_[rng.random(2000) ** 3, rng.random(2000), rng.random(2000)]  # lopsided along X
    body = np.concatenate([half, half * [1, -1, 1]])  # symmetric about y = 0 (diagonal 2.45)
    centroids = np.array([[0.5, 0, 0.9], [0.5, 0.1, 0.5], [0.5, -0.045, 0.5]])  # part 2 within 2 % of the plane
    axis, side, mirror_of = find_symmetry(body, centroids, np.ones(3))
    assert axis == 1 and list(mirror_of) == [-1, 2, 1] and list(side) == [MID, 1, -1]


def test_joints_are_symmetrised_about_the_mirror_plane(humanoid):
    """Each side's pivot comes from its own views and labels: a mirror pair's joints become the
    mean of one and the other's reflection, a mid part's joint lies on the plane."""
    s, v, lab = _structure(humanoid)
    names = humanoid.names
    left, right, neck = names.index("upper_arm.L"), names.index("upper_arm.R"), names.index("neck")
    assert s.mirror_axis == 0 and s.mirror_of[left] == right
    plane = 0.5 * (v[:, 0].min() + v[:, 0].max())
    truth = humanoid.joints.astype(float)
    noisy = truth.copy()
    noisy[left] += [0.0, 0.0, 0.04]  # the left shoulder found 4 cm too high
    noisy[neck] += [0.03, 0.0, 0.0]  # the neck off the plane
    out = mirror_joints(noisy, s.parent, s.mirror_of, s.side, s.mirror_axis, plane)
    assert np.allclose(out[left], truth[left] + [0, 0, 0.02], atol=2e-3)
    assert np.allclose(out[right], truth[right] + [0, 0, 0.02], atol=2e-3)
    assert abs(out[neck, 0] - plane) < 1e-9 and np.allclose(out[neck, 1:], truth[neck, 1:])
    assert np.array_equal(mirror_joints(noisy, s.parent, s.mirror_of, s.side, None, 0.0), noisy)


def test_separate_low_poly_pieces_join_by_proximity():
    a = build_separate(HUMANOID, 8)
    s, _, _ = _structure(a)
    assert a.names[s.root] == "hips" and np.array_equal(s.parent, a.parents)


def test_bone_names_read_like_rigify(humanoid):
    s, v, lab = _structure(humanoid)
    names = bone_names(s, v, lab)
    assert names == humanoid.names  # the catalogue humanoid is named as a rigger would
    q = build_asset(QUADRUPED, 64)
    s, v, lab = _structure(q)
    got = dict(zip(q.names, bone_names(s, v, lab), strict=True))
    assert got["body"] == "torso" and got["head"] == "head" and got["neck"] == "neck"
    assert got["leg_front.L"] == "upper_arm.L" and got["shin_back.R"] == "shin.R"  # Rigify's quadruped legs
    assert got["tail"] == "tail" and got["tail_tip"] == "tail.001"
    assert len(set(got.values())) == len(got)


def test_a_limbs_tip_whose_twin_was_lost_keeps_its_side():
    """The right front shin merged into its thigh (two close colours decoded as one, as the
    horse's right ear's tip): the left shin has no mirror twin, so the structure calls it a mid
    part; it still hangs from a left limb and is named for the left side."""
    q = build_asset(QUADRUPED, 64)
    lost, into = q.names.index("shin_front.R"), q.names.index("leg_front.R")
    lab = np.where(q.labels == lost, into, q.labels)
    lab = np.where(lab > lost, lab - 1, lab)
    s, v, wl = _structure(dataclasses.replace(q, labels=lab, names=[n for n in q.names if n != "shin_front.R"]))
    shin = [n for n in q.names if n != "shin_front.R"].index("shin_front.L")
    assert s.side[shin] == MID and s.side[s.parent[shin]] != MID
    assert bone_names(s, v, wl)[shin].endswith(".L")


def test_a_centaurs_human_arms_are_arms_and_its_front_legs_keep_their_own_names():
    """Limbs that do not reach the ground are wings where the spine runs horizontally at them and
    arms where it runs upright: a centaur's human torso rises from a horse's body (the spine as a
    whole is horizontal), so its arms are named as arms, and the front legs, whose quadruped
    names the arms now hold, read front_thigh… rather than upper_arm.001."""
    a = build_asset(CENTAUR, 100, blend=0.015)
    s, v, lab = _structure(a)
    assert np.array_equal(s.parent, a.parents)
    got = dict(zip(a.names, bone_names(s, v, lab), strict=True))
    assert [got[k] for k in ("upper_arm.L", "forearm.L", "hand.L")] == ["upper_arm.L", "forearm.L", "hand.L"]
    assert [got[k] for k in ("front_thigh.R", "front_shin.R")] == ["front_thigh.R", "front_shin.R"]
    assert [got[k] for k in ("hind_thigh.L", "hips", "head")] == ["thigh.L", "hips", "head"]
    dragon = ASSETS["dragon"][0]()
    s, v, lab = _structure(dragon)
    assert dict(zip(dragon.names, bone_names(s, v, lab), strict=True))["wing.L"] == "wing.L"


def test_spider_legs_are_numbered_front_to_back_per_side():
    a = build_asset(SPIDER, 160, blend=0.01)
    s, v, lab = _structure(a)
    got = dict(zip(a.names, bone_names(s, v, lab), strict=True))
    assert got["cephalothorax"] == "torso" and got["abdomen"] == "abdomen"
    assert got["leg1.L"] == "leg1.01.L" and got["leg4.002.R"] == "leg4.03.R"


def test_fingers_fused_side_by_side_hang_from_the_palm_and_read_as_digits():
    """A hand's fingers fused along their sides (more shared mesh edges with the next finger than
    with the palm, and that contact lies between their centroids too): each finger's base still
    hangs from the palm, the contact at its end, and the digits are named as Rigify names them."""
    a = build_asset(HAND, 130, blend=0.004)
    s, v, lab = _structure(a)
    i = a.names.index
    assert s.contact[i("index"), i("middle")] > s.contact[i("index"), i("palm")]  # the hard case
    for digit in ("thumb", "index", "middle", "ring", "pinky"):
        assert s.parent[i(digit)] == i("palm"), (digit, a.names[s.parent[i(digit)]])
    got = dict(zip(a.names, bone_names(s, v, lab), strict=True))
    assert got["palm"] == "palm" and got["thumb"] == "thumb.01" and got["thumb.002"] == "thumb.03"
    assert [got[d] for d in ("index", "middle", "ring", "pinky")] == ["f_index.01", "f_middle.01", "f_ring.01",
                                                                      "f_pinky.01"]
    assert got["index.001"] == "f_index.02"


def test_a_tapered_limb_attached_by_its_wide_end_keeps_its_contact():
    """A cone hung by its wide end from the middle of a long body's side: the contact is at the
    limb's end (its factor near 1) although the cone's centroid sits near that end and the
    contact is mid-side for the body; measured from the centroid to the farthest point either
    way it read as half-way down the limb (0.38)."""
    spec = [("body", None, [("capsule", (-0.5, 0, 0), (0.5, 0, 0), 0.1)], (0, 0, 0)),
            ("limb", "body", [("cone", (0, 0, 0.05), (0, 0, 0.6), 0.08, 0.01)], (0, 0, 0.08))]
    a = build_asset(spec, 80, blend=0.01)
    v = a.vertices.astype(float)
    w, centre = contacts(v, a.faces, a.labels, 2)
    cent, _, _ = part_stats(v, a.faces, a.labels, 2)
    assert w[0, 1] > 0
    assert end_to_end(w, v, a.faces, a.labels, cent, centre)[0, 1] / w[0, 1] > 0.85


def test_a_creatures_five_fingered_hand_is_named_as_digits(humanoid):
    """A thumb and four fingers (two segments each) hung from the humanoid's left hand: the arm's
    chain stops at the hand (it would otherwise run on through the largest finger and make the
    upper arm a shoulder), the digits are named from the thumb's side, the right hand keeps its
    name."""
    s, v, lab = _structure(humanoid)
    hand, p0 = humanoid.names.index("hand.L"), len(humanoid.names)
    c0 = s.centroids[hand]
    digits = [(c0 + [0, -0.05, -0.02], np.array([0, -0.96, -0.29]))]  # the thumb points forward
    digits += [(c0 + [0, y, -0.06], np.array([0, 0, -1.0])) for y in (-0.03, -0.01, 0.01, 0.03)]
    parent, cent, contact = [], [], []
    for base, d in digits:
        for j in range(2):
            parent.append(hand if j == 0 else p0 + len(parent) - 1)
            cent.append(base + d * (0.03 * j + 0.015))
            contact.append(base + d * 0.03 * j)
    n = len(parent)
    s = dataclasses.replace(
        s, parent=np.concatenate([s.parent, parent]), side=np.concatenate([s.side, [s.side[hand]] * n]),
        mirror_of=np.concatenate([s.mirror_of, [-1] * n]), centroids=np.concatenate([s.centroids, cent]),
        contact_centre=np.concatenate([s.contact_centre, contact]), areas=np.concatenate([s.areas, [1e-4] * n]),
        sizes=np.concatenate([s.sizes, [10] * n]), contact=np.pad(s.contact, ((0, n), (0, n))))
    names = bone_names(s, v, lab)
    assert names[:p0] == humanoid.names
    assert names[p0:] == ["thumb.01.L", "thumb.02.L", "f_index.01.L", "f_index.02.L", "f_middle.01.L",
                          "f_middle.02.L", "f_ring.01.L", "f_ring.02.L", "f_pinky.01.L", "f_pinky.02.L"]


def _motion(axis_per_frame, pivot, angles):
    rel = np.tile(np.eye(4), (len(angles) + 1, 1, 1))
    for t, (ax, ang) in enumerate(zip(axis_per_frame, angles, strict=True), start=1):
        r = Rotation.from_rotvec(np.asarray(ax) / np.linalg.norm(ax) * np.radians(ang)).as_matrix()
        rel[t, :3, :3] = r
        rel[t, :3, 3] = pivot - r @ pivot
    return rel


def test_pivot_of_a_ball_joint_is_found_exactly():
    pivot = np.array([0.3, -0.2, 0.5])
    rel = _motion([(1, 0, 0), (0.8, 0.6, 0), (0.2, 0.5, 1)], pivot, [10, 20, 30])
    j = fit_pivot(rel, contact=pivot + [0.1, 0.05, 0], max_shift=1.0)
    assert j.method == "motion" and np.allclose(j.position, pivot, atol=3e-3)  # the contact's pull is slight


def test_pivot_of_a_hinge_is_the_point_of_its_axis_nearest_the_contact():
    pivot = np.array([0.0, 0.35, 0.6])  # a lid's hinge along X
    rel = _motion([(1, 0, 0)] * 3, pivot, [8, 16, 25])
    contact = np.array([0.1, 0.0, 0.6])  # the middle of the lid's underside
    j = fit_pivot(rel, contact, max_shift=1.0)
    assert j.method == "motion" and j.axis is not None
    assert np.allclose(j.position, [0.1, 0.35, 0.6], atol=5e-3)


def test_a_still_joint_keeps_its_contact():
    pivot = np.array([0.0, 0.3, 0.0])
    j = fit_pivot(_motion([(0, 0, 1)] * 3, pivot, [0.5, 1, 2]), np.zeros(3), max_shift=1.0)
    assert j.method == "contact" and np.allclose(j.position, 0)


def test_bone_roll_points_the_x_axis_along_the_hinge():
    from backend.rig.skeleton import roll_for_x_axis

    rng = np.random.default_rng(0)
    for _ in range(20):
        head, d, x = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
        y = d / np.linalg.norm(d)
        roll = roll_for_x_axis(head, head + d, x)
        # Blender's bone matrix: the shortest turn of +Y onto the bone, then the roll about it
        r0 = Rotation.align_vectors([y], [[0, 1.0, 0]])[0].as_matrix()
        xb = Rotation.from_rotvec(y * roll).as_matrix() @ r0[:, 0]
        want = x - (x @ y) * y
        assert np.allclose(xb, want / np.linalg.norm(want), atol=1e-6)


def test_lifting_keeps_a_piece_the_views_support():
    from backend.rig.lift import clean_labels
    from backend.rig.mesh import adjacency

    # a strip of 40 vertices (each linked to the next two): part 0, part 1, a second piece of part 0, part 1
    n = 40
    adj = adjacency(n, np.array([[i, i + 1, i + 2] for i in range(n - 2)]))
    lab = np.r_[np.zeros(10), np.ones(10), np.zeros(10), np.ones(10)].astype(int)
    votes = np.zeros((n, 2))
    votes[np.arange(n), lab] = 1.0
    kept = clean_labels(adj, lab, 2, smooth_iters=0, votes=votes)
    assert (kept == lab).all()  # the second piece of part 0 is clearly seen: it stays
    weak = votes.copy()
    weak[20:30] = [0.4, 0.6]  # the views say part 1 there: the piece joins its neighbour
    assert (clean_labels(adj, lab, 2, smooth_iters=0, votes=weak)[20:30] == 1).all()


def test_smoothing_leaves_a_thin_part_the_views_are_sure_of():
    from backend.rig.lift import clean_labels
    from backend.rig.mesh import adjacency

    # a strip of 30 vertices (each linked to the next two): part 0, a part 1 two vertices wide, part 0
    n = 30
    adj = adjacency(n, np.array([[i, i + 1, i + 2] for i in range(n - 2)]))
    lab = np.zeros(n, int)
    lab[14:16] = 1
    votes = np.zeros((n, 2))
    votes[np.arange(n), lab] = 200.0  # hundreds of pixels each: a low-poly mesh's vertices
    assert (clean_labels(adj, lab, 2, votes=votes) == lab).all()  # a 1-ring majority would erase part 1
    assert (clean_labels(adj, lab, 2) == 0).all()  # without votes it does
    few = votes / 100.0  # two pixels each: too few to be sure, so smoothing decides
    assert (clean_labels(adj, lab, 2, votes=few) == 0).all()
    split = votes.copy()
    split[14:16] = [90.0, 110.0]  # the views split between the parts there: smoothed
    assert (clean_labels(adj, lab, 2, votes=split) == 0).all()


def test_lifting_keeps_a_tiny_piece_every_view_names():
    from backend.rig.lift import clean_labels, view_agreement
    from backend.rig.mesh import adjacency

    # a strip of 30 vertices: part 0, part 1, a two-vertex second piece of part 1 inside part 0
    n = 30
    adj = adjacency(n, np.array([[i, i + 1, i + 2] for i in range(n - 2)]))
    lab = np.zeros(n, int)
    lab[5:10] = 1
    lab[20:22] = 1
    votes = np.zeros((n, 2))
    votes[np.arange(n), lab] = 500.0
    all_views = view_agreement(np.tile(lab, (6, 1)), lab)  # six views, each naming every vertex's part
    assert all_views.all()
    assert (clean_labels(adj, lab, 2, votes=votes, agreed=all_views) == lab).all()
    assert (clean_labels(adj, lab, 2, votes=votes)[20:22] == 0).all()  # too small to count by its vertices
    tops = np.tile(lab, (6, 1))
    tops[0, 20:22] = 0  # one view names part 0 there
    tops[1:, 21] = -1  # or too few views see it
    assert not view_agreement(tops, lab)[20:22].any()
    assert (clean_labels(adj, lab, 2, votes=votes, agreed=view_agreement(tops, lab))[20:22] == 0).all()


def test_cross_part_pairs_are_the_close_pairs_of_different_parts(humanoid):
    """The per-part trees find exactly the pairs one tree's query_pairs finds, less those within
    a part."""
    from scipy.spatial import cKDTree

    from backend.rig.structure import surface_samples

    v = humanoid.vertices.astype(float)
    pts, lab = surface_samples(v, humanoid.faces, humanoid.labels, count=4000)
    reach = 0.015 * float(np.linalg.norm(np.ptp(v, 0)))
    every = cKDTree(pts).query_pairs(reach, output_type="ndarray")
    want = {tuple(sorted(p)) for p in every[lab[every[:, 0]] != lab[every[:, 1]]].tolist()}
    got = cross_part_pairs(pts, lab, reach)
    assert len(got) == len(want) > 100
    assert {tuple(sorted(p)) for p in got.tolist()} == want


def test_a_moved_face_buffer_is_the_moved_projection_rendered_again(humanoid):
    """lift.moved_buffer (one lookup) labels the pixels as rendering the similarity-moved
    projection again does: the same outline within a pixel, and under each pixel the same part's
    vertex nearest to it (its face may be the next one over where faces are a pixel or two wide)."""
    from backend.raster import face_index_buffer, nearest_corner
    from backend.rig.lift import moved_buffer

    v = humanoid.vertices.astype(float)
    front = v[:, [0, 2]] * [1, -1]  # x right, z up, looking along +y
    uv = (front - front.min(0)) / np.ptp(front).max() * 400 + 80
    depth = v[:, 1] + 10
    s, c0, c1 = 1.03, np.array([300.0, 290.0]), np.array([302.4, 287.1])
    uv_moved = c1 + s * (uv - c0)
    again = face_index_buffer(uv_moved, depth, humanoid.faces, (576, 576))
    moved = moved_buffer(face_index_buffer(uv, depth, humanoid.faces, (576, 576)), s, c0, c1)
    covered = again >= 0
    assert 0 < ((moved >= 0) != covered).sum() < 0.03 * covered.sum()  # the outline, a pixel at most
    both = covered & (moved >= 0)
    _, _, near_again = nearest_corner(again, uv_moved, humanoid.faces, both)
    _, _, near_moved = nearest_corner(moved, uv_moved, humanoid.faces, both)
    assert (humanoid.labels[near_again] == humanoid.labels[near_moved]).mean() > 0.98
    assert (near_again == near_moved).mean() > 0.7


def test_metrics_match_parts_and_score_the_tree():
    gt = np.r_[np.zeros(10), np.ones(10), np.full(10, 2)].astype(int)
    pred = np.r_[np.ones(10), np.zeros(10), np.full(10, 2)].astype(int)  # renamed parts
    assert metrics.part_miou(pred, gt) == 1.0
    best, owner = metrics.matching(pred, gt, 3, 3)
    assert list(best) == [1, 0, 2] and list(owner) == [1, 0, 2]
    gt_parents = np.array([-1, 0, 1])
    assert metrics.tree_correctness(np.array([1, -1, 0]), best, owner, gt_parents) == (True, 2, 2)
    assert metrics.tree_correctness(np.array([-1, 0, 0]), best, owner, gt_parents) == (False, 1, 2)


def test_a_limb_touching_two_parts_about_as_much_may_hang_from_either_on_its_side(humanoid):
    """The parent candidates that the clip's motion may choose between (reparent.candidates): a
    sided child's other contacts at least CLOSE × its parent's, on its side or the middle, never
    below it; a mid child's only mid ones; and rehung moves a child with its subtree and gives its
    joint the new contact's centre where the two touch."""
    from backend.rig.reparent import candidates
    from backend.rig.structure import LEFT, RIGHT

    s, _, _ = _structure(humanoid)
    names = list(humanoid.names)
    hand = names.index("hand.L")
    w = s.pair_weight.copy()
    forearm, chest, thigh_r = s.parent[hand], names.index("chest"), names.index("thigh.R")
    for other in (chest, thigh_r, names.index("hand.R")):  # a hand touching the chest and the other side
        w[hand, other] = w[other, hand] = w[hand, forearm]
    s2 = dataclasses.replace(s, pair_weight=w)
    got = {a for c, a in candidates(s2) if c == hand}
    assert chest in got and thigh_r not in got and names.index("hand.R") not in got
    assert s.side[hand] == LEFT and s.side[thigh_r] == RIGHT
    for c, a in candidates(s2):
        assert not s2.subtree(c)[a] and (s2.side[c] != MID or s2.side[a] == MID) and c not in s2.spine
    moved = s2.rehung({forearm: chest})
    assert moved.parent[forearm] == chest and moved.parent[hand] == forearm
    assert moved.subtree(chest)[hand] and not moved.subtree(s.parent[forearm])[hand]
    assert np.allclose(moved.contact_centre[forearm], s.contact_centre[forearm])  # the two do not touch
    thigh_l = names.index("thigh.L")
    assert s.contact[thigh_l, thigh_r] > 0  # the thighs do
    assert np.allclose(s.rehung({thigh_l: thigh_r}).contact_centre[thigh_l], s.pair_centre[thigh_l, thigh_r])


def test_arms_hung_from_the_head_go_back_to_the_chest_they_turn_about(humanoid):
    """Arms that the contacts hung from the head (as the chibi Knight's, whose shoulders touch its
    oversized head as much as its chest) go back to the chest: relative to the chest the arm's own
    motion turns about one point, relative to the head it also carries the head's turn
    (reparent.motion_parents; the clip's motion here is the oracle's, about the true pivots).
    Both sides move together, and the right tree stays as it is."""
    from backend.rig.reparent import in_doubt, motion_parents
    from backend.sample.oracle import part_motion

    s, _, _ = _structure(humanoid)
    names = list(humanoid.names)
    chest, head = names.index("chest"), names.index("head")
    arms = [names.index("upper_arm.L"), names.index("upper_arm.R")]
    assert all(s.parent[k] == chest for k in arms)
    w = s.pair_weight.copy()
    for k in arms:  # the shoulders touch the head as much as the chest
        w[k, head] = w[head, k] = w[k, chest]
    right = dataclasses.replace(s, pair_weight=w)
    wrong = right.rehung({k: head for k in arms})
    world = np.stack([part_motion(humanoid.parents, humanoid.joints.astype(float), t, 4) for t in range(4)])
    assert set(arms) <= set(in_doubt(wrong))
    assert motion_parents(wrong, world, world) == {k: chest for k in arms}
    assert motion_parents(right, world, world) == {}


def test_the_root_follows_the_limbs_the_motion_moves_along_the_spine(humanoid):
    """A creature's root is the spine part, from the tail end, that limbs hang from; where the
    parent check moves limbs to another spine part (a dragon's shoulders, which touched its
    oversized head more than its torso, the root then its head), the tree turns to hang from
    the part the limbs now hang from, and the edges between the two roots turn round with their
    contact centres; moved back, the tree is the first one again."""
    s, _, _ = _structure(humanoid)
    names = list(humanoid.names)
    hips, spine, chest = names.index("hips"), names.index("spine"), names.index("chest")
    thighs = [names.index("thigh.L"), names.index("thigh.R")]
    assert s.root == hips and s.parent[spine] == hips and s.parent[chest] == spine
    up = s.rehung({k: chest for k in thighs})
    assert up.root == chest and up.parent[chest] == -1
    assert up.parent[spine] == chest and up.parent[hips] == spine
    np.testing.assert_allclose(up.contact_centre[spine], s.pair_centre[spine, chest])
    np.testing.assert_allclose(up.contact_centre[hips], s.pair_centre[hips, spine])
    np.testing.assert_allclose(up.contact_centre[chest], s.centroids[chest])
    back = up.rehung({k: hips for k in thighs})
    assert back.root == hips
    np.testing.assert_array_equal(back.parent, s.parent)
    np.testing.assert_allclose(back.contact_centre, s.contact_centre)


def test_one_sides_failed_free_fit_does_not_outvote_the_other_sides_clear_answer(humanoid):
    """The parent check weighs a mirror pair together; a small part's free fit that flipped on
    one side (the held-out dragon's right shoulder turned 165-171° in its free fit) explains its
    motion badly relative to every candidate, and summed residuals let that side's large ones
    drown the other side's clear answer. Each side's residuals count relative to its own
    parent's (a geometric mean of the two sides' ratios)."""
    from backend.rig.reparent import motion_parents
    from backend.sample.oracle import part_motion

    s, _, _ = _structure(humanoid)
    names = list(humanoid.names)
    chest, head = names.index("chest"), names.index("head")
    arm_l, arm_r = names.index("upper_arm.L"), names.index("upper_arm.R")
    w = s.pair_weight.copy()
    for k in (arm_l, arm_r):
        w[k, head] = w[head, k] = w[k, chest]
    wrong = dataclasses.replace(s, pair_weight=w).rehung({arm_l: head, arm_r: head})
    world = np.stack([part_motion(humanoid.parents, humanoid.joints.astype(float), t, 4) for t in range(4)])
    free = world.copy()
    flip = np.eye(4)
    for t in range(1, 4):  # the right arm's free fit spun round, a little more each frame, and drifted
        flip[:3, :3] = Rotation.from_rotvec([0.0, 2.6 + 0.2 * t, 0.9]).as_matrix()
        pivot = humanoid.joints[arm_r]
        flip[:3, 3] = pivot - flip[:3, :3] @ pivot + [0.1 * t, -0.05 * t * t, 0.07]
        free[t, arm_r] = world[t, arm_r] @ flip
    # summed, the right side's residuals (0.17 relative to the chest, 0.16 to the head) drown the
    # left's (0.0001 against 0.0063) and the arms stayed on the head
    assert motion_parents(wrong, world, free) == {arm_l: chest, arm_r: chest}



def test_a_head_with_its_own_limbs_stays_the_head_and_the_chest_stays_the_chest(humanoid):
    """Parts hanging from the head on both sides (a horse's ears, a spider's pincers) make the
    head a hub; it must not take the chest's place, or every spine part before it reads
    ``spine.00n`` (the held-out Quaternius horse: its chest and four neck segments were
    ``spine.001`` to ``spine.005``)."""
    s, v, lab = _structure(humanoid)
    names = list(humanoid.names)
    assert bone_names(s, v, lab)[:5] == ["hips", "spine", "chest", "neck", "head"]
    parent = s.parent.copy()
    for side in ("L", "R"):  # two sided parts on the head: its ears, as far as the names go
        parent[names.index(f"hand.{side}")] = names.index("head")
    got = bone_names(dataclasses.replace(s, parent=parent), v, lab)
    assert got[:5] == ["hips", "spine", "chest", "neck", "head"]
    assert got[names.index("hand.L")] == "ear.L" and got[names.index("hand.R")] == "ear.R"


def test_short_forelimbs_on_a_horizontal_body_are_arms_not_wings():
    """A limb that does not reach the ground on a horizontal body is a wing (a bird's, a
    dragon's) only where it reaches as far as the legs; a T-rex's short forelimbs (the held-out
    Quaternius T-rex's were named ``wing``, ``wing.001``, ``wing.002``) are arms."""
    arms = {"leg_front.L": [("capsule", (0.32, 0.17, 0.62), (0.42, 0.22, 0.5), 0.07)],
            "shin_front.L": [("capsule", (0.42, 0.22, 0.5), (0.54, 0.22, 0.46), 0.05)]}
    arms.update({k.replace(".L", ".R"): [(sh, (a[0], -a[1], a[2]), (b[0], -b[1], b[2]), r) for sh, a, b, r in v]
                 for k, v in arms.items()})
    trex = [(n, par, arms.get(n, shapes), pivot if n not in arms else arms[n][0][1])
            for n, par, shapes, pivot in QUADRUPED]
    a = build_asset(trex, 64)
    s, v, lab = _structure(a)
    got = dict(zip(a.names, bone_names(s, v, lab), strict=True))
    front = [got[k] for k in ("leg_front.L", "shin_front.L", "leg_front.R")]
    assert front == ["upper_arm.L", "forearm.L", "upper_arm.R"]
    assert got["leg_back.L"] == "thigh.L" and got["shin_back.R"] == "shin.R"
    bird = ASSETS["bird"][0]()
    s, v, lab = _structure(bird)
    assert dict(zip(bird.names, bone_names(s, v, lab), strict=True))["wing.L"] == "wing.L"
