"""PK batch sampling (P identities x K instances), camera-aware.

The PK semantics follow Cluster Contrast's RandomMultipleGallerySampler: per identity an anchor
image, then K-1 more images preferably from cameras other than the anchor's ("reference": exactly
its rule; "distinct": distinct images before repeats). An epoch is a pure function of (labels,
camids, seed, epoch and the other arguments), so resuming needs nothing but the epoch number.
"""

import numpy as np
import torch

RULES = ("reference", "distinct")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64).ravel()


def _distinct(n: np.ndarray, m: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Row i: m[i] <= min(k, n[i]) distinct uniform draws from range(n[i]), in random order, then -1.

    Sequential draws without replacement: the t-th draw is a rank among the values not yet taken,
    mapped to a value by stepping over the taken ones in increasing order. O(rows * k^2), whatever n.
    """
    out = np.full((len(n), k), -1, np.int64)
    taken = np.full((len(n), k), np.iinfo(np.int64).max)  # taken values, sorted ascending
    for t in range(k):
        r = rng.integers(0, np.maximum(n - t, 1))
        for j in range(t):
            r += taken[:, j] <= r
        live = t < m
        out[live, t] = r[live]
        taken[live, t] = r[live]
        taken.sort(axis=1)
    return out


def _id_stream(rng: np.random.Generator, c: int, p: int, iters: int) -> np.ndarray:
    """(iters, p) identity numbers: back-to-back shuffled permutations of range(c), so every identity
    is used about equally; no identity twice in a batch when p <= c."""
    out = np.empty(iters * p, np.int64)
    filled = 0
    while filled < len(out):
        perm = rng.permutation(c)
        head = filled % p  # ids already in the batch this permutation starts inside
        if head and p <= c:
            clash = np.isin(perm, out[filled - head : filled])
            perm = np.concatenate([perm[~clash], perm[clash]])  # clashing ids go later in the cycle
        take = min(c, len(out) - filled)
        out[filled : filled + take] = perm[:take]
        filled += take
    return out.reshape(iters, p)


class PKSampler:
    """Iterable over `num_iterations` batches of dataset indices (np.int64 arrays) for one epoch.

    A global batch holds P * K indices (P = num_ids, K = num_instances), made of per-identity *groups*
    whose first index is the anchor. Labels -1 are never yielded. The epoch is drawn from numpy's
    `default_rng([seed, epoch])`. Two rules (`rule`):

    "reference" (default), Cluster Contrast's RandomMultipleGallerySampler inside its DataLoader
    (batch_size P*K, drop_last) and IterLoader (restart when exhausted). A pass is a fresh random
    permutation of the identities, one group per identity: a uniform anchor, then K-1 images from
    the identity's images in cameras other than the anchor's, without replacement when there are at
    least K of those (K, not K-1) and with replacement when there are 1..K-1 (one other-camera image
    can fill all K-1 places; same-camera images are then never used); only when the identity has no
    other camera, K-1 of its images other than the anchor, drawn the same way (without replacement
    when at least K, else with replacement). A single-image identity is a group of size 1. The groups
    of a pass are concatenated and cut into consecutive batches of P*K; the partial last batch of the
    pass is dropped and the next pass starts a new permutation, so a batch never spans two passes and
    never holds an identity twice. Group sizes are fixed per identity (K, or 1), so a pass gives
    floor(sum of group sizes / (P*K)) batches. Departure: when a pass cannot fill one batch (the
    reference stops with an error), the passes are concatenated without dropping anything and cut
    into batches across pass boundaries (identities may then repeat inside a batch). Batches are not
    aligned to groups: a group may be split between two batches or two ranks.

    "distinct", distinct images first: P distinct identities x K images, identity by identity (K
    consecutive indices per identity, the anchor first); identities cycle through back-to-back
    shuffled permutations across iterations (clashes pushed later), so they are used about equally.
    Per identity: a uniform anchor; then its images from cameras other than the anchor's (without
    replacement); when there are fewer than K-1 of those, all of them plus images from the anchor's
    camera (without replacement); when the identity has fewer than K images, the rest uniformly with
    replacement from all its images. (The reference rule instead repeats other-camera images before
    using same-camera ones.)

    Fewer than P identities: P becomes their number (rounded down to a multiple of world_size; when
    even that is 0, P = world_size), so every "distinct" batch uses all of them (or identities repeat
    inside the batch) and a "reference" batch is P*K images of that smaller P. No identity at all:
    the sampler is empty (len 0).

    Distributed: every rank draws the same global batch from (seed, epoch) and yields its contiguous
    slice of P*K/world_size indices (as DataParallel's chunks), so the global batch stays P x K.
    P must divide by world_size.

    Supervised use (UDA stage 1): pass ground-truth pids as `labels`.
    """

    def __init__(
        self,
        labels,
        camids,
        num_instances=16,
        num_ids=16,
        num_iterations=200,
        seed=0,
        epoch=0,
        rank=0,
        world_size=1,
        rule: str = "reference",
    ):
        labels, camids = _numpy(labels), _numpy(camids)
        if len(labels) != len(camids):
            raise ValueError(f"labels ({len(labels)}) and camids ({len(camids)}) differ in length")
        if num_instances < 1 or num_ids < 1 or num_iterations < 0:
            raise ValueError("num_instances and num_ids must be >= 1, num_iterations >= 0")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if num_ids % world_size:
            raise ValueError(
                f"num_ids (P={num_ids}) must be divisible by world_size ({world_size}): "
                "each rank takes P/world_size identities of the global batch"
            )
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(map(repr, RULES))}")
        self.rule = rule
        self.k, self.num_iterations, self.seed, self.epoch = num_instances, num_iterations, seed, epoch
        self.rank, self.world_size = rank, world_size
        # Trainable indices sorted by (label, camera): an identity is a block, a camera a sub-block.
        keep = np.flatnonzero(labels >= 0)
        self._order = keep[np.lexsort((camids[keep], labels[keep]))]
        lab, cam = labels[self._order], camids[self._order]
        new_id = np.r_[True, lab[1:] != lab[:-1]][: len(lab)]
        new_cam = new_id | np.r_[True, cam[1:] != cam[:-1]][: len(lab)]
        self._id_start = np.flatnonzero(new_id)
        self._id_size = np.diff(np.r_[self._id_start, len(lab)])
        cam_start = np.flatnonzero(new_cam)
        cam_size = np.diff(np.r_[cam_start, len(lab)])
        self._cam_start = np.repeat(cam_start, cam_size)  # per sorted position: its camera block
        self._cam_end = self._cam_start + np.repeat(cam_size, cam_size)
        c = len(self._id_start)
        self.num_groups = c
        p = num_ids if c >= num_ids else c - c % world_size
        self.p = p if p > 0 else world_size

    def __len__(self) -> int:
        return self.num_iterations if self.num_groups else 0

    def __iter__(self):
        yield from self.batches()

    def batches(self) -> np.ndarray:
        """(len(self), P/world_size * K) int64: this rank's batches of the epoch."""
        glob = self.global_batches()
        width = glob.shape[1] // self.world_size
        return glob[:, self.rank * width : (self.rank + 1) * width]

    def global_batches(self) -> np.ndarray:
        """(len(self), P * K) int64: the batches of all ranks, rank slices side by side."""
        if not len(self):
            return np.zeros((0, self.p * self.k), np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.rule == "reference":
            return self._reference(rng)
        ids = _id_stream(rng, self.num_groups, self.p, self.num_iterations).ravel()
        start, size = self._id_start[ids], self._id_size[ids]
        anchor = start + rng.integers(0, size)  # positions in the sorted order
        cs, ce = self._cam_start[anchor], self._cam_end[anchor]
        n_other, n_same = size - (ce - cs), ce - cs - 1
        k = self.k - 1
        m_other = np.minimum(k, n_other)
        m_same = np.minimum(k - m_other, n_same)
        s0, c0, c1, a0 = start[:, None], cs[:, None], ce[:, None], anchor[:, None]
        # Draws are ranks among the candidates; turn them into sorted positions. (Unused -1 draws
        # turn into junk positions that np.where below never picks.)
        other = s0 + _distinct(n_other, m_other, k, rng)
        other += np.where(other >= c0, c1 - c0, 0)  # skip the anchor's camera block
        t = np.arange(k)
        same = _distinct(n_same, m_same, k, rng)
        same = c0 + np.take_along_axis(same, np.clip(t - m_other[:, None], 0, None), 1)
        same += same >= a0  # skip the anchor
        rep = s0 + rng.integers(0, size[:, None], (len(ids), k))
        rest = np.where(t < m_other[:, None], other, np.where(t < (m_other + m_same)[:, None], same, rep))
        return self._order[np.concatenate([anchor[:, None], rest], 1)].reshape(self.num_iterations, -1)

    def _reference(self, rng: np.random.Generator) -> np.ndarray:
        """The "reference" rule: whole passes of groups, cut into batches of P*K (see the class)."""
        k, width, c = self.k, self.p * self.k, self.num_groups
        group_size = np.where(self._id_size > 1, k, 1)
        per_pass_images = int(group_size.sum())
        per_pass = per_pass_images // width  # batches of one pass (its partial last one dropped)
        need = self.num_iterations * width
        passes = -(-self.num_iterations // per_pass) if per_pass else -(-need // per_pass_images)
        ids = np.concatenate([rng.permutation(c) for _ in range(passes)])
        start, size = self._id_start[ids], self._id_size[ids]
        anchor = start + rng.integers(0, size)  # positions in the sorted order
        cs, ce = self._cam_start[anchor], self._cam_end[anchor]
        n_other = size - (ce - cs)
        has_other = n_other > 0
        # Candidates: the other cameras' images, or (single camera) the identity's images but the
        # anchor. Either way the identity's block minus one contiguous run [skip, skip + skip_len).
        n = np.where(has_other, n_other, size - 1)
        skip = np.where(has_other, cs, anchor)[:, None]
        skip_len = np.where(has_other, ce - cs, 1)[:, None]
        wide = n >= k  # at least K candidates: K-1 without replacement, else with replacement
        drawn = _distinct(n, np.where(wide, k - 1, 0), k - 1, rng)
        repeat = rng.integers(0, np.maximum(n, 1)[:, None], (len(ids), k - 1))
        pos = start[:, None] + np.where(wide[:, None], drawn, repeat)
        pos += np.where(pos >= skip, skip_len, 0)
        rows = np.concatenate([anchor[:, None], pos], 1)
        stream = self._order[rows[np.arange(k) < group_size[ids][:, None]]]  # groups back to back
        if per_pass:
            stream = stream.reshape(passes, per_pass_images)[:, : per_pass * width]
        return stream.ravel()[:need].reshape(self.num_iterations, width)



def max_occurrences(labels: np.ndarray, batches: np.ndarray) -> np.ndarray:
    """Per batch (row of sample indices), how often its most frequent label occurs."""
    if batches.size == 0:
        return np.zeros(batches.shape[0], np.int64)
    values = np.unique(labels[batches], return_inverse=True)[1].reshape(batches.shape)
    width = int(values.max()) + 1
    counts = np.bincount((values + width * np.arange(batches.shape[0])[:, None]).ravel(),
                         minlength=width * batches.shape[0])
    return counts.reshape(batches.shape[0], width).max(axis=1)
