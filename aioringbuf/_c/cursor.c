/*
 * cursor.c: Cursor, the base type of every stream, and Ready.
 *
 * Twin of aioringbuf/_fast.py PyCursor: same attributes (_batch, _idx,
 * _nbatch), same behaviour, but __anext__ hands out the next event of the
 * current batch as an already-completed awaitable (Ready: no coroutine, no
 * frame) and calls the Python _anext_slow() coroutine only when the batch
 * is used up.
 */
#include "fastring.h"

typedef struct {
    PyObject_HEAD
    PyObject *value;
} ReadyObject;

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

PyTypeObject ReadyType = {
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

PyTypeObject CursorType = {
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
int
cursor_module_init(void)
{
    if (PyType_Ready(&ReadyType) < 0 || PyType_Ready(&CursorType) < 0)
        return -1;
    str_anext_slow = PyUnicode_InternFromString("_anext_slow");
    return str_anext_slow == NULL ? -1 : 0;
}
