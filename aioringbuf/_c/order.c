/*
 * order.c: load_acquire(), store_release(), full_fence().
 *
 * Twin of aioringbuf/_order.py: the ordered accesses to the position
 * words the kernel shares with us (a ring buffer's producer_pos and
 * consumer_pos, a perf ring's data_head and data_tail), as C11 atomics,
 * correct on any CPU. The Python twin is correct on x86-64 only, and says
 * why there. Which accesses pair with which kernel lines is written down
 * at each caller (aioringbuf/_ringmap.py, _perfmap.py, _source.py) and in
 * docs/architecture.md; the record headers' acquire loads are in walk.c.
 */
#include "fastring.h"

/* The 8-byte word at byte offset off of a buffer object, checked to be
 * inside it and 8-aligned (an atomic access must not straddle). */
static uint64_t *
word_at(PyObject *obj, Py_buffer *view, PyObject *offset, int flags)
{
    Py_ssize_t off = PyLong_AsSsize_t(offset);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return NULL;
    uintptr_t addr = (uintptr_t)view->buf + (uintptr_t)off;
    if (off < 0 || off > view->len - 8 || (addr & 7)) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "no aligned 8-byte word at offset %zd of a %zd-byte "
                     "buffer", off, view->len);
        return NULL;
    }
    return (uint64_t *)addr;
}

PyDoc_STRVAR(load_acquire_doc,
"load_acquire(buffer, offset) -> int\n--\n\n"
"The u64 at ``offset``, loaded with acquire ordering: no later load or store\n"
"of this thread happens before it.");

static PyObject *
load_acquire(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_acquire() takes 2 arguments");
        return NULL;
    }
    Py_buffer view;
    uint64_t *w = word_at(args[0], &view, args[1], PyBUF_SIMPLE);
    if (w == NULL)
        return NULL;
    uint64_t v = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(v);
}

PyDoc_STRVAR(store_release_doc,
"store_release(buffer, offset, value)\n--\n\n"
"Store the u64 ``value`` at ``offset`` with release ordering: every earlier\n"
"load and store of this thread happens before it.");

static PyObject *
store_release(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store_release() takes 3 arguments");
        return NULL;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(args[2]);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    uint64_t *w = word_at(args[0], &view, args[1], PyBUF_WRITABLE);
    if (w == NULL)
        return NULL;
    __atomic_store_n(w, (uint64_t)v, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(full_fence_doc,
"full_fence()\n--\n\n"
"A full memory barrier: no load after it happens before a store before it\n"
"(the one reordering release and acquire allow; on x86-64, MFENCE).");

static PyObject *
full_fence(PyObject *module, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

PyMethodDef order_methods[] = {
    {"load_acquire", (PyCFunction)(void (*)(void))load_acquire, METH_FASTCALL,
     load_acquire_doc},
    {"store_release", (PyCFunction)(void (*)(void))store_release, METH_FASTCALL,
     store_release_doc},
    {"full_fence", full_fence, METH_NOARGS, full_fence_doc},
    {NULL},
};
