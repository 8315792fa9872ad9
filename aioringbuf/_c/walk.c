/*
 * walk.c: walk() and walk_perf(), the record walks.
 *
 * Twins of aioringbuf/_ring.py walk() (BPF ring buffer) and
 * aioringbuf/_perfring.py walk_perf() (one perf ring): same arguments,
 * same results (as plain tuples), same errors for the same bytes. A Layout
 * decoder (codec.c) is called natively; any other decoder through Python.
 *
 * Memory ordering (docs/architecture.md has the whole argument): each ring
 * buffer record header is read with a load-acquire, pairing with
 * bpf_ringbuf_commit()'s xchg(&hdr->len, new_len) in kernel/bpf/ringbuf.c
 * (a full barrier after the BPF program's stores into the record): once we
 * see the BUSY bit clear, the record's bytes are there. The positions are
 * loaded and stored by the caller with order.c's load_acquire() and
 * store_release() (see _ringmap.py, _perfmap.py), before and after the walk.
 * Perf record headers need no acquire of their own: data_head's acquire
 * load covers every byte below it (perf_output_put_handle()'s smp_wmb()).
 */
#include "fastring.h"

#define RB_BUSY_BIT (1u << 31)
#define RB_DISCARD_BIT (1u << 30)
#define RB_HDR_SZ 8

#define PERF_RECORD_LOST 2
#define PERF_RECORD_SAMPLE 9
#define PERF_HDR_SZ 8
#define PERF_RAW_OFFSET (PERF_HDR_SZ + 4)
#define PERF_LOST_SZ (PERF_HDR_SZ + 16) /* struct { header; u64 id; u64 lost; } */

/* Decode one record at view offset off: natively, or through a Python decoder
 * called as decode(obj, obj_off, n). */
static PyObject *
decode_one(PyObject *decode, PyObject *obj, Py_ssize_t obj_off, const unsigned char *p,
           Py_ssize_t n, Py_ssize_t avail)
{
    if (Py_IS_TYPE(decode, &LayoutType)) {
        if (n > avail) {
            PyErr_Format(PyExc_ValueError, "a %zd-byte record runs past the buffer", n);
            return NULL;
        }
        return layout_decode(decode, p, n);
    }
    PyObject *argv[3] = {obj, NULL, NULL};
    argv[1] = PyLong_FromSsize_t(obj_off);
    argv[2] = PyLong_FromSsize_t(n);
    PyObject *ev = NULL;
    if (argv[1] != NULL && argv[2] != NULL)
        ev = PyObject_Vectorcall(decode, argv, 3, NULL);
    Py_XDECREF(argv[1]);
    Py_XDECREF(argv[2]);
    return ev;
}

/* After a failed decode: 1 if it is a decode error (an Exception) to count,
 * with the exception moved to *error when strict; 0 to propagate it. */
static int
take_decode_error(int strict, PyObject **error)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return 0;
    if (strict) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        *error = value;
    } else {
        PyErr_Clear();
    }
    return 1;
}

/* Where each delivered record started. Kept as C integers and handed to
 * the caller's array('Q') in one frombytes() call (or, for a list, as ints):
 * a PyLong per record would cost as much as decoding it. */
typedef struct {
    PyObject *target; /* None, a list, or an object with frombytes() */
    uint64_t *buf;
    Py_ssize_t len, cap;
} Starts;

static int
starts_add(Starts *st, unsigned long long start)
{
    if (st->target == Py_None)
        return 0;
    if (PyList_Check(st->target)) {
        PyObject *s = PyLong_FromUnsignedLongLong(start);
        if (s == NULL)
            return -1;
        int rc = PyList_Append(st->target, s);
        Py_DECREF(s);
        return rc;
    }
    if (st->len == st->cap) {
        Py_ssize_t cap = st->cap ? st->cap * 2 : 256;
        uint64_t *buf = PyMem_Realloc(st->buf, (size_t)cap * sizeof(uint64_t));
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->buf = buf;
        st->cap = cap;
    }
    st->buf[st->len++] = start;
    return 0;
}

/* Hand the collected starts over; frees the buffer. 0 or -1. */
static int
starts_flush(Starts *st)
{
    int rc = 0;
    if (st->len) {
        PyObject *raw = PyBytes_FromStringAndSize((const char *)st->buf,
                                                  st->len * (Py_ssize_t)sizeof(uint64_t));
        PyObject *r = raw ? PyObject_CallMethod(st->target, "frombytes", "O", raw) : NULL;
        rc = r ? 0 : -1;
        Py_XDECREF(r);
        Py_XDECREF(raw);
    }
    PyMem_Free(st->buf);
    st->buf = NULL;
    st->len = st->cap = 0;
    return rc;
}

/* What both walks do with one decode's outcome `ev` (NULL: it failed):
 * keep the event and where it started, or count the decode error.
 * TAKE_NEXT: go on; TAKE_STOP: stop here (strict, *error set);
 * TAKE_FAIL: a real error is set, give up. */
enum { TAKE_FAIL = -1, TAKE_NEXT = 0, TAKE_STOP = 1 };

static inline int
take(PyObject *events, Starts *starts, PyObject *ev, unsigned long long start,
     int strict, PyObject **error, Py_ssize_t *taken, Py_ssize_t *decode_errors)
{
    if (ev == NULL) {
        if (!take_decode_error(strict, error))
            return TAKE_FAIL;
        (*decode_errors)++;
        return *error != NULL ? TAKE_STOP : TAKE_NEXT;
    }
    int rc = PyList_Append(events, ev);
    Py_DECREF(ev);
    if (rc < 0 || starts_add(starts, start) < 0)
        return TAKE_FAIL;
    (*taken)++;
    return TAKE_NEXT;
}

/* Why a walk stopped: the numbers of aioringbuf._ring.Stop. */
enum { STOP_EMPTY = 0, STOP_BUSY = 1, STOP_BUDGET = 2, STOP_ERROR = 3 };

/* (pos, stop, decode_errors, skipped, error): _ring.WalkResult as a plain tuple. */
static PyObject *
result(unsigned long long pos, int stop, Py_ssize_t decode_errors, unsigned long long skipped,
       PyObject *error)
{
    PyObject *r = Py_BuildValue("(KinKO)", pos, stop, decode_errors, skipped,
                                error ? error : Py_None);
    Py_XDECREF(error);
    return r;
}

/* How both walks end: release the ring's buffer, then, if `ok`, hand the
 * starts over and return the result; else (a Python error is set) free the
 * starts and return NULL. Takes over the reference to `error` either way. */
static PyObject *
finish(Py_buffer *view, Starts *st, int ok, unsigned long long pos, int stop,
       Py_ssize_t decode_errors, unsigned long long skipped, PyObject *error)
{
    PyBuffer_Release(view);
    if (ok && starts_flush(st) == 0)
        return result(pos, stop, decode_errors, skipped, error);
    PyMem_Free(st->buf); /* NULL once flushed */
    Py_XDECREF(error);
    return NULL;
}

/* Raise aioringbuf.<module>.<name>(message); returns NULL. */
static PyObject *
corrupt(const char *module, const char *name, PyObject *msg)
{
    if (msg == NULL)
        return NULL;
    PyObject *mod = PyImport_ImportModule(module);
    PyObject *cls = mod ? PyObject_GetAttrString(mod, name) : NULL;
    if (cls != NULL)
        PyErr_SetObject(cls, msg);
    Py_XDECREF(cls);
    Py_XDECREF(mod);
    Py_DECREF(msg);
    return NULL;
}

#define RING_CORRUPT(...) corrupt("aioringbuf._ring", "RingCorrupt", \
                                  PyUnicode_FromFormat(__VA_ARGS__))
#define PERF_CORRUPT(...) corrupt("aioringbuf._perfring", "PerfRingCorrupt", \
                                  PyUnicode_FromFormat(__VA_ARGS__))

#define CHECK_ARGS(name, want)                                                   \
    if (nargs != (want)) {                                                       \
        PyErr_Format(PyExc_TypeError, name "() takes %d arguments (%zd given)",  \
                     (want), nargs);                                             \
        return NULL;                                                             \
    }

PyDoc_STRVAR(walk_doc,
"walk(data, base, mask, cons, prod, budget, decode, events, starts, strict)\n"
"--\n\n"
"The ring buffer walk of aioringbuf._ring.walk, returning the same fields as\n"
"a plain tuple: (pos, stop, decode_errors, skipped, error).");

static PyObject *
walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_ARGS("walk", 10);
    PyObject *data = args[0], *decode = args[6], *events = args[7], *starts = args[8];
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    unsigned long long mask = PyLong_AsUnsignedLongLong(args[2]);
    unsigned long long cons = PyLong_AsUnsignedLongLong(args[3]);
    unsigned long long prod = PyLong_AsUnsignedLongLong(args[4]);
    Py_ssize_t budget = PyLong_AsSsize_t(args[5]);
    int strict = PyObject_IsTrue(args[9]);
    if (PyErr_Occurred() || strict < 0)
        return NULL;
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "walk(): events must be a list");
        return NULL;
    }
    Starts st = {starts, NULL, 0, 0};
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *mem = view.buf;
    Py_ssize_t taken = 0, decode_errors = 0;
    unsigned long long discarded = 0;
    int stop = STOP_EMPTY;
    PyObject *error = NULL;
    while (cons < prod) {
        if (taken >= budget) {
            stop = STOP_BUDGET;
            break;
        }
        Py_ssize_t off = base + (Py_ssize_t)(cons & mask);
        if (off < 0 || off > view.len - RB_HDR_SZ) {
            PyErr_Format(PyExc_ValueError, "ring position %llu is outside the buffer", cons);
            goto fail;
        }
        /* Pairs with xchg(&hdr->len, new_len) in bpf_ringbuf_commit(). */
        uint32_t word = __atomic_load_n((const uint32_t *)(mem + off), __ATOMIC_ACQUIRE);
        uint32_t len = word & ~(RB_BUSY_BIT | RB_DISCARD_BIT);
        if (word & RB_BUSY_BIT) {
            stop = STOP_BUSY; /* records are ordered by reservation: later ones wait */
            break;
        }
        unsigned long long span = ((unsigned long long)len + RB_HDR_SZ + 7) & ~7ULL;
        if (span > prod - cons) {
            RING_CORRUPT("ring buffer record at position %llu claims %lu bytes, past the "
                         "producer position %llu: the ring is corrupt", cons,
                         (unsigned long)len, prod);
            goto fail;
        }
        unsigned long long start = cons;
        cons += span;
        if (word & RB_DISCARD_BIT) {
            discarded++;
            continue;
        }
        Py_ssize_t at = off + RB_HDR_SZ;
        PyObject *ev = decode_one(decode, data, at, mem + at, (Py_ssize_t)len, view.len - at);
        int next = take(events, &st, ev, start, strict, &error, &taken, &decode_errors);
        if (next == TAKE_FAIL)
            goto fail;
        if (next == TAKE_STOP) {
            stop = STOP_ERROR;
            break;
        }
    }
    return finish(&view, &st, 1, cons, stop, decode_errors, discarded, error);
fail:
    return finish(&view, &st, 0, 0, 0, 0, 0, error);
}

PyDoc_STRVAR(walk_perf_doc,
"walk_perf(data, base, size, tail, head, budget, decode, events, starts, strict, exact_size=-1)\n"
"--\n\n"
"The perf ring walk of aioringbuf._perfring.walk_perf, returning the same\n"
"fields as a plain tuple: (pos, stop, decode_errors, skipped, error).");

static PyObject *
walk_perf(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10 && nargs != 11) {
        PyErr_Format(PyExc_TypeError, "walk_perf() takes 10 or 11 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *data = args[0], *decode = args[6], *events = args[7], *starts = args[8];
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    unsigned long long tail = PyLong_AsUnsignedLongLong(args[3]);
    unsigned long long head = PyLong_AsUnsignedLongLong(args[4]);
    Py_ssize_t budget = PyLong_AsSsize_t(args[5]);
    int strict = PyObject_IsTrue(args[9]);
    Py_ssize_t exact = nargs > 10 ? PyLong_AsSsize_t(args[10]) : -1;
    if (PyErr_Occurred() || strict < 0)
        return NULL;
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "walk_perf(): events must be a list");
        return NULL;
    }
    Starts st = {starts, NULL, 0, 0};
    if (size <= 0 || (size & (size - 1))) {
        PyErr_SetString(PyExc_ValueError, "walk_perf(): size must be a power of two");
        return NULL;
    }
    Py_ssize_t padded = exact >= 0 ? ((exact + 4 + 7) & ~(Py_ssize_t)7) - 4 : -1;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (base < 0 || base > view.len - size) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "walk_perf(): the data area is outside the buffer");
        return NULL;
    }
    const unsigned char *area = (const unsigned char *)view.buf + base;
    unsigned char *copy = NULL; /* a wrapped record, copied out in one piece */
    unsigned long long mask = (unsigned long long)size - 1, lost = 0;
    Py_ssize_t taken = 0, decode_errors = 0;
    int stop = STOP_EMPTY;
    PyObject *error = NULL;
    while (tail < head) {
        if (taken >= budget) {
            stop = STOP_BUDGET;
            break;
        }
        Py_ssize_t off = (Py_ssize_t)(tail & mask);
        uint32_t type;
        uint16_t rsize;
        memcpy(&type, area + off, 4);
        memcpy(&rsize, area + off + 6, 2);
        /* The same checks, in the same order, as _perfring.walk_perf. */
        if (rsize < PERF_HDR_SZ || (rsize & 7) || rsize > head - tail || rsize > size) {
            PERF_CORRUPT("perf ring record at position %llu has size %lu: the ring is corrupt",
                         tail, (unsigned long)rsize);
            goto fail;
        }
        if (type == PERF_RECORD_LOST && rsize < PERF_LOST_SZ) {
            PERF_CORRUPT("perf lost record at position %llu has size %lu, less than %d: "
                         "the ring is corrupt", tail, (unsigned long)rsize, PERF_LOST_SZ);
            goto fail;
        }
        if (type == PERF_RECORD_SAMPLE && rsize < PERF_RAW_OFFSET) {
            PERF_CORRUPT("perf sample at position %llu has size %lu, too short for its raw "
                         "size: the ring is corrupt", tail, (unsigned long)rsize);
            goto fail;
        }
        const unsigned char *rec = area + off;
        PyObject *obj = data;          /* what a Python decoder is handed */
        Py_ssize_t obj_off = base + off;
        PyObject *wrapped = NULL;
        if (off + rsize > size) {
            Py_ssize_t first = size - off;
            if (copy == NULL && (copy = PyMem_Malloc(65536)) == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            memcpy(copy, area + off, (size_t)first);
            memcpy(copy + first, area, (size_t)(rsize - first));
            rec = copy;
            obj_off = 0;
        }
        unsigned long long start = tail;
        tail += rsize;
        if (type == PERF_RECORD_LOST) {
            uint64_t n;
            memcpy(&n, rec + 16, 8);
            lost += n;
            continue;
        }
        if (type != PERF_RECORD_SAMPLE)
            continue; /* nothing else is asked for; skip what a newer kernel may add */
        uint32_t n;
        memcpy(&n, rec + PERF_HDR_SZ, 4);
        if (n > (uint32_t)(rsize - PERF_RAW_OFFSET)) {
            PERF_CORRUPT("perf sample at position %llu claims %lu bytes in a %lu-byte record: "
                         "the ring is corrupt", start, (unsigned long)n, (unsigned long)rsize);
            goto fail;
        }
        Py_ssize_t len = (Py_ssize_t)n == padded ? exact : (Py_ssize_t)n;
        if (rec == copy && !Py_IS_TYPE(decode, &LayoutType)) {
            wrapped = PyBytes_FromStringAndSize((const char *)copy, rsize);
            if (wrapped == NULL)
                goto fail;
            obj = wrapped;
        }
        PyObject *ev = decode_one(decode, obj, obj_off + PERF_RAW_OFFSET, rec + PERF_RAW_OFFSET,
                                  len, rsize - PERF_RAW_OFFSET);
        Py_XDECREF(wrapped);
        int next = take(events, &st, ev, start, strict, &error, &taken, &decode_errors);
        if (next == TAKE_FAIL)
            goto fail;
        if (next == TAKE_STOP) {
            stop = STOP_ERROR;
            break;
        }
    }
    PyMem_Free(copy);
    return finish(&view, &st, 1, tail, stop, decode_errors, lost, error);
fail:
    PyMem_Free(copy);
    return finish(&view, &st, 0, 0, 0, 0, 0, error);
}

PyMethodDef walk_methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL, walk_doc},
    {"walk_perf", (PyCFunction)(void (*)(void))walk_perf, METH_FASTCALL, walk_perf_doc},
    {NULL},
};
