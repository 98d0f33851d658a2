"""Readable bone names from the skeleton's topology and position, in Rigify's style.

- A creature (structure.Structure with a spine chain): the root is ``torso``, or ``hips`` when a
  second limb hub (``chest``) lies towards the head; spine parts towards the head are ``spine``,
  ``spine.001``…, then ``neck``… after the last hub (a head's own limbs, ears or pincers, make it
  no hub), and ``head`` for a raised or bulky end, or the spine's head end with no legs of its
  own; parts beyond the root on the other end are ``tail``, ``tail.001``… (a first one as bulky
  as half the root: ``abdomen``)
- Limbs (chains of sided parts hanging from a spine part): legs reach the ground, arms and wings
  do not. Two legs: ``thigh, shin, foot, toe``; two arms: ``upper_arm, forearm, hand`` (a short
  first segment is the ``shoulder``); four legs: the front pair ``upper_arm, forearm, hand,
  f_toe`` (``front_thigh, front_shin, front_foot`` when arms hold those names, as on a centaur),
  the hind pair ``thigh, shin, foot, r_toe`` (Rigify's quadrupeds); more legs: ``leg1.01,
  leg1.02, …`` from front to back; other limbs of a creature with legs: ``wing`` where the spine
  runs horizontally at the limb (a bird's, a dragon's body) and the limb reaches as far as the
  legs, arms where it runs upright (a centaur's human torso) or the limb is shorter (a T-rex's);
  limbs on the head: ``ear``. Sides get ``.L`` / ``.R`` for the
  creature's own left and right (from where the head, or the feet, point).
- Digits: a part with four or five chains hanging from it, one of which (the thumb) points away
  from the others, is a hand: ``thumb.01``, ``thumb.02``… and, from the thumb's side,
  ``f_index.01``, ``f_middle.01``, ``f_ring.01``, ``f_pinky.01``… (Rigify's finger names); a lone
  hand's root is the ``palm``.
- A base standing on the ground (lamps, robot arms, chests): ``base``; chains from it ``arm``,
  ``arm.001``…, a hub with paired children ``hand`` and those ``finger``, a bulky end ``head``, a
  leaf lying on the base over a broad contact ``lid``.
- Anything else: ``bone``, ``bone.001``…
Names are unique: repeats get Blender-style ``.001`` numbering.
"""

from __future__ import annotations

import numpy as np

from .structure import MID, Structure, limb_hubs

LEG_2 = ["thigh", "shin", "foot", "toe"]
ARM_2 = ["upper_arm", "forearm", "hand", "finger"]
FRONT_4 = ["upper_arm", "forearm", "hand", "f_toe"]
HIND_4 = ["thigh", "shin", "foot", "r_toe"]
FRONT_4_WITH_ARMS = ["front_thigh", "front_shin", "front_foot", "f_toe"]  # arms hold upper_arm… (a centaur)


def _children(parent: np.ndarray, k: int) -> list[int]:
    return [int(c) for c in np.nonzero(parent == k)[0]]


def _chain(parent: np.ndarray, start: int, areas: np.ndarray) -> list[int]:
    """start, then its largest child repeatedly (the limb's continuation)."""
    out = [start]
    while True:
        kids = _children(parent, out[-1])
        if not kids:
            return out
        out.append(max(kids, key=lambda c: areas[c]))


def _numbered(base: str, i: int, sided: str = "") -> str:
    return f"{base}{sided}" if i == 0 else f"{base}.{i:03d}{sided}"


def left_side(s: Structure, vertices: np.ndarray) -> int:
    """+1 or -1: the sign, along the mirror axis, of the creature's left (facing its head, or
    where its feet point; Blender's -Y front otherwise)."""
    if s.mirror_axis is None:
        return 1
    ax = s.mirror_axis
    other = 1 - ax
    facing = np.zeros(3)
    height = np.ptp(vertices[:, 2])
    if s.head >= 0:
        d = s.centroids[s.head] - s.centroids[s.root]
        if abs(d[other]) > 0.5 * max(abs(d[2]), 1e-9) and abs(d[other]) > 0.05 * height:
            facing[other] = np.sign(d[other])
    if not facing.any():  # upright: feet point forwards
        feet = [k for k in range(len(s.parent)) if s.side[k] != MID and not _children(s.parent, k)
                and s.centroids[k, 2] < vertices[:, 2].min() + 0.15 * height and s.parent[k] >= 0]
        if feet:
            d = np.mean([s.centroids[k] - s.contact_centre[k] for k in feet], axis=0)
            if abs(d[other]) > 1e-3 * height:
                facing[other] = np.sign(d[other])
    if not facing.any():
        facing[1 if ax == 0 else 0] = -1.0 if ax == 0 else 1.0
    left = np.cross([0.0, 0.0, 1.0], facing)
    return 1 if left[ax] >= 0 else -1


def bone_names(s: Structure, vertices: np.ndarray, labels: np.ndarray) -> list[str]:
    """A unique readable name for every part (see the module doc)."""
    n = len(s.parent)
    names: list[str | None] = [None] * n
    left = left_side(s, vertices)
    suffix = ["" if s.side[k] == MID else (".L" if s.side[k] * left > 0 else ".R") for k in range(n)]
    for k in range(n):  # a part without a twin below a sided one (a limb's tip whose twin was lost) is on its side
        a = k
        while suffix[k] == "" and s.parent[a] >= 0 and s.side[a] == MID and a not in s.spine:
            a = s.parent[a]
        if s.side[a] != MID:
            suffix[k] = suffix[a]
    z0, height = vertices[:, 2].min(), max(np.ptp(vertices[:, 2]), 1e-12)

    def low(k):
        return vertices[labels == k, 2].min() < z0 + 0.12 * height if (labels == k).any() else False

    if s.base:
        _name_base(s, names, suffix)
    elif s.spine:
        _name_creature(s, names, suffix, low, vertices, labels, height)
    elif _name_digits(s, names, suffix, s.root):
        names[s.root] = "palm"
    for k in range(n):  # whatever is left
        if names[k] is None:
            names[k] = "bone" + suffix[k]
    return _unique(names)


def _name_base(s: Structure, names: list, suffix: list) -> None:
    names[s.root] = "base"
    for c in _children(s.parent, s.root):
        chain = _chain(s.parent, c, s.areas)
        if len(chain) == 1 and not _children(s.parent, c) and s.contact[c, s.root] > 0 and \
                s.centroids[c, 2] > s.centroids[s.root, 2]:
            names[c] = "lid" if s.areas[c] > 0.3 * s.areas[s.root] else "head"
            continue
        i = 0
        for k in chain:
            sided = [x for x in _children(s.parent, k) if s.side[x] != MID]
            if len(sided) >= 2:
                names[k] = "hand"
                for x in sided:
                    for j, y in enumerate(_chain(s.parent, x, s.areas)):
                        names[y] = _numbered("finger", j, suffix[y])
                break
            if k == chain[-1] and i > 0 and s.areas[k] > s.areas[chain[-2]]:
                names[k] = "head"
            else:
                names[k] = _numbered("arm", i)
                i += 1


def _name_creature(s: Structure, names: list, suffix: list, low, vertices: np.ndarray, labels: np.ndarray,
                   height: float) -> None:
    chain = s.spine  # tail end ... head
    r = chain.index(s.root) if s.root in chain else 0
    ahead = chain[r + 1:]
    head = ahead[-1] if ahead else None
    is_head = head is not None and (
        s.centroids[head, 2] - s.centroids[s.root, 2] > 0.15 * height
        or (len(ahead) >= 2 and s.areas[head] > s.areas[ahead[-2]])
        or (head == s.head and not any(low(x) for c in _children(s.parent, head) if s.side[c] != MID
                                       for x in _chain(s.parent, c, s.areas))))  # no legs: not a thorax
    # spine parts limbs hang from; a head's own (ears, horns, pincers) make it no chest
    hubs = [k for k in limb_hubs(chain, s.parent, s.side) if not (is_head and k == head)]
    upper_hubs = [k for k in hubs if chain.index(k) > r]
    names[s.root] = "hips" if upper_hubs else "torso"
    for i, k in enumerate(reversed(chain[:r])):  # beyond the root: the tail (a bulky one is an abdomen)
        names[k] = "abdomen" if i == 0 and s.areas[k] > 0.5 * s.areas[s.root] else _numbered("tail", i)
    last_hub = chain.index(upper_hubs[-1]) if upper_hubs else r
    spine_i = neck_i = 0
    for k in ahead:
        if k == head and is_head:
            names[k] = "head"
        elif upper_hubs and k == upper_hubs[-1]:
            names[k] = "chest"
        elif chain.index(k) < last_hub:
            names[k] = _numbered("spine", spine_i)
            spine_i += 1
        elif is_head:
            names[k] = _numbered("neck", neck_i)
            neck_i += 1
        else:
            names[k] = _numbered("spine", spine_i)
            spine_i += 1
    # limbs: sided chains hanging from the spine
    limbs = [(k, c) for k in chain for c in _children(s.parent, k) if s.side[c] != MID]
    chains = {c: _chain(s.parent, c, s.areas) for _, c in limbs}
    legs = [c for _, c in limbs if any(low(x) for x in chains[c])]
    n_legs = len(legs)

    def reach(c: int) -> float:  # how far limb c's chain reaches from its joint
        pts = vertices[np.isin(labels, chains[c])]
        return float(np.linalg.norm(pts - s.contact_centre[c], axis=1).max()) if len(pts) else 0.0

    leg_reach = min((reach(c) for c in legs), default=0.0)
    axis = chain[-1] if chain else s.root
    along = s.centroids[axis] - s.centroids[chain[0]] if len(chain) > 1 else np.array([1.0, 0, 0])
    along = along / max(np.linalg.norm(along), 1e-12)
    front_score = {c: float(s.centroids[c] @ along) for c in legs}

    def upright(hub: int) -> bool:
        """Whether the spine runs upright at ``hub`` (between its neighbours in the chain): a biped's
        chest, a centaur's human torso on its horizontal body. Non-leg limbs hung there are arms;
        on a horizontal stretch (a bird's or a dragon's body) they are wings."""
        if len(chain) < 2:  # a one-part spine: its direction is unknown, the body's is taken
            return abs(along[2]) > 0.7
        i = chain.index(hub)
        d = s.centroids[chain[min(i + 1, len(chain) - 1)]] - s.centroids[chain[max(i - 1, 0)]]
        return abs(d[2]) > 0.7 * max(np.linalg.norm(d), 1e-12)

    leg_order = sorted(legs, key=lambda c: -front_score[c])  # front first
    arms = any(c not in legs and hub != s.head and upright(hub) for hub, c in limbs)  # a centaur's
    for hub, c in limbs:
        limb = chains[c]
        if c not in legs:  # an arm's chain follows its largest child: it ends at a hand with digits
            cut = next((j for j, k in enumerate(limb) if _digits(s, names, k) is not None), None)
            if cut is not None:
                limb = chains[c] = limb[:cut + 1]
        if c in legs:
            if n_legs <= 2:
                seg = LEG_2
            elif n_legs == 4:
                front = leg_order.index(c) < 2
                seg = (FRONT_4_WITH_ARMS if arms else FRONT_4) if front else HIND_4
            else:
                pair = leg_order.index(c) // 2 + 1
                for j, k in enumerate(limb):
                    names[k] = f"leg{pair}.{j + 1:02d}{suffix[k]}"
                continue
        elif n_legs and hub == s.head:
            seg = ["ear"]
        elif n_legs and not upright(hub) and reach(c) >= leg_reach:  # a T-rex's short arms are arms
            seg = ["wing"]
        else:
            seg = ARM_2
            if len(limb) >= 4:
                seg = ["shoulder"] + ARM_2
        for j, k in enumerate(limb):
            names[k] = (seg[j] if j < len(seg) else _numbered(seg[-1], j - len(seg) + 1)) + suffix[k] \
                if len(seg) > 1 else _numbered(seg[0], j, suffix[k])
        for k in limb:  # side branches of a limb (fingers off a hand)
            if c not in legs:
                _name_digits(s, names, suffix, k)
            for x in _children(s.parent, k):
                if names[x] is None:
                    for j, y in enumerate(_chain(s.parent, x, s.areas)):
                        names[y] = _numbered("finger", j, suffix[y])


FINGERS = ["f_index", "f_middle", "f_ring", "f_pinky"]


def _digits(s: Structure, names: list, hub: int, spread_deg: float = 25.0) -> list[tuple[str, list[int]]] | None:
    """[(prefix, chain), …] when the unnamed chains hanging from ``hub`` are a hand's digits: four
    or five, one of them (the thumb) pointing away from the others (its direction from the hub's
    centroid to its tip more than ``spread_deg`` from their mean, which all the others are
    within); the fingers are ordered along the line through their bases from the thumb's side.
    None otherwise."""
    kids = [c for c in _children(s.parent, hub) if names[c] is None]
    if len(kids) not in (4, 5):
        return None
    chains = [_chain(s.parent, c, s.areas) for c in kids]
    dirs = np.array([s.centroids[c[-1]] - s.centroids[hub] for c in chains])
    length = np.linalg.norm(dirs, axis=1)
    if (length < 1e-9).any():  # a chain ending at the hub's centroid points nowhere
        return None
    dirs /= length[:, None]

    def angle(i):  # of chain i from the others' mean direction, and the others' largest
        rest = np.delete(dirs, i, axis=0)
        mean = rest.sum(0) / max(np.linalg.norm(rest.sum(0)), 1e-12)
        ang = np.degrees(np.arccos(np.clip(np.concatenate([dirs[i:i + 1], rest]) @ mean, -1, 1)))
        return ang[0], ang[1:].max()

    scores = [angle(i) for i in range(len(chains))]
    t = int(np.argmax([a for a, _ in scores]))
    if scores[t][0] <= spread_deg or scores[t][1] > spread_deg:
        return None
    fingers = [i for i in range(len(chains)) if i != t]
    base = np.array([s.contact_centre[chains[i][0]] for i in fingers])
    d = base - base.mean(0)
    line = np.linalg.svd(d, full_matrices=False)[2][0]  # the line through the finger bases
    if (s.contact_centre[chains[t][0]] - base.mean(0)) @ line > 0:
        line = -line  # counted from the thumb's side
    order = [fingers[i] for i in np.argsort(d @ line)]
    return [("thumb", chains[t])] + [(prefix, chains[i]) for prefix, i in zip(FINGERS, order, strict=False)]


def _name_digits(s: Structure, names: list, suffix: list, hub: int) -> bool:
    """Name the chains hanging from ``hub`` as a hand's digits (``_digits``); True when named."""
    digits = _digits(s, names, hub)
    if digits is None:
        return False
    for prefix, chain in digits:
        for j, k in enumerate(chain):
            names[k] = f"{prefix}.{j + 1:02d}{suffix[k]}"
    return True


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n not in seen:
            seen[n] = 0
            out.append(n)
            continue
        seen[n] += 1
        base, side = (n[:-2], n[-2:]) if n.endswith((".L", ".R")) else (n, "")
        cand = f"{base}.{seen[n]:03d}{side}"
        while cand in seen:
            seen[n] += 1
            cand = f"{base}.{seen[n]:03d}{side}"
        seen[cand] = 0
        out.append(cand)
    return out
