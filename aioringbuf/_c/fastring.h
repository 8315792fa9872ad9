/*
 * What the C sources of aioringbuf._fastring share (see module.c for why
 * they form one extension module). Each source is the twin of one
 * pure-Python module and says so at its top:
 *
 *   walk.c    _ring.walk and _perfring.walk_perf (the record walks)
 *   codec.c   _codec's generated decoders (Layout)
 *   cursor.c  _cursor.PyCursor (the stream's per-event __anext__)
 *   order.c   _order (ordered loads and stores of the shared positions)
 *   module.c  the module object that gathers them
 */
#ifndef AIORINGBUF_FASTRING_H
#define AIORINGBUF_FASTRING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "_fastring reads little-endian records natively"
#endif

/* codec.c */
extern PyTypeObject LayoutType;
/* Decode the n-byte record at p with a Layout: a new reference, or NULL
 * with an error set (RecordSizeError for the wrong size, as in Python). */
PyObject *layout_decode(PyObject *layout, const unsigned char *p, Py_ssize_t n);

/* walk.c */
extern PyMethodDef walk_methods[];

/* order.c */
extern PyMethodDef order_methods[];

/* cursor.c */
extern PyTypeObject ReadyType;
extern PyTypeObject CursorType;
int cursor_module_init(void); /* 0, or -1 with an error set */

#endif
