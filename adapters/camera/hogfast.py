"""OpenCV's HOG people detection (``HOGDescriptor.detectMultiScale``) recompiled for small crops.

The camera pipeline runs HOG on many small crops (a tracked person's neighbourhood is about 60x80
pixels once scaled, a new motion blob's about 100x150), five to fifteen searches per analysed
frame on a busy entrance. This module computes exactly what OpenCV computes there, compiled with
numba, about twice as fast on those sizes:

* the block weights factor by axis (a Gaussian over the block times bilinear cell weights), so
  each pixel's two orientation votes are summed along its row into the blocks across that hold it,
  then down the blocks' rows a whole row of blocks at a time, instead of into every block and cell
  one pixel at a time through a block cache;
* a window's blocks in one block row lie side by side in memory in the order of the SVM weights
  (reordered once), so a window's score is 30 contiguous dot products that vectorise;
* the whole pyramid (resize, padding, gradients, blocks, scores) and the grouping run in one
  compiled call per search.

The arithmetic follows OpenCV's: the gamma table, the colour channel with the largest gradient
(ties broken as its vector code breaks them), its fast arctangent, reflected borders, the
pyramid's level sizes and ``INTER_LINEAR_EXACT`` resize (bit for bit), L2-Hys, and
``HOGDescriptor.groupRectangles`` with its clipping. The boxes are the same and the scores agree
to float rounding; `tests/unit/test_camera_hogfast.py` checks both against cv2 on rendered frames.

Only what the detector uses is supported: 8-bit BGR or grey images, 2x2 cells per block moved one
cell at a time, unsigned gradients, L2-Hys, a window stride across that is a whole number of cells,
and a linear SVM.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numba import njit

__all__ = ["FastHog"]

# OpenCV's fast arctangent (degrees, [0, 360)): a 7th-order polynomial in float32
_P1 = np.float32(0.9997878412794807 * (180 / math.pi))
_P3 = np.float32(-0.3258083974640975 * (180 / math.pi))
_P5 = np.float32(0.1555786518463281 * (180 / math.pi))
_P7 = np.float32(-0.04432655554792128 * (180 / math.pi))
_EPS = np.float32(2.220446049250313e-16)
_DEG2RAD = np.float32(math.pi / 180)


def _jit(**options):
    """numba's njit, cached on disk beside this module (or under $NUMBA_CACHE_DIR). Where no cache
    location is writable (a read-only install, no writable home) numba refuses to cache at all: then
    the kernels are compiled in memory at each start instead (~12 s) rather than failing the import."""

    def decorate(fn):
        try:
            return njit(**options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(**dict(options, cache=False))(fn)

    return decorate


_JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")
# fastmath lets the compiler reorder float sums (scores move by ~1e-6); error_model="numpy": a float
# division by zero gives inf instead of raising, so the loops carry no exception branches and vectorise.
# The per-pixel gradient code keeps IEEE arithmetic (no fused multiply-add): OpenCV picks the colour
# channel by comparing magnitudes, and ties (swapped dx/dy) must break the same way; so do the resize
# and the rounding of boxes, which must match OpenCV's bit for bit.
_EXACT = dict(_JIT, fastmath=False)


@_jit(**_EXACT)
def _select(lum, dxo, dyo):
    """Per pixel of the padded image, the x and y derivatives of the colour channel with the
    largest gradient (OpenCV's rule: channel 2 over 1 only when strictly larger, then 0 unless
    beaten). `lum`: the gamma table applied to the image padded by one more pixel than the HOG
    padding, rows of interleaved channels: shape (h + 2, (w + 2) * channels)."""
    gh, gw = dxo.shape
    cn = lum.shape[1] // (gw + 2)
    for y in range(gh):
        up = lum[y]
        mid = lum[y + 1]
        dn = lum[y + 2]
        ox = dxo[y]
        oy = dyo[y]
        if cn == 1:
            for x in range(gw):
                ox[x] = mid[x + 2] - mid[x]
                oy[x] = dn[x + 1] - up[x + 1]
            continue
        for x in range(gw):
            dx = mid[3 * x + 8] - mid[3 * x + 2]
            dy = dn[3 * x + 5] - up[3 * x + 5]
            dx1 = mid[3 * x + 7] - mid[3 * x + 1]
            dy1 = dn[3 * x + 4] - up[3 * x + 4]
            m2 = dx * dx + dy * dy
            m1 = dx1 * dx1 + dy1 * dy1
            take2 = m2 > m1
            dx = dx if take2 else dx1
            dy = dy if take2 else dy1
            mb = m2 if take2 else m1
            dx0 = mid[3 * x + 6] - mid[3 * x]
            dy0 = dn[3 * x + 3] - up[3 * x + 3]
            keep = mb > dx0 * dx0 + dy0 * dy0
            ox[x] = dx if keep else dx0
            oy[x] = dy if keep else dy0


@_jit(**_EXACT)
def _votes(dxa, dya, g, q, nbins):
    """Per pixel: the magnitude split between the two nearest of `nbins` unsigned orientation bins
    (g[0], g[1]) and those bins (q[0], q[1]), with OpenCV's fast arctangent."""
    n = dxa.shape[0]
    angle_scale = np.float32(nbins / math.pi)
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    nb = np.int32(nbins)
    for i in range(n):
        dx = dxa[i]
        dy = dya[i]
        mag = np.sqrt(dx * dx + dy * dy)
        ax = abs(dx)
        ay = abs(dy)
        flat = ax >= ay
        c = (ay if flat else ax) / ((ax if flat else ay) + _EPS)
        c2 = c * c
        p = (((_P7 * c2 + _P5) * c2 + _P3) * c2 + _P1) * c
        a = p if flat else np.float32(90.0) - p
        a = np.float32(180.0) - a if dx < zero else a
        a = np.float32(360.0) - a if dy < zero else a
        ang = (a * _DEG2RAD) * angle_scale - half
        fl = np.floor(ang)
        ang = ang - fl
        g[0, i] = mag * (one - ang)
        g[1, i] = mag * ang
        h = np.int32(fl)
        h = h + nb if h < 0 else (h - nb if h >= nb else h)
        q[0, i] = np.uint8(h)
        h2 = h + np.int32(1)
        q[1, i] = np.uint8(h2 if h2 < nb else 0)


@_jit(**_JIT)
def _row_sums(g, q, gh, gw, cell, nbins, ax):
    """Per pixel row: each pixel's two votes added into the (block column, cell column, bin) sums of
    the two blocks across that hold it, weighted by the column part of its block weight."""
    bs = 2 * cell
    nbx = (gw - bs) // cell + 1
    half = 2 * nbins
    # per pixel column: up to 4 (offset into a row's sums, weight) pairs: the two blocks across
    # that hold the column, times their cells that it votes for
    nt = np.zeros(gw, np.int64)
    toff = np.zeros((gw, 4), np.int64)
    twt = np.zeros((gw, 4), np.float32)
    for bx in range(nbx):
        for j in range(bs):
            x = bx * cell + j
            for cx in range(2):
                if ax[j, cx] != 0.0:
                    toff[x, nt[x]] = bx * half + cx * nbins
                    twt[x, nt[x]] = ax[j, cx]
                    nt[x] += 1
    rows = np.zeros((gh, nbx * half), np.float32)
    g0 = g[0]
    g1 = g[1]
    q0 = q[0]
    q1 = q[1]
    for y in range(gh):
        row = rows[y]
        for x in range(gw):
            i = y * gw + x
            v0 = g0[i]
            v1 = g1[i]
            h0 = np.int64(q0[i])
            h1 = np.int64(q1[i])
            for t in range(nt[x]):
                o = toff[x, t]
                wgt = twt[x, t]
                row[o + h0] += v0 * wgt
                row[o + h1] += v1 * wgt
    return rows


@_jit(**_JIT)
def _col_sums(rows, cell, step_y, ay, pad):
    """Per block row: the row sums added down the block's rows, weighted by the row part of the block
    weight, for each cell row: shape (block rows, 2, block columns * 2 * nbins + pad); the `pad`
    trailing zeros let `_scores` run its dot products over whole vector widths."""
    gh, n = rows.shape
    bs = 2 * cell
    nby = (gh - bs) // step_y + 1
    acc = np.zeros((nby, 2, n + pad), np.float32)
    for by in range(nby):
        y0 = by * step_y
        for cy in range(2):
            a = acc[by, cy]
            for i in range(bs):
                wgt = ay[i, cy]
                if wgt != 0.0:
                    r = rows[y0 + i]
                    for t in range(n):  # a whole row of blocks at once: vectorised
                        a[t] += wgt * r[t]
    return acc


@_jit(**_JIT)
def _normalise(acc, n, nbins, thresh):
    """L2-Hys, in place, per block (its cells lie in two runs of 2 * nbins, one per cell row, in
    the first `n` columns): scaled by 1 / (|h| + 0.1 * size), clipped at thresh, scaled to unit
    length (OpenCV's constants)."""
    nby = acc.shape[0]
    half = 2 * nbins
    nbx = n // half
    eps = np.float32(4 * nbins * 0.1)
    for by in range(nby):
        for bx in range(nbx):
            c = bx * half
            # 1-D views indexed from 0 (see `_scores`)
            a0 = acc[by, 0, c:c + half]
            a1 = acc[by, 1, c:c + half]
            s = np.float32(0.0)
            for t in range(half):
                s += a0[t] * a0[t] + a1[t] * a1[t]
            scale = np.float32(1.0) / (np.sqrt(s) + eps)
            s = np.float32(0.0)
            for t in range(half):
                v0 = min(a0[t] * scale, thresh)
                v1 = min(a1[t] * scale, thresh)
                a0[t] = v0
                a1[t] = v1
                s += v0 * v0 + v1 * v1
            scale = np.float32(1.0) / (np.sqrt(s) + np.float32(1e-3))
            for t in range(half):
                a0[t] *= scale
                a1[t] *= scale


@_jit(**_JIT)
def _blocks(g, q, gh, gw, cell, step_y, nbins, axis, thresh, pad):
    """Normalised histograms of every 2x2-cell block whose top-left corner lies on the grid (every
    `cell` px across, every `step_y` px down): shape (block rows, cell row, block columns * cell
    columns * nbins) -- `FastHog` orders the SVM weights to match.

    A pixel's vote for a cell is weighted by a Gaussian over the block times bilinear cell weights;
    both factor into a column part `axis[j, cx]` and a row part `axis[i, cy]` (cells are square: one
    table), so the votes are summed along pixel rows first (`_row_sums`), then down the blocks' rows
    (`_col_sums`)."""
    rows = _row_sums(g, q, gh, gw, cell, nbins, axis)
    acc = _col_sums(rows, cell, step_y, axis, pad)
    _normalise(acc, rows.shape[1], nbins, thresh)
    return acc


@_jit(**_JIT)
def _level(lum, gh, gw, cell, step_y, nbins, axis, thresh, svm, rho, row_step, stride_x, stride_y_rows, nwx, nwy, pad):
    """Every window's score on one padded pyramid level (see `_select` for `lum`)."""
    dxa = np.empty((gh, gw), np.float32)
    dya = np.empty((gh, gw), np.float32)
    _select(lum, dxa, dya)
    g = np.empty((2, gh * gw), np.float32)
    q = np.empty((2, gh * gw), np.uint8)
    _votes(dxa.ravel(), dya.ravel(), g, q, nbins)
    blocks = _blocks(g, q, gh, gw, cell, step_y, nbins, axis, thresh, pad)
    return _scores(blocks, svm, rho, row_step, stride_x, stride_y_rows, nwx, nwy)


@_jit(**_JIT)
def _scores(blocks, svm, rho, row_step, stride_x, stride_y_rows, nwx, nwy):
    """SVM score of every window. In each block row a window's blocks are two contiguous runs of
    `blocks` (one per cell row), and `svm` holds the weights in the same order, so a window is
    2 x (blocks down) dot products of (blocks across) * 2 * nbins floats. Four neighbouring windows
    at a time share each load of the weights (a quarter fewer instructions than one by one)."""
    bpw_y, _, n = svm.shape
    out = np.empty((nwy, nwx), np.float64)
    for wy in range(nwy):
        r0 = wy * stride_y_rows
        wx = 0
        while wx + 4 <= nwx:
            c0 = wx * stride_x
            # each run's dot product in float32, the window's total in float64 (as OpenCV adds
            # its blocks' sums into a double): a window near the threshold falls the same side
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for i in range(bpw_y):
                r = r0 + i * row_step
                for cy in range(2):
                    # 1-D views indexed from 0: no negative-index checks, so the loop vectorises
                    a0 = blocks[r, cy, c0:c0 + n]
                    a1 = blocks[r, cy, c0 + stride_x:c0 + stride_x + n]
                    a2 = blocks[r, cy, c0 + 2 * stride_x:c0 + 2 * stride_x + n]
                    a3 = blocks[r, cy, c0 + 3 * stride_x:c0 + 3 * stride_x + n]
                    b = svm[i, cy]
                    p0 = np.float32(0.0)
                    p1 = np.float32(0.0)
                    p2 = np.float32(0.0)
                    p3 = np.float32(0.0)
                    for t in range(n):
                        v = b[t]
                        p0 += a0[t] * v
                        p1 += a1[t] * v
                        p2 += a2[t] * v
                        p3 += a3[t] * v
                    s0 += p0
                    s1 += p1
                    s2 += p2
                    s3 += p3
            out[wy, wx] = s0 + rho
            out[wy, wx + 1] = s1 + rho
            out[wy, wx + 2] = s2 + rho
            out[wy, wx + 3] = s3 + rho
            wx += 4
        while wx < nwx:
            c0 = wx * stride_x
            s = 0.0
            for i in range(bpw_y):
                r = r0 + i * row_step
                for cy in range(2):
                    a = blocks[r, cy, c0:c0 + n]
                    b = svm[i, cy]
                    p = np.float32(0.0)
                    for t in range(n):
                        p += a[t] * b[t]
                    s += p
            out[wy, wx] = s + rho
            wx += 1
    return out


@_jit(**_EXACT)
def _linear_axis(src_n, dst_n):
    """OpenCV's bit-exact linear resize (INTER_LINEAR_EXACT) along one axis: per destination
    position the source offset and 8-bit weights (exact double arithmetic, weights rounded half to
    even), and the positions [lo, hi) between the replicated borders."""
    ofs = np.zeros(dst_n, np.int64)
    w0 = np.zeros(dst_n, np.int32)
    w1 = np.zeros(dst_n, np.int32)
    scale = 1.0 / (dst_n / src_n)
    lo, hi = 0, dst_n
    for d in range(dst_n):
        f = scale * (d + 0.5) - 0.5
        i = math.floor(f)
        if i >= 0 and src_n > 1:
            if i < src_n - 1:
                ofs[d] = i
                w1[d] = np.int32(np.round((f - i) * 256.0))
                w0[d] = 256 - w1[d]
            else:
                ofs[d] = src_n - 1
                hi = min(hi, d)
        else:
            lo = max(lo, d + 1)
    return ofs, w0, w1, lo, hi


@_jit(**_EXACT)
def _resize(src, dw, dh):
    """cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR_EXACT), bit for bit (8-bit images,
    not an exact 2x reduction, which OpenCV does by area): rows are interpolated across in 8.8
    fixed point, then down, rounded once."""
    h, w, cn = src.shape
    xo, x0, x1, xlo, xhi = _linear_axis(w, dw)
    yo, y0, y1, ylo, yhi = _linear_axis(h, dh)
    n = dw * cn
    oa = np.empty(n, np.int64)
    ob = np.empty(n, np.int64)
    wa = np.empty(n, np.int32)
    wb = np.empty(n, np.int32)
    last = xo[dw - 1]
    for d in range(dw):
        for c in range(cn):
            k = d * cn + c
            if d < xlo:
                oa[k], ob[k], wa[k], wb[k] = c, c, 256, 0
            elif d < xhi:
                oa[k], ob[k], wa[k], wb[k] = xo[d] * cn + c, (xo[d] + 1) * cn + c, x0[d], x1[d]
            else:
                oa[k], ob[k], wa[k], wb[k] = last * cn + c, last * cn + c, 256, 0
    flat = src.reshape(h, w * cn)
    rows = np.empty((h, n), np.int32)
    need = np.zeros(h, np.bool_)
    need[0] = True
    need[h - 1] = True
    for dy in range(ylo, yhi):
        need[yo[dy]] = True
        need[yo[dy] + 1] = True
    for r in range(h):
        if need[r]:
            srow = flat[r]
            out = rows[r]
            for k in range(n):
                out[k] = np.int32(srow[oa[k]]) * wa[k] + np.int32(srow[ob[k]]) * wb[k]
    dst = np.empty((dh, n), np.uint8)
    for dy in range(dh):
        out = dst[dy]
        if dy < ylo or dy >= yhi:
            a = rows[0 if dy < ylo else h - 1]
            for k in range(n):
                out[k] = min(255, (a[k] + 128) >> 8)
        else:
            a = rows[yo[dy]]
            b = rows[yo[dy] + 1]
            ca = y0[dy]
            cb = y1[dy]
            for k in range(n):
                out[k] = min(255, (a[k] * ca + b[k] * cb + 32768) >> 16)
    return dst.reshape(dh, dw, cn)


@_jit(**_JIT)
def _reflect101(p, n):
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@_jit(**_JIT)
def _pad_lum(img, px, py, lut):
    """The gamma table over the image padded by (px + 1, py + 1), borders reflected (OpenCV's
    BORDER_REFLECT_101): shape (h + 2 py + 2, (w + 2 px + 2) * channels), float32."""
    h, w, cn = img.shape
    H, W = h + 2 * py + 2, w + 2 * px + 2
    n = w * cn
    flat = img.reshape(h, n)
    # the table over the image once (each pixel looked up once), then whole rows copied into place
    lum = np.empty((h, n), np.float32)
    for y in range(h):
        s = flat[y]
        d = lum[y]
        for k in range(n):
            d[k] = lut[s[k]]
    out = np.empty((H, W * cn), np.float32)
    lx = (px + 1) * cn
    for y in range(H):
        src = lum[_reflect101(y - py - 1, h)]
        row = out[y]
        mid = row[lx:lx + n]
        for k in range(n):
            mid[k] = src[k]
        for x in range(px + 1):
            a = _reflect101(x - px - 1, w) * cn
            b = _reflect101(w + x, w) * cn
            for c in range(cn):
                row[x * cn + c] = src[a + c]
                row[lx + n + x * cn + c] = src[b + c]
    return out


@_jit(**_EXACT)
def _multiscale(img, scales, px, py, lut, cell, step_y, nbins, axis, thresh, svm, rho, sx, sy, hit, win_w, win_h, pad):
    """Every window at or over `hit` on every pyramid level: rects (x, y, w, h) in the image's
    coordinates, rounded as OpenCV does, and scores."""
    h, w = img.shape[0], img.shape[1]
    nr = 0
    cap = 64
    rects = np.empty((cap, 4), np.int64)
    scores = np.empty(cap, np.float64)
    for li in range(scales.shape[0]):
        s = scales[li]
        lw, lh = int(np.round(w / s)), int(np.round(h / s))
        level = img if (lw == w and lh == h) else _resize(img, lw, lh)
        gw, gh = lw + 2 * px, lh + 2 * py
        nwx = (gw - win_w) // sx + 1
        nwy = (gh - win_h) // sy + 1
        if nwx <= 0 or nwy <= 0:
            continue
        lum = _pad_lum(level, px, py, lut)
        sc = _level(lum, gh, gw, cell, step_y, nbins, axis, thresh, svm, rho, cell // step_y,
                    (sx // cell) * 2 * nbins, sy // step_y, nwx, nwy, pad)
        rw, rh = int(np.round(win_w * s)), int(np.round(win_h * s))
        for wy in range(nwy):
            for wx in range(nwx):
                v = sc[wy, wx]
                if v >= hit:
                    if nr == cap:
                        cap *= 2
                        r2 = np.empty((cap, 4), np.int64)
                        r2[:nr] = rects[:nr]
                        s2 = np.empty(cap, np.float64)
                        s2[:nr] = scores[:nr]
                        rects, scores = r2, s2
                    rects[nr, 0] = int(np.round((wx * sx - px) * s))
                    rects[nr, 1] = int(np.round((wy * sy - py) * s))
                    rects[nr, 2] = rw
                    rects[nr, 3] = rh
                    scores[nr] = v
                    nr += 1
    return rects[:nr], scores[:nr]


@_jit(**_EXACT)
def _group(rects, weights, threshold, eps):
    """HOGDescriptor::groupRectangles: partition into classes of similar rects (numbered by first
    member), average each class, keep its best weight, drop classes of `threshold` members or fewer
    and classes inside a bigger one."""
    n = rects.shape[0]
    parent = np.arange(n)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = rects[i], rects[j]
            delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
            if (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta and abs(a[0] + a[2] - b[0] - b[2]) <= delta
                    and abs(a[1] + a[3] - b[1] - b[3]) <= delta):
                ri = i
                while parent[ri] != ri:
                    ri = parent[ri]
                rj = j
                while parent[rj] != rj:
                    rj = parent[rj]
                if ri != rj:
                    parent[rj] = ri
    label = np.full(n, -1, np.int64)
    cls = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        if label[r] < 0:
            label[r] = k
            k += 1
        cls[i] = label[r]
    sums = np.zeros((k, 4), np.float64)
    count = np.zeros(k, np.int64)
    best = np.full(k, -np.inf)
    for i in range(n):
        c = cls[i]
        for t in range(4):
            sums[c, t] += rects[i, t]
        best[c] = max(best[c], weights[i])
        count[c] += 1
    avg = np.empty((k, 4), np.int64)
    for c in range(k):
        f = 1.0 / count[c]
        for t in range(4):
            avg[c, t] = int(np.round(sums[c, t] * f))
    out = np.empty((k, 4), np.int64)
    out_w = np.empty(k, np.float64)
    m = 0
    for i in range(k):
        n1 = count[i]
        if n1 <= threshold:
            continue
        inside = False
        for j in range(k):
            n2 = count[j]
            if j == i or n2 <= threshold:
                continue
            dx = int(np.round(avg[j, 2] * eps))
            dy = int(np.round(avg[j, 3] * eps))
            if (avg[i, 0] >= avg[j, 0] - dx and avg[i, 1] >= avg[j, 1] - dy
                    and avg[i, 0] + avg[i, 2] <= avg[j, 0] + avg[j, 2] + dx
                    and avg[i, 1] + avg[i, 3] <= avg[j, 1] + avg[j, 3] + dy and (n2 > max(3, n1) or n1 < 3)):
                inside = True
                break
        if not inside:
            out[m] = avg[i]
            out_w[m] = best[i]
            m += 1
    return out[:m], out_w[:m]


def _axis_weights(cell: int, sigma: float) -> np.ndarray:
    """Along one axis of a block: each pixel's weight for each of the 2 cells, Gaussian window x
    bilinear (OpenCV's HOGCache tables factored by axis; pixels near the block edge vote for their
    own cell only)."""
    bs = 2 * cell
    out = np.zeros((bs, 2), np.float32)
    scale = 1.0 / (sigma * sigma * 2)
    for p in range(bs):
        g = math.exp(-((p - bs * 0.5) ** 2) * scale)
        f = (p + 0.5) / cell - 0.5
        for c in (0, 1):
            out[p, c] = g * max(0.0, 1.0 - abs(f - c))
    return out


def _image(img: np.ndarray) -> np.ndarray:
    """The image as the kernels take it: 8-bit, (h, w, 1 or 3), C-contiguous and writable (numba
    compiles read-only arrays as another type: a second compile at run time)."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"FastHog takes 8-bit grey or BGR images, not {img.dtype} of shape {img.shape}")
    if img.ndim == 2:
        img = img[:, :, None]
    return np.require(img, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])


class FastHog:
    """detectMultiScale of a HOG descriptor with 2x2-cell blocks (the people model at cell 4 or 8)."""

    def __init__(self, hog: cv2.HOGDescriptor, svm: np.ndarray):
        self.win = (int(hog.winSize[0]), int(hog.winSize[1]))
        self.cell = int(hog.cellSize[0])
        if tuple(hog.blockSize) != (2 * self.cell, 2 * self.cell) or tuple(hog.blockStride) != (self.cell, self.cell):
            raise ValueError("FastHog needs 2x2-cell blocks moved one cell at a time")
        if hog.signedGradient or hog.histogramNormType != 0:
            raise ValueError("FastHog supports unsigned gradients and L2-Hys only")
        self.nbins = int(hog.nbins)
        self.bpw = ((self.win[0] - 2 * self.cell) // self.cell + 1, (self.win[1] - 2 * self.cell) // self.cell + 1)
        size = 4 * self.nbins
        w = np.asarray(svm, np.float32).reshape(-1)
        n = self.bpw[0] * self.bpw[1] * size
        self.rho = float(w[n]) if w.size > n else 0.0
        # OpenCV's descriptor lists blocks column by column: index (bx * rows + by) * size
        # and each block's cells column by column; `_scores` wants them by block row, cell row, then
        # block column, cell column, bin: (by, cy, bx * 2 * nbins + cx * nbins + bin)
        by_col = w[:n].reshape(self.bpw[0], self.bpw[1], 2, 2, self.nbins)  # (bx, by, cx, cy, bin)
        run = self.bpw[0] * 2 * self.nbins
        # padded with zero weights to whole vector widths (a dot product's tail is slow scalar code)
        self.pad = -run % 16
        svm = np.zeros((self.bpw[1], 2, run + self.pad), np.float32)
        svm[:, :, :run] = by_col.transpose(1, 3, 0, 2, 4).reshape(self.bpw[1], 2, run)
        self.svm = svm
        sigma = hog.winSigma if hog.winSigma > 0 else (4 * self.cell) / 8.0
        self.axis = _axis_weights(self.cell, sigma)
        self.thresh = np.float32(hog.L2HysThreshold)
        ramp = np.arange(256, dtype=np.float32)
        self.lut = (np.sqrt(ramp) if hog.gammaCorrection else ramp).astype(np.float32)
        self.nlevels = int(hog.nlevels)
        # compile (or load from numba's cache) now, not on a camera's first frame: every window of a
        # blank image passes a threshold of -inf, so the grouping is compiled as well
        self.detect_multiscale(np.zeros((self.win[1] + 8, self.win[0] + 8, 3), np.uint8), -np.inf, (self.cell, self.cell),
                               (self.cell, self.cell), 1.05, nlevels=2)

    def _grid(self, win_stride: tuple[int, int], padding: tuple[int, int]) -> tuple[int, int, int, int, int]:
        """Window strides, the block grid's step down (OpenCV's cache stride) and the padding
        aligned to the grid, as OpenCV aligns it."""
        c = self.cell
        sx, sy = int(win_stride[0]), int(win_stride[1])
        if sx <= 0 or sy <= 0 or sx % c:
            raise ValueError(f"window stride {win_stride} must step whole cells across")
        cs_x, cs_y = math.gcd(sx, c), math.gcd(sy, c)
        px = -(-max(padding[0], 0) // cs_x) * cs_x
        py = -(-max(padding[1], 0) // cs_y) * cs_y
        return sx, sy, cs_y, px, py

    def detect(self, img: np.ndarray, hit_threshold: float, win_stride: tuple[int, int], padding: tuple[int, int]):
        """One level: window top-left corners (x, y, relative to the unpadded image) and scores, as
        cv2.HOGDescriptor.detect gives them."""
        sx, sy, cs_y, px, py = self._grid(win_stride, padding)
        rects, scores = _multiscale(_image(img), np.ones(1), px, py, self.lut, self.cell, cs_y, self.nbins, self.axis,
                                    self.thresh, self.svm, self.rho, sx, sy, float(hit_threshold), self.win[0],
                                    self.win[1], self.pad)
        return rects[:, :2], scores

    def detect_multiscale(self, img: np.ndarray, hit_threshold: float = 0.0, win_stride: tuple[int, int] = (8, 8),
                          padding: tuple[int, int] = (0, 0), scale: float = 1.05, nlevels: int = 64,
                          group_threshold: int = 2):
        """Boxes (x, y, w, h) and their weights, as cv2.HOGDescriptor.detectMultiScale gives them."""
        H, W = img.shape[:2]
        ww, wh = self.win
        # OpenCV's levels: scales while the image still holds a window (the first always), at most nlevels
        levels, s = [1.0], scale
        nlevels = min(nlevels, self.nlevels)  # cv2's HOGDescriptor.nlevels caps the pyramid
        while len(levels) < nlevels and scale > 1 and round(W / s) >= ww and round(H / s) >= wh:
            levels.append(s)
            s *= scale
        sx, sy, cs_y, px, py = self._grid(win_stride, padding)
        rects, weights = _multiscale(_image(img), np.asarray(levels), px, py, self.lut, self.cell, cs_y, self.nbins,
                                     self.axis, self.thresh, self.svm, self.rho, sx, sy, float(hit_threshold), ww, wh,
                                     self.pad)
        if group_threshold > 0 and len(rects):
            rects, weights = _group(rects, weights, int(group_threshold), 0.2)
        out_r, out_w = [], []
        for (x, y, w, h), v in zip(rects.tolist(), weights.tolist()):
            # clipped to the image, as OpenCV does
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
            if x2 > x1 and y2 > y1:
                out_r.append((x1, y1, x2 - x1, y2 - y1))
                out_w.append(v)
        return out_r, out_w


if __name__ == "__main__":
    # `make warm`: compile the kernels into numba's cache (beside this module) ahead of the first
    # camera; through the package's module, whose functions the cache entries are filed under
    import time

    from adapters.camera import hogfast

    t0 = time.perf_counter()
    d = cv2.HOGDescriptor()
    for cell in (4, 8):
        hog = cv2.HOGDescriptor((8 * cell, 16 * cell), (2 * cell, 2 * cell), (cell, cell), (cell, cell), d.nbins)
        hogfast.FastHog(hog, cv2.HOGDescriptor_getDefaultPeopleDetector())
    print(f"hogfast: compiled kernels ready in {time.perf_counter() - t0:.1f} s")
