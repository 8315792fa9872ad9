/*
 * module.c: aioringbuf._fastring, the optional C hot path (see _fast.py).
 *
 * One extension module built from one source per Python module it speeds
 * up (walk.c, codec.c, cursor.c, order.c; see fastring.h). One module rather than
 * three because the walks call the codec's decoder natively, record by
 * record: across modules that would need a capsule and an indirect call,
 * and three imports that could fail separately. The pure-Python twins
 * stay the reference; _fast.py picks the C or the Python one.
 */
#include "fastring.h"

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aioringbuf._fastring",
    .m_doc = "aioringbuf's hot path in C: record walks, native decoders, the stream cursor.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastring(void)
{
    if (PyType_Ready(&LayoutType) < 0 || cursor_module_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, walk_methods) < 0
        || PyModule_AddFunctions(m, order_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
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
