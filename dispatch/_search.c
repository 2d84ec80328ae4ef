/* The inner loop of dispatch.streets.TravelSearch.time_from, compiled.

   Heap(): the search's frontier, (seconds, node) pairs in a binary min-heap ordered as Python
   orders the tuples (seconds, then node), so nodes settle in the order heapq would settle them.

   expand(heap, best, done, nxt, start, nbr, sec, node, bound) -> float | None

   The Python loop it replaces (TravelSearch._expand), on the same dicts: `best`, `done` and `nxt`
   (node -> tentative seconds, final seconds, next hop towards the target), and the graph's
   reversed CSR arrays `start`, `nbr`, `sec` (array('l'), array('l'), array('d')). Settles nodes
   until `node` is settled (returns its time), the next one is further than `bound` seconds (left
   in the heap, returns None) or none is left (None). The same additions in the same order give the
   same floats: a search run here and one run in Python store the same times and next hops
   (tests/unit/test_streets.py compares them). About four times faster: no interpreter round per
   edge, no tuple per heap entry.

   nearest(...): the nearest-node query of dispatch.streets._Grid, compiled (see below).

   Built by `pip install` (pyproject.toml; optional: without a compiler the Python loops run). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

typedef struct {
    double d;
    long u;
} Entry;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;
    Entry *a;
} HeapObject;

static inline int less(const Entry *x, const Entry *y) { return x->d < y->d || (x->d == y->d && x->u < y->u); }

static int heap_push(HeapObject *h, double d, long u) {
    if (h->n == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 16;
        Entry *a = PyMem_Realloc(h->a, (size_t)cap * sizeof(Entry));
        if (a == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->a = a;
        h->cap = cap;
    }
    Entry e = {d, u};
    Py_ssize_t i = h->n++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) >> 1;
        if (!less(&e, &h->a[parent]))
            break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = e;
    return 0;
}

static Entry heap_pop(HeapObject *h) { /* h->n > 0 */
    Entry top = h->a[0];
    Entry last = h->a[--h->n];
    Py_ssize_t n = h->n, i = 0;
    if (n > 0) {
        for (;;) {
            Py_ssize_t c = 2 * i + 1;
            if (c >= n)
                break;
            if (c + 1 < n && less(&h->a[c + 1], &h->a[c]))
                c++;
            if (!less(&h->a[c], &last))
                break;
            h->a[i] = h->a[c];
            i = c;
        }
        h->a[i] = last;
    }
    return top;
}

/* An argument as a C double or long: 0, or -1 with the Python error set. */
static int as_double(PyObject *obj, double *out) {
    *out = PyFloat_AsDouble(obj);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int as_long(PyObject *obj, long *out) {
    *out = PyLong_AsLong(obj);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static void Heap_dealloc(HeapObject *h) {
    PyMem_Free(h->a);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *Heap_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    HeapObject *h = (HeapObject *)type->tp_alloc(type, 0);
    if (h != NULL) {
        h->n = h->cap = 0;
        h->a = NULL;
    }
    return (PyObject *)h;
}

static PyObject *Heap_push(HeapObject *h, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "push(seconds, node)");
        return NULL;
    }
    double d;
    long u;
    if (as_double(args[0], &d) < 0 || as_long(args[1], &u) < 0 || heap_push(h, d, u) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Heap_pop(HeapObject *h, PyObject *unused) {
    if (h->n == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty heap");
        return NULL;
    }
    Entry e = heap_pop(h);
    return Py_BuildValue("(dl)", e.d, e.u);
}

static PyObject *Heap_min(HeapObject *h, PyObject *unused) {
    return PyFloat_FromDouble(h->n ? h->a[0].d : INFINITY);
}

static Py_ssize_t Heap_len(HeapObject *h) { return h->n; }

static PyMethodDef Heap_methods[] = {
    {"push", (PyCFunction)(void (*)(void))Heap_push, METH_FASTCALL, "push(seconds, node)"},
    {"pop", (PyCFunction)Heap_pop, METH_NOARGS, "pop() -> (seconds, node), the smallest"},
    {"min", (PyCFunction)Heap_min, METH_NOARGS, "min() -> the smallest seconds, inf when empty"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Heap_as_sequence = {.sq_length = (lenfunc)Heap_len};

static PyTypeObject HeapType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dispatch._search.Heap",
    .tp_doc = "A min-heap of (seconds, node), ordered as the tuples would be.",
    .tp_basicsize = sizeof(HeapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Heap_new,
    .tp_dealloc = (destructor)Heap_dealloc,
    .tp_methods = Heap_methods,
    .tp_as_sequence = &Heap_as_sequence,
};

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get_buf(PyObject *obj, Buf *b, const char *fmt, Py_ssize_t itemsize, const char *what) {
    b->held = 0;
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    b->held = 1;
    if (b->view.itemsize != itemsize || b->view.format == NULL || strcmp(b->view.format, fmt) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected an array of format '%s'", what, fmt);
        return -1;
    }
    return 0;
}

static void release(Buf *b) {
    if (b->held)
        PyBuffer_Release(&b->view);
    b->held = 0;
}

static PyObject *expand(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "expand() takes 9 arguments");
        return NULL;
    }
    PyObject *best = args[1], *done = args[2], *nxt = args[3];
    if (!PyObject_TypeCheck(args[0], &HeapType) || !PyDict_CheckExact(best) || !PyDict_CheckExact(done) ||
        !PyDict_CheckExact(nxt)) {
        PyErr_SetString(PyExc_TypeError, "expand(): heap must be a Heap; best, done and nxt dicts");
        return NULL;
    }
    HeapObject *heap = (HeapObject *)args[0];
    long node;
    double bound;
    if (as_long(args[7], &node) < 0 || as_double(args[8], &bound) < 0)
        return NULL;

    Buf bstart, bnbr, bsec;
    bstart.held = bnbr.held = bsec.held = 0;
    PyObject *result = NULL;
    if (get_buf(args[4], &bstart, "l", sizeof(long), "start") < 0 || get_buf(args[5], &bnbr, "l", sizeof(long), "nbr") < 0 ||
        get_buf(args[6], &bsec, "d", sizeof(double), "sec") < 0)
        goto out;
    const long *start = (const long *)bstart.view.buf;
    const long *nbr = (const long *)bnbr.view.buf;
    const double *sec = (const double *)bsec.view.buf;
    Py_ssize_t n_start = bstart.view.len / (Py_ssize_t)sizeof(long);
    Py_ssize_t n_edges = bnbr.view.len / (Py_ssize_t)sizeof(long);
    if (bsec.view.len / (Py_ssize_t)sizeof(double) != n_edges) {
        PyErr_SetString(PyExc_ValueError, "expand(): nbr and sec differ in length");
        goto out;
    }

    while (heap->n > 0) {
        Entry e = heap_pop(heap);
        double d = e.d;
        long u = e.u;
        if (d > bound) {
            /* keep it for a later, wider question */
            if (heap_push(heap, d, u) < 0)
                goto out;
            result = Py_NewRef(Py_None);
            goto out;
        }
        if (u < 0 || u >= n_start - 1) {
            PyErr_SetString(PyExc_IndexError, "expand(): node out of range");
            goto out;
        }
        PyObject *u_obj = PyLong_FromLong(u);
        if (u_obj == NULL)
            goto out;
        int seen = PyDict_Contains(done, u_obj);
        if (seen != 0) {
            Py_DECREF(u_obj);
            if (seen < 0)
                goto out;
            continue;
        }
        PyObject *d_obj = PyFloat_FromDouble(d);
        if (d_obj == NULL || PyDict_SetItem(done, u_obj, d_obj) < 0) {
            Py_XDECREF(d_obj);
            Py_DECREF(u_obj);
            goto out;
        }
        for (long k = start[u]; k < start[u + 1]; k++) {
            if (k < 0 || k >= n_edges) {
                PyErr_SetString(PyExc_IndexError, "expand(): edge out of range");
                goto fail_node;
            }
            double nd = d + sec[k];
            PyObject *v_obj = PyLong_FromLong(nbr[k]);
            if (v_obj == NULL)
                goto fail_node;
            PyObject *b = PyDict_GetItemWithError(best, v_obj); /* borrowed */
            double bv = INFINITY;
            if (b != NULL) {
                bv = PyFloat_AsDouble(b);
            }
            if (PyErr_Occurred()) {
                Py_DECREF(v_obj);
                goto fail_node;
            }
            if (nd < bv) {
                PyObject *nd_obj = PyFloat_FromDouble(nd);
                int bad = nd_obj == NULL || PyDict_SetItem(best, v_obj, nd_obj) < 0 || PyDict_SetItem(nxt, v_obj, u_obj) < 0 ||
                          heap_push(heap, nd, nbr[k]) < 0;
                Py_XDECREF(nd_obj);
                Py_DECREF(v_obj);
                if (bad)
                    goto fail_node;
            } else {
                Py_DECREF(v_obj);
            }
        }
        Py_DECREF(u_obj);
        if (u == node) {
            result = d_obj;
            goto out;
        }
        Py_DECREF(d_obj);
        continue;
    fail_node:
        Py_DECREF(d_obj);
        Py_DECREF(u_obj);
        goto out;
    }
    result = Py_NewRef(Py_None);
out:
    release(&bstart);
    release(&bnbr);
    release(&bsec);
    return result;
}

/* nearest(xs, ys, cell_start, cell_nodes, usable, x, y, x0, y0, cell, nx, ny) -> node or -1

   dispatch.streets._Grid._nearest compiled: the nearest usable node to (x, y) in the grid's flat
   projection, visiting the same cells in the same order (rings outward, each ring's rows then its
   columns) and the nodes of a cell in their order, so that of two equally near nodes the same one
   wins; the same products and sums (-ffp-contract=off), the ring's reach squared as one product as
   in Python. A point so far away that its cell number would not fit a long (only a direct caller
   can ask: the engine's inputs are range-checked) returns -2: the Python loop answers it. */
static PyObject *nearest(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "nearest() takes 12 arguments");
        return NULL;
    }
    double x, y, x0, y0, cell;
    long nx, ny;
    if (as_double(args[5], &x) < 0 || as_double(args[6], &y) < 0 || as_double(args[7], &x0) < 0 ||
        as_double(args[8], &y0) < 0 || as_double(args[9], &cell) < 0 || as_long(args[10], &nx) < 0 ||
        as_long(args[11], &ny) < 0)
        return NULL;
    if (nx <= 0 || ny <= 0 || !(cell > 0.0) || !isfinite(x) || !isfinite(y)) {
        PyErr_SetString(PyExc_ValueError, "nearest(): bad grid or point");
        return NULL;
    }
    Buf bxs, bys, bstart, bnodes, busable;
    bxs.held = bys.held = bstart.held = bnodes.held = busable.held = 0;
    PyObject *result = NULL;
    if (get_buf(args[0], &bxs, "d", sizeof(double), "xs") < 0 || get_buf(args[1], &bys, "d", sizeof(double), "ys") < 0 ||
        get_buf(args[2], &bstart, "l", sizeof(long), "cell_start") < 0 ||
        get_buf(args[3], &bnodes, "l", sizeof(long), "cell_nodes") < 0 || get_buf(args[4], &busable, "B", 1, "usable") < 0)
        goto out;
    const double *xs = (const double *)bxs.view.buf, *ys = (const double *)bys.view.buf;
    const long *start = (const long *)bstart.view.buf, *nodes = (const long *)bnodes.view.buf;
    const unsigned char *usable = (const unsigned char *)busable.view.buf;
    Py_ssize_t n = bxs.view.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t n_nodes = bnodes.view.len / (Py_ssize_t)sizeof(long);
    if (bys.view.len / (Py_ssize_t)sizeof(double) != n || busable.view.len < n ||
        bstart.view.len / (Py_ssize_t)sizeof(long) != (Py_ssize_t)nx * ny + 1) {
        PyErr_SetString(PyExc_ValueError, "nearest(): arrays do not match the grid");
        goto out;
    }
    double fx = floor((x - x0) / cell), fy = floor((y - y0) / cell);
    if (!(fabs(fx) < 0x1p60 && fabs(fy) < 0x1p60) || nx > (1L << 30) || ny > (1L << 30)) {
        result = PyLong_FromLong(-2); /* too far for longs: the caller's Python loop answers */
        goto out;
    }
    long cx = (long)fx, cy = (long)fy;
    long r = 0;
    if (-cx > r) r = -cx;
    if (cx - (nx - 1) > r) r = cx - (nx - 1);
    if (-cy > r) r = -cy;
    if (cy - (ny - 1) > r) r = cy - (ny - 1);
    long r_max = r + (nx > ny ? nx : ny);
    long best = -1;
    double best_d2 = INFINITY;

#define VISIT(IX, IY)                                                          \
    do {                                                                       \
        long c_ = (IX) * ny + (IY);                                            \
        for (long k_ = start[c_]; k_ < start[c_ + 1]; k_++) {                  \
            if (k_ < 0 || k_ >= n_nodes)                                       \
                goto bad_index;                                                \
            long i_ = nodes[k_];                                               \
            if (i_ < 0 || i_ >= n)                                             \
                goto bad_index;                                                \
            if (usable[i_]) {                                                  \
                double dx_ = xs[i_] - x;                                       \
                double dy_ = ys[i_] - y;                                       \
                double d2_ = dx_ * dx_ + dy_ * dy_;                            \
                if (d2_ < best_d2) {                                           \
                    best_d2 = d2_;                                             \
                    best = i_;                                                 \
                }                                                              \
            }                                                                  \
        }                                                                      \
    } while (0)

    while (r <= r_max) {
        if (r == 0) {
            if (0 <= cx && cx < nx && 0 <= cy && cy < ny)
                VISIT(cx, cy);
        } else {
            long x_lo = cx - r > 0 ? cx - r : 0, x_hi = cx + r < nx - 1 ? cx + r : nx - 1;
            long rows[2] = {cy - r, cy + r};
            for (int j = 0; j < 2; j++) {
                long iy = rows[j];
                if (0 <= iy && iy < ny)
                    for (long ix = x_lo; ix <= x_hi; ix++)
                        VISIT(ix, iy);
            }
            long y_lo = cy - r + 1 > 0 ? cy - r + 1 : 0, y_hi = cy + r - 1 < ny - 1 ? cy + r - 1 : ny - 1;
            long cols[2] = {cx - r, cx + r};
            for (int j = 0; j < 2; j++) {
                long ix = cols[j];
                if (0 <= ix && ix < nx)
                    for (long iy = y_lo; iy <= y_hi; iy++)
                        VISIT(ix, iy);
            }
        }
        /* every point of ring r + 1 lies at least r cells away */
        double reach = (double)r * cell;
        if (best >= 0 && best_d2 <= reach * reach)
            break;
        r++;
    }
#undef VISIT
    result = PyLong_FromLong(best);
    goto out;
bad_index:
    PyErr_SetString(PyExc_IndexError, "nearest(): cell index out of range");
out:
    release(&bxs);
    release(&bys);
    release(&bstart);
    release(&bnodes);
    release(&busable);
    return result;
}

static PyMethodDef methods[] = {
    {"expand", (PyCFunction)(void (*)(void))expand, METH_FASTCALL,
     "expand(heap, best, done, nxt, start, nbr, sec, node, bound) -> float | None: settle nodes of a "
     "backward Dijkstra search until node is settled or the next one is further than bound."},
    {"nearest", (PyCFunction)(void (*)(void))nearest, METH_FASTCALL,
     "nearest(xs, ys, cell_start, cell_nodes, usable, x, y, x0, y0, cell, nx, ny) -> the nearest usable "
     "node of a bucket grid, or -1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "dispatch._search", NULL, -1, methods};

PyMODINIT_FUNC PyInit__search(void) {
    if (PyType_Ready(&HeapType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Heap", (PyObject *)&HeapType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
