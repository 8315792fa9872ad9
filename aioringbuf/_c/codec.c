/*
 * codec.c: Layout, a native decoder for one Event type.
 *
 * Twin of the decoders aioringbuf/_codec.py generates (_codec._compile):
 * built from the same field list, called the same way (buf, off, n), it
 * returns the same event or raises the same RecordSizeError, reading the
 * C struct and filling the msgspec Struct without the struct.unpack tuple.
 */
#include "fastring.h"

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
PyObject *
layout_decode(PyObject *layout, const unsigned char *p, Py_ssize_t n)
{
    LayoutObject *self = (LayoutObject *)layout;
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
    PyObject *ev = layout_decode(callable, (const unsigned char *)view.buf + off,
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

PyTypeObject LayoutType = {
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