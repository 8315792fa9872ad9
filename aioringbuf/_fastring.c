/*
 * _fastring: aioringbuf's hot path in C (optional; see aioringbuf/_fast.py).
 *
 * Three things, each the twin of a pure-Python original that stays the
 * reference (the tests run the whole suite on both, and compare the two
 * directly on random input):
 *
 *   walk(), walk_perf()  the record walks of _ring.py and _perfring.py:
 *                        same arguments, same results (as plain tuples);
 *   Layout               a native decoder built from _codec's field list:
 *                        reads the C struct and calls the msgspec Struct
 *                        type with the values, as the generated Python
 *                        decoder does, without the struct.unpack tuple;
 *   Cursor               the base type of every stream: its __anext__
 *                        hands out the next event of the current batch as
 *                        an already-completed awaitable (no coroutine, no
 *                        frame), and calls the Python _anext_slow()
 *                        coroutine only when the batch is used up.
 *
 * Memory ordering: the ring buffer's record header is read with an acquire
 * load, pairing with the kernel's smp_store_release() of hdr->len in
 * bpf_ringbuf_commit(). The producer and consumer positions are read and
 * written by the Python accessors (_ringmap.py, _perfmap.py), which is
 * where the x86-64 TSO assumption is documented.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "_fastring reads little-endian records natively"
#endif

#define RB_BUSY_BIT (1u << 31)
#define RB_DISCARD_BIT (1u << 30)
#define RB_HDR_SZ 8

#define PERF_RECORD_LOST 2
#define PERF_RECORD_SAMPLE 9
#define PERF_HDR_SZ 8
#define PERF_RAW_OFFSET (PERF_HDR_SZ + 4)

/* ------------------------------------------------------------------------
 * Layout: a native decoder for one Event type
 */

enum { TAIL_NONE, TAIL_BYTES, TAIL_STR, TAIL_LIST };

typedef struct {
    char kind;           /* B H I Q b h i q: scalar; z: CStr; s: Bytes; [: array */
    char elem;           /* array element code */
    Py_ssize_t offset;
    Py_ssize_t length;   /* CStr/Bytes: bytes; array: elements */
    Py_ssize_t width;    /* bytes the field occupies */
    /* The last value decoded and the bytes it came from: pids, CPUs, comms
     * and the like repeat from record to record, and an immutable int or
     * str can be shared instead of built again. Only for scalars and CStr
     * of up to 64 bytes (memo_ok). */
    int memo_ok;
    PyObject *last;
    uint64_t last_bits;          /* scalars */
    unsigned char last_raw[64];  /* CStr */
} Field;

typedef struct {
    PyObject_HEAD
    PyObject *cls;        /* the msgspec Struct type */
    PyObject *size_error; /* n -> RecordSizeError, for records of the wrong size */
    Field *fields;
    Py_ssize_t nfields;
    Py_ssize_t size;      /* exact size, or the tail's offset */
    int tail;
    /* Build instances directly (tp_alloc, then each value into its slot),
     * which is all msgspec's own constructor does for an untracked
     * (gc=False) Struct without __post_init__ whose fields are all
     * positional: the codec says when that holds (see _codec._compile). */
    Py_ssize_t *slots;    /* slot offsets, one per argument; NULL: call cls */
    vectorcallfunc vectorcall;
} LayoutObject;

static PyTypeObject LayoutType;

static PyObject *
scalar(char code, const unsigned char *p)
{
    switch (code) {
    case 'B': return PyLong_FromUnsignedLong(p[0]);
    case 'b': return PyLong_FromLong((int8_t)p[0]);
    case 'H': { uint16_t v; memcpy(&v, p, 2); return PyLong_FromUnsignedLong(v); }
    case 'h': { int16_t v; memcpy(&v, p, 2); return PyLong_FromLong(v); }
    case 'I': { uint32_t v; memcpy(&v, p, 4); return PyLong_FromUnsignedLong(v); }
    case 'i': { int32_t v; memcpy(&v, p, 4); return PyLong_FromLong(v); }
    case 'Q': { uint64_t v; memcpy(&v, p, 8); return PyLong_FromUnsignedLongLong(v); }
    case 'q': { int64_t v; memcpy(&v, p, 8); return PyLong_FromLongLong(v); }
    }
    PyErr_Format(PyExc_SystemError, "_fastring: unknown field code %c", code);
    return NULL;
}

static Py_ssize_t
scalar_size(char code)
{
    switch (code) {
    case 'B': case 'b': return 1;
    case 'H': case 'h': return 2;
    case 'I': case 'i': return 4;
    case 'Q': case 'q': return 8;
    }
    return -1;
}

/* char[n] up to the first NUL, as str; bytes that are not UTF-8 survive
 * as lone surrogates (like _codec._str). */
static PyObject *
c_string(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *nul = memchr(p, 0, (size_t)n);
    if (nul != NULL)
        n = nul - p;
    return PyUnicode_DecodeUTF8((const char *)p, n, "surrogateescape");
}

/* NUL-separated strings, the last empty part dropped (like _codec._strs). */
static PyObject *
c_strings(const unsigned char *p, Py_ssize_t n)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    Py_ssize_t start = 0;
    for (;;) {
        const unsigned char *nul = memchr(p + start, 0, (size_t)(n - start));
        Py_ssize_t end = nul ? nul - p : n;
        if (nul == NULL && start == n)
            break; /* the empty part after a final NUL (or of an empty tail) */
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p + start, end - start,
                                           "surrogateescape");
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
        if (nul == NULL)
            break;
        start = end + 1;
    }
    return list;
}

static PyObject *field_build(const Field *f, const unsigned char *p);

/* A scalar's raw bits, zero-extended (fixed-size memcpy: one load). */
static inline uint64_t
scalar_bits(char code, const unsigned char *p)
{
    switch (code) {
    case 'B': case 'b': return p[0];
    case 'H': case 'h': { uint16_t v; memcpy(&v, p, 2); return v; }
    case 'I': case 'i': { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

static PyObject *
field_value(Field *f, const unsigned char *p)
{
    p += f->offset;
    if (!f->memo_ok)
        return field_build(f, p);
    if (f->kind != 'z') {
        uint64_t bits = scalar_bits(f->kind, p);
        if (f->last != NULL && bits == f->last_bits) {
            Py_INCREF(f->last);
            return f->last;
        }
        PyObject *v = scalar(f->kind, p);
        if (v != NULL) {
            Py_INCREF(v);
            Py_XSETREF(f->last, v);
            f->last_bits = bits;
        }
        return v;
    }
    if (f->last != NULL && memcmp(p, f->last_raw, (size_t)f->width) == 0) {
        Py_INCREF(f->last);
        return f->last;
    }
    PyObject *v = field_build(f, p);
    if (v != NULL) {
        Py_INCREF(v);
        Py_XSETREF(f->last, v);
        memcpy(f->last_raw, p, (size_t)f->width);
    }
    return v;
}

static PyObject *
field_build(const Field *f, const unsigned char *p)
{
    switch (f->kind) {
    case 'z':
        return c_string(p, f->length);
    case 's':
        return PyBytes_FromStringAndSize((const char *)p, f->length);
    case '[': {
        Py_ssize_t step = scalar_size(f->elem);
        PyObject *t = PyTuple_New(f->length);
        if (t == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < f->length; i++) {
            PyObject *v = scalar(f->elem, p + i * step);
            if (v == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, v);
        }
        return t;
    }
    default:
        return scalar(f->kind, p);
    }
}

static PyObject *
tail_value(LayoutObject *self, const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *t = p + self->size;
    Py_ssize_t tn = n - self->size;
    if (self->tail == TAIL_BYTES)
        return PyBytes_FromStringAndSize((const char *)t, tn);
    if (self->tail == TAIL_STR)
        return c_string(t, tn);
    return c_strings(t, tn);
}

static PyObject *
layout_build_direct(LayoutObject *self, const unsigned char *p, Py_ssize_t n)
{
    PyTypeObject *cls = (PyTypeObject *)self->cls;
    PyObject *obj = cls->tp_alloc(cls, 0); /* zeroed slots, as msgspec's Struct_alloc */
    if (obj == NULL)
        return NULL;
    Py_ssize_t i = 0;
    for (; i < self->nfields; i++) {
        PyObject *v = field_value(&self->fields[i], p);
        if (v == NULL)
            goto fail;
        *(PyObject **)((char *)obj + self->slots[i]) = v; /* the slot owns it */
    }
    if (self->tail != TAIL_NONE) {
        PyObject *v = tail_value(self, p, n);
        if (v == NULL)
            goto fail;
        *(PyObject **)((char *)obj + self->slots[i]) = v;
    }
    return obj;
fail:
    Py_DECREF(obj); /* its dealloc clears the slots filled so far */
    return NULL;
}

/* Decode the record of n bytes at p: a new reference, or NULL with an error set. */
static PyObject *
layout_decode(LayoutObject *self, const unsigned char *p, Py_ssize_t n)
{
    if (self->tail == TAIL_NONE ? n != self->size : n < self->size) {
        PyObject *exc = PyObject_CallFunction(self->size_error, "n", n);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (self->slots != NULL)
        return layout_build_direct(self, p, n);
    PyObject *small[16];
    Py_ssize_t nargs = self->nfields + (self->tail != TAIL_NONE);
    PyObject **argv = small;
    if (nargs > 16) {
        argv = PyMem_Malloc(sizeof(PyObject *) * (size_t)nargs);
        if (argv == NULL)
            return PyErr_NoMemory();
    }
    Py_ssize_t made = 0;
    PyObject *result = NULL;
    for (; made < self->nfields; made++) {
        argv[made] = field_value(&self->fields[made], p);
        if (argv[made] == NULL)
            goto done;
    }
    if (self->tail != TAIL_NONE) {
        argv[made] = tail_value(self, p, n);
        if (argv[made] == NULL)
            goto done;
        made++;
    }
    result = PyObject_Vectorcall(self->cls, argv, (size_t)nargs, NULL);
done:
    for (Py_ssize_t i = 0; i < made; i++)
        Py_DECREF(argv[i]);
    if (argv != small)
        PyMem_Free(argv);
    return result;
}

/* The slot offsets of the named fields of cls, for direct construction:
 * NULL (no error set) unless every one is an object slot of an untracked type. */
static Py_ssize_t *
slot_offsets(PyObject *cls, PyObject *names)
{
    if (!PyType_Check(cls) || PyType_HasFeature((PyTypeObject *)cls, Py_TPFLAGS_HAVE_GC))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    Py_ssize_t *slots = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    if (slots == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        int ok = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            slots[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_XDECREF(d);
        if (!ok) {
            PyErr_Clear();
            PyMem_Free(slots);
            return NULL;
        }
    }
    return slots;
}

/* Layout(cls, fields, size, tail, size_error, direct_names=None);
 * fields: ((kind, offset, length, elem), ...); direct_names: the field names
 * in argument order, when instances may be built directly. */
static PyObject *
layout_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *cls, *fields, *size_error, *direct = Py_None;
    Py_ssize_t size;
    const char *tail;
    if (!PyArg_ParseTuple(args, "OO!nsO|O:Layout", &cls, &PyTuple_Type, &fields, &size, &tail,
                          &size_error, &direct))
        return NULL;
    LayoutObject *self = (LayoutObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = NULL;
    Py_INCREF(cls);
    self->cls = cls;
    Py_INCREF(size_error);
    self->size_error = size_error;
    self->size = size;
    if (strcmp(tail, "") == 0)
        self->tail = TAIL_NONE;
    else if (strcmp(tail, "bytes") == 0)
        self->tail = TAIL_BYTES;
    else if (strcmp(tail, "str") == 0)
        self->tail = TAIL_STR;
    else if (strcmp(tail, "list") == 0)
        self->tail = TAIL_LIST;
    else {
        PyErr_Format(PyExc_ValueError, "unknown tail kind %s", tail);
        goto fail;
    }
    self->nfields = PyTuple_GET_SIZE(fields);
    self->fields = PyMem_Calloc((size_t)self->nfields + 1, sizeof(Field));
    if (self->fields == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        Field *f = &self->fields[i];
        const char *kind, *elem;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "snns", &kind, &f->offset,
                              &f->length, &elem))
            goto fail;
        f->kind = kind[0];
        f->elem = elem[0];
        Py_ssize_t width = f->kind == 'z' || f->kind == 's' ? f->length
                           : f->kind == '[' ? f->length * scalar_size(f->elem)
                           : scalar_size(f->kind);
        if (width < 0 || (f->kind == '[' && scalar_size(f->elem) < 0) || f->offset < 0
            || f->offset + width > size) {
            PyErr_Format(PyExc_ValueError, "field %zd does not fit the layout", i);
            goto fail;
        }
        f->width = width;
        f->memo_ok = (f->kind == 'z' || scalar_size(f->kind) > 0)
                     && width <= (Py_ssize_t)sizeof(f->last_raw);
    }
    if (direct != Py_None) {
        if (!PyTuple_Check(direct)
            || PyTuple_GET_SIZE(direct) != self->nfields + (self->tail != TAIL_NONE)) {
            PyErr_SetString(PyExc_ValueError, "direct_names must name every argument");
            goto fail;
        }
        self->slots = slot_offsets(cls, direct); /* NULL: call cls after all */
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void
layout_dealloc(LayoutObject *self)
{
    Py_XDECREF(self->cls);
    Py_XDECREF(self->size_error);
    for (Py_ssize_t i = 0; self->fields != NULL && i < self->nfields; i++)
        Py_XDECREF(self->fields[i].last);
    PyMem_Free(self->fields);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Borrow the bytes of a buffer object, checked to hold [off, off + n). */
static int
get_span(PyObject *obj, Py_buffer *view, Py_ssize_t off, Py_ssize_t n)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (off < 0 || n < 0 || off > view->len || n > view->len - off) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "a %zd-byte record at offset %zd runs past the "
                     "%zd-byte buffer", n, off, view->len);
        return -1;
    }
    return 0;
}

/* layout(buf, off, n): the same call as a generated Python decoder. */
static PyObject *
layout_call(PyObject *callable, PyObject *args, PyObject *kwargs)
{
    PyObject *buf;
    Py_ssize_t off, n;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "a decoder takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "Onn:decode", &buf, &off, &n))
        return NULL;
    Py_buffer view;
    if (get_span(buf, &view, off, n) < 0)
        return NULL;
    PyObject *ev = layout_decode((LayoutObject *)callable, (const unsigned char *)view.buf + off,
                                 n);
    PyBuffer_Release(&view);
    return ev;
}

static PyObject *
layout_direct(LayoutObject *self, void *closure)
{
    return PyBool_FromLong(self->slots != NULL);
}

static PyGetSetDef layout_getset[] = {
    {"direct", (getter)layout_direct, NULL, "whether instances are built directly", NULL},
    {NULL},
};

static PyMemberDef layout_members[] = {
    {"event_type", T_OBJECT, offsetof(LayoutObject, cls), READONLY, "the Event type"},
    {"size", T_PYSSIZET, offsetof(LayoutObject, size), READONLY, "sizeof, or the tail offset"},
    {NULL},
};

static PyTypeObject LayoutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aioringbuf._fastring.Layout",
    .tp_doc = "A native decoder (buf, off, n) -> event, built from _codec's field list.",
    .tp_basicsize = sizeof(LayoutObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = layout_new,
    .tp_dealloc = (destructor)layout_dealloc,
    .tp_call = layout_call,
    .tp_members = layout_members,
    .tp_getset = layout_getset,
};

/* ------------------------------------------------------------------------
 * The walks
 */

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
        return layout_decode((LayoutObject *)decode, p, n);
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

static PyObject *
result(unsigned long long pos, int busy, Py_ssize_t discarded, Py_ssize_t decode_errors,
       PyObject *error, unsigned long long lost)
{
    PyObject *r = Py_BuildValue("(KNnnOK)", pos, PyBool_FromLong(busy), discarded,
                                decode_errors, error ? error : Py_None, lost);
    Py_XDECREF(error);
    return r;
}

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
"a plain tuple: (pos, busy, discarded, decode_errors, error, lost).");

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
    Py_ssize_t taken = 0, discarded = 0, decode_errors = 0;
    int busy = 0;
    PyObject *error = NULL;
    while (cons < prod && taken < budget) {
        Py_ssize_t off = base + (Py_ssize_t)(cons & mask);
        if (off < 0 || off > view.len - RB_HDR_SZ) {
            PyErr_Format(PyExc_ValueError, "ring position %llu is outside the buffer", cons);
            goto fail;
        }
        uint32_t word = __atomic_load_n((const uint32_t *)(mem + off), __ATOMIC_ACQUIRE);
        uint32_t len = word & ~(RB_BUSY_BIT | RB_DISCARD_BIT);
        if (word & RB_BUSY_BIT) {
            busy = 1; /* records are ordered by reservation: later ones wait */
            break;
        }
        unsigned long long start = cons;
        cons += ((unsigned long long)len + RB_HDR_SZ + 7) & ~7ULL;
        if (word & RB_DISCARD_BIT) {
            discarded++;
            continue;
        }
        Py_ssize_t at = off + RB_HDR_SZ;
        PyObject *ev = decode_one(decode, data, at, mem + at, (Py_ssize_t)len, view.len - at);
        int next = take(events, &st, ev, start, strict, &error, &taken, &decode_errors);
        if (next == TAKE_FAIL)
            goto fail;
        if (next == TAKE_STOP)
            break;
    }
    PyBuffer_Release(&view);
    if (starts_flush(&st) < 0) {
        Py_XDECREF(error);
        return NULL;
    }
    return result(cons, busy, discarded, decode_errors, error, 0);
fail:
    Py_XDECREF(error);
    PyMem_Free(st.buf);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *
perf_corrupt(const char *fmt, unsigned long long pos, unsigned long a, unsigned long b)
{
    PyObject *mod = PyImport_ImportModule("aioringbuf._perfring");
    if (mod == NULL)
        return NULL;
    PyObject *cls = PyObject_GetAttrString(mod, "PerfRingCorrupt");
    Py_DECREF(mod);
    if (cls == NULL)
        return NULL;
    PyObject *msg = PyUnicode_FromFormat(fmt, pos, a, b);
    if (msg != NULL)
        PyErr_SetObject(cls, msg);
    Py_XDECREF(msg);
    Py_DECREF(cls);
    return NULL;
}

PyDoc_STRVAR(walk_perf_doc,
"walk_perf(data, base, size, tail, head, budget, decode, events, starts, strict, exact_size=-1)\n"
"--\n\n"
"The perf ring walk of aioringbuf._perfring.walk_perf, returning the same\n"
"fields as a plain tuple: (pos, busy, discarded, decode_errors, error, lost).");

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
    PyObject *error = NULL;
    while (tail < head && taken < budget) {
        Py_ssize_t off = (Py_ssize_t)(tail & mask);
        uint32_t type;
        uint16_t rsize;
        memcpy(&type, area + off, 4);
        memcpy(&rsize, area + off + 6, 2);
        if (rsize < PERF_HDR_SZ || (rsize & 7)) {
            perf_corrupt("perf ring record at position %llu has size %lu: the ring is corrupt",
                         tail, rsize, 0);
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
            if (rsize >= 24) {
                memcpy(&n, rec + 16, 8);
                lost += n;
            }
            continue;
        }
        if (type != PERF_RECORD_SAMPLE || rsize < PERF_RAW_OFFSET)
            continue;
        uint32_t n;
        memcpy(&n, rec + PERF_HDR_SZ, 4);
        if (n > (uint32_t)(rsize - PERF_RAW_OFFSET)) {
            perf_corrupt("perf sample at position %llu claims %lu bytes in a %lu-byte record: "
                         "the ring is corrupt", start, n, rsize);
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
        if (next == TAKE_STOP)
            break;
    }
    PyMem_Free(copy);
    PyBuffer_Release(&view);
    if (starts_flush(&st) < 0) {
        Py_XDECREF(error);
        return NULL;
    }
    return result(tail, 0, 0, decode_errors, error, lost);
fail:
    Py_XDECREF(error);
    PyMem_Free(copy);
    PyMem_Free(st.buf);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------------
 * Ready: an awaitable that is already done, with its value
 */

typedef struct {
    PyObject_HEAD
    PyObject *value;
} ReadyObject;

static PyTypeObject ReadyType;

static PyObject *
ready_new(PyObject *value)
{
    ReadyObject *r = PyObject_New(ReadyObject, &ReadyType);
    if (r == NULL)
        return NULL;
    Py_INCREF(value);
    r->value = value;
    return (PyObject *)r;
}

static void
ready_dealloc(ReadyObject *self)
{
    Py_XDECREF(self->value);
    PyObject_Free(self);
}

static PyObject *
ready_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

/* Python >= 3.10 sends into an awaited iterator with am_send: no StopIteration. */
static PySendResult
ready_am_send(ReadyObject *self, PyObject *arg, PyObject **presult)
{
    if (self->value == NULL) {
        Py_INCREF(Py_None);
        *presult = Py_None;
        return PYGEN_RETURN;
    }
    *presult = self->value; /* the reference moves to the caller */
    self->value = NULL;
    return PYGEN_RETURN;
}

static PyObject *
ready_iternext(ReadyObject *self)
{
    PyObject *value = self->value ? self->value : Py_None;
    /* StopIteration(value), built explicitly so a tuple value is not unpacked. */
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_CLEAR(self->value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
ready_send(ReadyObject *self, PyObject *arg)
{
    return ready_iternext(self);
}

static PyObject *
ready_throw(ReadyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "throw() needs an exception");
        return NULL;
    }
    Py_CLEAR(self->value);
    PyObject *typ = args[0];
    PyObject *val = nargs > 1 ? args[1] : NULL;
    if (PyExceptionInstance_Check(typ))
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    else if (val != NULL && val != Py_None)
        PyErr_SetObject(typ, val);
    else
        PyErr_SetNone(typ);
    return NULL;
}

static PyObject *
ready_close(ReadyObject *self, PyObject *unused)
{
    Py_CLEAR(self->value);
    Py_RETURN_NONE;
}

static PyMethodDef ready_methods[] = {
    {"send", (PyCFunction)ready_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ready_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)ready_close, METH_NOARGS, NULL},
    {NULL},
};

static PyAsyncMethods ready_as_async = {
    .am_await = ready_await,
    .am_send = (sendfunc)ready_am_send,
};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aioringbuf._fastring.Ready",
    .tp_doc = "An awaitable that is already done: awaiting it returns its value.",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ready_iternext,
    .tp_methods = ready_methods,
};

/* ------------------------------------------------------------------------
 * Cursor: the batch being delivered, and the fast path of __anext__
 */

typedef struct {
    PyObject_HEAD
    PyObject *batch;
    Py_ssize_t idx;
    Py_ssize_t nbatch;
    ReadyObject *ready; /* reused while nobody else holds it */
} CursorObject;

static PyObject *str_anext_slow;

static PyObject *
cursor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    /* Subclasses take their own arguments in __init__: ignore them here. */
    CursorObject *self = (CursorObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->batch = PyList_New(0);
    if (self->batch == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
cursor_traverse(CursorObject *self, visitproc visit, void *arg)
{
    /* Not the type: every subclass is a Python class, whose own traverse
     * visits it (and whose dealloc drops it) before calling ours. */
    Py_VISIT(self->batch);
    return 0;
}

static int
cursor_clear(CursorObject *self)
{
    Py_CLEAR(self->batch);
    Py_CLEAR(self->ready);
    return 0;
}

static void
cursor_dealloc(CursorObject *self)
{
    PyObject_GC_UnTrack(self);
    cursor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
cursor_anext(CursorObject *self)
{
    Py_ssize_t i = self->idx;
    PyObject *batch = self->batch;
    if (i < self->nbatch && batch != NULL && PyList_CheckExact(batch)
        && i < PyList_GET_SIZE(batch)) {
        PyObject *value = PyList_GET_ITEM(batch, i);
        self->idx = i + 1;
        ReadyObject *r = self->ready;
        if (r != NULL && Py_REFCNT(r) == 1) {
            /* `async for` awaited the last one and let it go: use it again. */
            Py_INCREF(value);
            Py_XSETREF(r->value, value);
            Py_INCREF(r);
            return (PyObject *)r;
        }
        PyObject *fresh = ready_new(value);
        if (fresh != NULL) {
            Py_INCREF(fresh);
            Py_XSETREF(self->ready, (ReadyObject *)fresh);
        }
        return fresh;
    }
    return PyObject_CallMethodNoArgs((PyObject *)self, str_anext_slow);
}

static PyObject *
cursor_aiter(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PyAsyncMethods cursor_as_async = {
    .am_aiter = cursor_aiter,
    .am_anext = (unaryfunc)cursor_anext,
};

static PyMemberDef cursor_members[] = {
    {"_batch", T_OBJECT, offsetof(CursorObject, batch), 0, "the batch being delivered"},
    {"_idx", T_PYSSIZET, offsetof(CursorObject, idx), 0, "the next event's index in it"},
    {"_nbatch", T_PYSSIZET, offsetof(CursorObject, nbatch), 0, "its length"},
    {NULL},
};

static PyTypeObject CursorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aioringbuf._fastring.Cursor",
    .tp_doc = "Base of every stream: __anext__ hands out the next event of the batch,\n"
              "or awaits self._anext_slow() once it is used up.",
    .tp_basicsize = sizeof(CursorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = cursor_new,
    .tp_traverse = (traverseproc)cursor_traverse,
    .tp_clear = (inquiry)cursor_clear,
    .tp_dealloc = (destructor)cursor_dealloc,
    .tp_as_async = &cursor_as_async,
    .tp_members = cursor_members,
};

/* ------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL, walk_doc},
    {"walk_perf", (PyCFunction)(void (*)(void))walk_perf, METH_FASTCALL, walk_perf_doc},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aioringbuf._fastring",
    .m_doc = "aioringbuf's hot path in C: record walks, native decoders, the stream cursor.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastring(void)
{
    if (PyType_Ready(&LayoutType) < 0 || PyType_Ready(&ReadyType) < 0
        || PyType_Ready(&CursorType) < 0)
        return NULL;
    str_anext_slow = PyUnicode_InternFromString("_anext_slow");
    if (str_anext_slow == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LayoutType);
    Py_INCREF(&CursorType);
    Py_INCREF(&ReadyType);
    if (PyModule_AddObject(m, "Layout", (PyObject *)&LayoutType) < 0
        || PyModule_AddObject(m, "Cursor", (PyObject *)&CursorType) < 0
        || PyModule_AddObject(m, "Ready", (PyObject *)&ReadyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
