/* sclib_blake3tree: BLAKE3 chaining values of subtrees, and their merge.
 *
 * A BLAKE3 hash is the root of a binary tree over 1 KiB chunks. The hash of a
 * whole file can be built from the "chaining values" (CVs) of aligned pieces of
 * it, so a file copied in parallel chunks needs one hash pass, not two: each
 * chunk's CV is both the chunk's own digest (it commits to the chunk's bytes and
 * to its offset) and an input to the file's hash, computed by merging the CVs.
 * This is what the Rust crate's `hazmat` module offers (set_input_offset,
 * finalize_non_root, merge_subtrees_*); the Python bindings do not expose it.
 *
 * Built on the reference C implementation (vendor/, BLAKE3 1.3.1, CC0 or
 * Apache-2.0), whose hasher is included here so its internal helpers (chunk
 * states, outputs, parent nodes) can be used. The hasher keeps a stack of CVs
 * and merges it by the number of 1 bits in the chunk count; a subtree that
 * starts at chunk c is hashed by starting the counter at c and counting
 * popcount(c) placeholder entries at the bottom of the stack, which are never
 * merged because the subtree never reaches past the next power-of-two boundary.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "vendor/blake3.c"

#define RELEASE_GIL_AT 4096

typedef struct {
    PyObject_HEAD
    blake3_hasher hasher;
    unsigned long long offset; /* bytes; a multiple of BLAKE3_CHUNK_LEN */
    unsigned long long limit;  /* most bytes the subtree may hold; 0: no limit */
    unsigned long long length; /* bytes given so far */
    size_t base;               /* stack entries standing for chunks before offset */
    int ready;                 /* __init__ ran (it may run only once) */
    PyThread_type_lock lock;
} SubtreeHasher;

static PyObject *hasher_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    SubtreeHasher *self = (SubtreeHasher *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    /* a usable empty hasher at offset 0 even if __init__ is never called */
    blake3_hasher_init(&self->hasher);
    return (PyObject *)self;
}

static void hasher_dealloc(SubtreeHasher *self) {
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int hasher_init(SubtreeHasher *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"offset", NULL};
    PyObject *arg = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O!", names, &PyLong_Type, &arg)) {
        return -1;
    }
    if (self->ready) {
        /* re-initialising would race with an update running without the GIL */
        PyErr_SetString(PyExc_TypeError, "a SubtreeHasher is initialised only once");
        return -1;
    }
    unsigned long long offset = 0;
    if (arg != NULL) {
        offset = PyLong_AsUnsignedLongLong(arg); /* OverflowError if < 0 or too big */
        if (offset == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (offset % BLAKE3_CHUNK_LEN != 0) {
        PyErr_Format(PyExc_ValueError,
                     "offset %llu is not a multiple of %d bytes (a BLAKE3 chunk)",
                     offset, BLAKE3_CHUNK_LEN);
        return -1;
    }
    uint64_t counter = offset / BLAKE3_CHUNK_LEN;
    if (counter >> BLAKE3_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "offset %llu is too large", offset);
        return -1;
    }
    blake3_hasher_init(&self->hasher);
    self->hasher.chunk.chunk_counter = counter;
    self->base = popcnt(counter);
    memset(self->hasher.cv_stack, 0, sizeof(self->hasher.cv_stack));
    self->hasher.cv_stack_len = (uint8_t)self->base;
    self->offset = offset;
    /* the largest aligned subtree starting here: the lowest set bit of offset */
    self->limit = counter ? (unsigned long long)(counter & (~counter + 1)) * BLAKE3_CHUNK_LEN : 0;
    self->length = 0;
    self->ready = 1;
    return 0;
}

static PyObject *hasher_update(SubtreeHasher *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    unsigned long long n = (unsigned long long)view.len;
    if (!PyThread_acquire_lock(self->lock, 0)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, 1);
        Py_END_ALLOW_THREADS
    }
    if (self->limit && self->length + n > self->limit) {
        PyThread_release_lock(self->lock);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "a subtree at offset %llu holds at most %llu bytes; %llu given",
                     self->offset, self->limit, self->length + n);
        return NULL;
    }
    if (view.len >= RELEASE_GIL_AT) {
        Py_BEGIN_ALLOW_THREADS
        blake3_hasher_update(&self->hasher, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        blake3_hasher_update(&self->hasher, view.buf, (size_t)view.len);
    }
    self->length += n;
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* The non-root output of everything given so far: blake3_hasher_finalize_seek,
 * with the stack's bottom at `base` and a chaining value instead of root bytes. */
static void subtree_cv(const blake3_hasher *h, size_t base, uint8_t out[BLAKE3_OUT_LEN]) {
    output_t output;
    size_t cvs_remaining;
    if (h->cv_stack_len == base) {
        output = chunk_state_output(&h->chunk);
        output_chaining_value(&output, out);
        return;
    }
    if (chunk_state_len(&h->chunk) > 0) {
        cvs_remaining = h->cv_stack_len - base;
        output = chunk_state_output(&h->chunk);
    } else {
        cvs_remaining = h->cv_stack_len - base - 2;
        output = parent_output(&h->cv_stack[(base + cvs_remaining) * 32], h->key,
                               h->chunk.flags);
    }
    while (cvs_remaining > 0) {
        cvs_remaining -= 1;
        uint8_t parent_block[BLAKE3_BLOCK_LEN];
        memcpy(parent_block, &h->cv_stack[(base + cvs_remaining) * 32], 32);
        output_chaining_value(&output, &parent_block[32]);
        output = parent_output(parent_block, h->key, h->chunk.flags);
    }
    output_chaining_value(&output, out);
}

static PyObject *hasher_chaining_value(SubtreeHasher *self, PyObject *Py_UNUSED(ignored)) {
    uint8_t out[BLAKE3_OUT_LEN];
    if (self->length == 0) {
        PyErr_SetString(PyExc_ValueError, "an empty subtree has no chaining value");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, 1);
    Py_END_ALLOW_THREADS
    subtree_cv(&self->hasher, self->base, out);
    PyThread_release_lock(self->lock);
    return PyBytes_FromStringAndSize((const char *)out, BLAKE3_OUT_LEN);
}

static PyObject *hasher_digest(SubtreeHasher *self, PyObject *Py_UNUSED(ignored)) {
    uint8_t out[BLAKE3_OUT_LEN];
    if (self->offset != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "only a hasher at offset 0 has a root digest (the whole input's)");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, 1);
    Py_END_ALLOW_THREADS
    blake3_hasher_finalize(&self->hasher, out, BLAKE3_OUT_LEN);
    PyThread_release_lock(self->lock);
    return PyBytes_FromStringAndSize((const char *)out, BLAKE3_OUT_LEN);
}

static PyObject *hasher_get_length(SubtreeHasher *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->length);
}

static PyObject *hasher_get_offset(SubtreeHasher *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->offset);
}

static PyMethodDef hasher_methods[] = {
    {"update", (PyCFunction)hasher_update, METH_O,
     "Add bytes (any buffer) to the subtree."},
    {"chaining_value", (PyCFunction)hasher_chaining_value, METH_NOARGS,
     "The subtree's 32-byte chaining value (non-root output)."},
    {"digest", (PyCFunction)hasher_digest, METH_NOARGS,
     "The 32-byte BLAKE3 hash of the input (offset 0 only)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hasher_getset[] = {
    {"length", (getter)hasher_get_length, NULL, "bytes given so far", NULL},
    {"offset", (getter)hasher_get_offset, NULL, "the subtree's offset in the input", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SubtreeHasherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sclib_blake3tree.SubtreeHasher",
    .tp_doc = "SubtreeHasher(offset=0): the BLAKE3 chaining value of the bytes of an\n"
              "input that start at `offset` (a multiple of 1024). The bytes must not\n"
              "reach past the next multiple of the largest power of two dividing\n"
              "`offset` (any length at offset 0).",
    .tp_basicsize = sizeof(SubtreeHasher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = hasher_new,
    .tp_init = (initproc)hasher_init,
    .tp_dealloc = (destructor)hasher_dealloc,
    .tp_methods = hasher_methods,
    .tp_getset = hasher_getset,
};

static PyObject *merge(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs) {
    static char *names[] = {"left", "right", "root", NULL};
    Py_buffer left, right;
    int root = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*|p", names, &left, &right, &root)) {
        return NULL;
    }
    if (left.len != BLAKE3_OUT_LEN || right.len != BLAKE3_OUT_LEN) {
        PyErr_Format(PyExc_ValueError,
                     "chaining values are %d bytes; got %zd and %zd", BLAKE3_OUT_LEN,
                     left.len, right.len);
        PyBuffer_Release(&left);
        PyBuffer_Release(&right);
        return NULL;
    }
    uint8_t block[BLAKE3_BLOCK_LEN];
    memcpy(block, left.buf, BLAKE3_OUT_LEN);
    memcpy(block + BLAKE3_OUT_LEN, right.buf, BLAKE3_OUT_LEN);
    PyBuffer_Release(&left);
    PyBuffer_Release(&right);
    uint8_t out[BLAKE3_OUT_LEN];
    output_t output = parent_output(block, IV, 0);
    if (root) {
        output_root_bytes(&output, 0, out, BLAKE3_OUT_LEN);
    } else {
        output_chaining_value(&output, out);
    }
    return PyBytes_FromStringAndSize((const char *)out, BLAKE3_OUT_LEN);
}

static PyMethodDef module_methods[] = {
    {"merge", (PyCFunction)(void (*)(void))merge, METH_VARARGS | METH_KEYWORDS,
     "merge(left, right, root=False): the parent of two chaining values; with\n"
     "root=True the BLAKE3 hash of the input the two subtrees make up."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sclib_blake3tree",
    .m_doc = "BLAKE3 chaining values of aligned subtrees, and their merge.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit_sclib_blake3tree(void) {
    if (PyType_Ready(&SubtreeHasherType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&SubtreeHasherType);
    if (PyModule_AddObject(module, "SubtreeHasher", (PyObject *)&SubtreeHasherType) < 0 ||
        PyModule_AddStringConstant(module, "BLAKE3_VERSION", BLAKE3_VERSION_STRING) < 0 ||
        PyModule_AddIntConstant(module, "CHUNK_LEN", BLAKE3_CHUNK_LEN) < 0) {
        Py_DECREF(&SubtreeHasherType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
