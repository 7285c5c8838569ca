/* deeprc_core._stack: one batch of rows from separate column buffers, interleaved.
 *
 * numpy can only do this one column at a time (a strided write per column, ~0.5 ns per
 * element in its generic copy loop); here one call fills the whole batch with the GIL
 * released, at about the speed memory delivers the columns. Optional: deeprc_core.views
 * falls back to numpy when this module is not built (see views.STACK_KERNEL).
 *
 * stack(out, columns, rows) -> None
 *   out      writable C-contiguous buffer of m * L * F items (the batch, (m, F) or (m, L, F))
 *   columns  sequence of F buffers of the same item size: 1-D (L = 1) or 2-D windows whose
 *            rows are contiguous (strides (s, itemsize), L = shape[1]); sample r of column j
 *            starts at columns[j].buf + r * strides[0]
 *   rows     an int (samples rows .. rows + m - 1) or a C-contiguous int64 buffer of m samples
 * Item sizes 1, 2, 4 and 8 bytes. Every sample is checked against every column's length
 * before anything is written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Consecutive rows are copied in blocks of BLOCK samples: the block of the batch stays in
 * L1 while each column writes its slot of every row in it (64 measured fastest of 64..4096). */
#define BLOCK 64

typedef struct {
    const char *base;   /* first sample */
    Py_ssize_t stride;  /* bytes between samples */
} Column;

#define DEFINE_FILL(NAME, T)                                                              \
    static void NAME(char *out_, const Column *cols, Py_ssize_t F, Py_ssize_t L,          \
                     Py_ssize_t m, Py_ssize_t start, const int64_t *index) {              \
        T *out = (T *)out_;                                                               \
        const Py_ssize_t row = L * F; /* items per sample in the batch */                \
        /* an index is read whole per column: more independent loads in flight */        \
        const Py_ssize_t block = index ? (m > 0 ? m : 1) : BLOCK;                         \
        for (Py_ssize_t lo = 0; lo < m; lo += block) {                                    \
            const Py_ssize_t hi = m - lo < block ? m : lo + block;                        \
            for (Py_ssize_t j = 0; j < F; j++) {                                          \
                const char *base = cols[j].base;                                          \
                const Py_ssize_t stride = cols[j].stride;                                 \
                if (L == 1 && index == NULL) { /* consecutive rows: a sequential read */  \
                    const T *src = (const T *)(base + start * stride);                    \
                    for (Py_ssize_t i = lo; i < hi; i++)                                  \
                        out[i * F + j] = *(const T *)((const char *)src + i * stride);    \
                } else if (L == 1) {                                                      \
                    for (Py_ssize_t i = lo; i < hi; i++)                                  \
                        out[i * F + j] = *(const T *)(base + (Py_ssize_t)index[i] * stride); \
                } else {                                                                  \
                    for (Py_ssize_t i = lo; i < hi; i++) {                                \
                        const Py_ssize_t r = index ? (Py_ssize_t)index[i] : start + i;    \
                        const T *src = (const T *)(base + r * stride);                    \
                        T *dst = out + i * row + j;                                       \
                        for (Py_ssize_t l = 0; l < L; l++) dst[l * F] = src[l];           \
                    }                                                                     \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }

DEFINE_FILL(fill_1, uint8_t)
DEFINE_FILL(fill_2, uint16_t)
DEFINE_FILL(fill_4, uint32_t)
DEFINE_FILL(fill_8, uint64_t)

static void release_all(Py_buffer *views, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++) PyBuffer_Release(&views[k]);
}

static PyObject *stack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *out_obj, *columns_obj, *rows_obj;
    if (!PyArg_ParseTuple(args, "OOO:stack", &out_obj, &columns_obj, &rows_obj)) return NULL;

    PyObject *seq = PySequence_Fast(columns_obj, "stack: columns must be a sequence of buffers");
    if (seq == NULL) return NULL;
    const Py_ssize_t F = PySequence_Fast_GET_SIZE(seq);
    if (F == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "stack: columns is empty");
        return NULL;
    }
    Py_buffer out = {0}, index = {0};
    int have_out = 0, have_index = 0;
    Py_ssize_t held = 0;
    PyObject *result = NULL;
    Py_buffer *views = PyMem_Calloc((size_t)F, sizeof(Py_buffer));
    Column *cols = PyMem_Calloc((size_t)F, sizeof(Column));
    if (views == NULL || cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t itemsize = 0, L = 0, n_samples = PY_SSIZE_T_MAX;
    for (Py_ssize_t j = 0; j < F; j++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, j), &views[j], PyBUF_STRIDED_RO) < 0) goto done;
        held = j + 1;
        Py_buffer *v = &views[j];
        const Py_ssize_t len = v->ndim == 2 ? v->shape[1] : 1;
        if (v->ndim < 1 || v->ndim > 2 || (v->ndim == 2 && v->strides[1] != v->itemsize) || v->strides[0] <= 0) {
            PyErr_Format(PyExc_ValueError,
                         "stack: column %zd must be 1-D, or 2-D with contiguous rows and a positive stride", j);
            goto done;
        }
        if (j == 0) {
            itemsize = v->itemsize;
            L = len;
        } else if (v->itemsize != itemsize || len != L) {
            PyErr_Format(PyExc_ValueError, "stack: column %zd differs from column 0 in item size or window length", j);
            goto done;
        }
        if (v->shape[0] < n_samples) n_samples = v->shape[0];
        cols[j].base = (const char *)v->buf;
        cols[j].stride = v->strides[0];
    }
    if (itemsize != 1 && itemsize != 2 && itemsize != 4 && itemsize != 8) {
        PyErr_Format(PyExc_ValueError, "stack: item size %zd is not 1, 2, 4 or 8 bytes", itemsize);
        goto done;
    }
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    have_out = 1;
    const Py_ssize_t per_sample = L * F * itemsize;
    if (out.len % per_sample != 0) {
        PyErr_SetString(PyExc_ValueError, "stack: out does not hold a whole number of samples");
        goto done;
    }
    const Py_ssize_t m = out.len / per_sample;
    Py_ssize_t start = 0;
    const int64_t *idx = NULL;
    if (PyLong_Check(rows_obj)) {
        start = PyLong_AsSsize_t(rows_obj);
        if (start == -1 && PyErr_Occurred()) goto done;
        if (start < 0 || start > n_samples - m) {
            PyErr_Format(PyExc_IndexError, "stack: rows %zd..%zd are outside the %zd samples of the columns", start,
                         start + m - 1, n_samples);
            goto done;
        }
    } else {
        if (PyObject_GetBuffer(rows_obj, &index, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        have_index = 1;
        if (index.itemsize != 8 || index.format == NULL || (strcmp(index.format, "l") && strcmp(index.format, "q"))) {
            PyErr_SetString(PyExc_TypeError, "stack: rows must be an int or an int64 array");
            goto done;
        }
        if (index.len / 8 != m) {
            PyErr_Format(PyExc_ValueError, "stack: %zd rows for a batch of %zd samples", index.len / 8, m);
            goto done;
        }
        idx = (const int64_t *)index.buf;
        for (Py_ssize_t i = 0; i < m; i++) {
            if (idx[i] < 0 || idx[i] >= n_samples) {
                PyErr_Format(PyExc_IndexError, "stack: row %lld is outside the %zd samples of the columns",
                             (long long)idx[i], n_samples);
                goto done;
            }
        }
    }
    Py_BEGIN_ALLOW_THREADS
    switch (itemsize) {
        case 1: fill_1((char *)out.buf, cols, F, L, m, start, idx); break;
        case 2: fill_2((char *)out.buf, cols, F, L, m, start, idx); break;
        case 4: fill_4((char *)out.buf, cols, F, L, m, start, idx); break;
        default: fill_8((char *)out.buf, cols, F, L, m, start, idx); break;
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_index) PyBuffer_Release(&index);
    if (have_out) PyBuffer_Release(&out);
    if (views != NULL) release_all(views, held);
    PyMem_Free(views);
    PyMem_Free(cols);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"stack", stack, METH_VARARGS,
     "stack(out, columns, rows): fill the C-contiguous batch `out` with samples `rows` (a start or an int64 "
     "index) of `columns`, the columns on the last axis; the GIL is released while it copies."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "deeprc_core._stack",
    "Interleave separate column buffers into one batch (the compiled kernel behind deeprc_core.views.stack_columns).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__stack(void) { return PyModule_Create(&module); }
