/* deeprc_core._stack: batches of rows from separate column buffers, interleaved.
 *
 * numpy can only do this one column at a time (a strided write per column, ~0.5 ns per
 * element in its generic copy loop); here one call fills the whole batch with the GIL
 * released, at about the speed memory delivers the columns. Optional: deeprc_core.stacking
 * falls back to numpy when this module is not built (see stacking.STACK_KERNEL).
 *
 * Columns(columns)
 *   columns  sequence of F buffers of the same item size: 1-D (L = 1) or 2-D windows whose
 *            rows are contiguous (strides (s, itemsize), L = shape[1]); sample r of column j
 *            starts at columns[j].buf + r * strides[0]. Parsed and checked once; the object
 *            holds the buffers until it is collected.
 * stack(out, columns, rows) -> None
 *   out      writable C-contiguous buffer of m * L * F items (the batch, (m, F) or (m, L, F))
 *   columns  a Columns, or a sequence as above
 *   rows     an int (samples rows .. rows + m - 1) or a C-contiguous int64 buffer of m samples
 * Worker(capacity, threads=1)
 *   Native threads that start stack() jobs in submission order and never take the GIL:
 *   submit(out, columns, rows) -> ticket checks the job at once (the same errors as stack)
 *   and queues it; wait(ticket) blocks, GIL released, until that job and every earlier one
 *   are done. At most `capacity` jobs are queued or done-but-not-waited-for; the worker holds
 *   their buffers. close() stops and joins the threads (jobs not started are dropped);
 *   collecting the Worker closes it. On Linux the threads are named "deeprc-stack".
 *
 * Item sizes 1, 2, 4 and 8 bytes. Every sample is checked against every column's length
 * before anything is written.
 *
 * permute(out, positions, n, left, right, keys) -> None
 *   The shuffled epoch order of deeprc_core.permutation, computed instead of held: out[i] =
 *   P(positions[i]) for a Feistel network of halves `left` and `right` bits keyed by `keys`
 *   (bytes of uint64 round keys), cycle-walked into range(n). `positions` is an int (the
 *   positions first .. first + m - 1) or a C-contiguous int64 buffer; `out` a writable
 *   C-contiguous int32 or int64 buffer of m items. The same values as the numpy version there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

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

#if defined(__SSE2__)
#include <emmintrin.h>
/* 4-byte items, consecutive rows, unit-stride columns (the common float32 table): 4 rows of 4
 * columns are loaded as four vectors, transposed in registers and stored as 4 row pieces: a
 * quarter of the scalar loop's loads and stores, which brings the copy near the speed of
 * reading the columns. SSE2 is part of x86-64, so no compiler flag is needed. */
static int fill_4_rows_simd(char *out_, const Column *cols, Py_ssize_t F, Py_ssize_t m, Py_ssize_t start) {
    for (Py_ssize_t j = 0; j < F; j++)
        if (cols[j].stride != 4) return 0;
    float *out = (float *)out_;
    const Py_ssize_t F4 = F & ~(Py_ssize_t)3, m4 = m & ~(Py_ssize_t)3;
    for (Py_ssize_t lo = 0; lo < m4; lo += BLOCK) {
        const Py_ssize_t hi = m4 - lo < BLOCK ? m4 : lo + BLOCK;
        for (Py_ssize_t j = 0; j < F4; j += 4) {
            const float *c0 = (const float *)cols[j].base + start, *c1 = (const float *)cols[j + 1].base + start;
            const float *c2 = (const float *)cols[j + 2].base + start, *c3 = (const float *)cols[j + 3].base + start;
            for (Py_ssize_t i = lo; i < hi; i += 4) {
                __m128 a = _mm_loadu_ps(c0 + i), b = _mm_loadu_ps(c1 + i);
                __m128 c = _mm_loadu_ps(c2 + i), d = _mm_loadu_ps(c3 + i);
                _MM_TRANSPOSE4_PS(a, b, c, d); /* a: row i, columns j..j+3; b: row i + 1; ... */
                _mm_storeu_ps(out + i * F + j, a);
                _mm_storeu_ps(out + (i + 1) * F + j, b);
                _mm_storeu_ps(out + (i + 2) * F + j, c);
                _mm_storeu_ps(out + (i + 3) * F + j, d);
            }
        }
        for (Py_ssize_t j = F4; j < F; j++) /* the columns past the last 4 */
            for (Py_ssize_t i = lo; i < hi; i++) out[i * F + j] = ((const float *)cols[j].base)[start + i];
    }
    for (Py_ssize_t i = m4; i < m; i++) /* the rows past the last 4 */
        for (Py_ssize_t j = 0; j < F; j++) out[i * F + j] = ((const float *)cols[j].base)[start + i];
    return 1;
}
#else
static int fill_4_rows_simd(char *out_, const Column *cols, Py_ssize_t F, Py_ssize_t m, Py_ssize_t start) {
    (void)out_, (void)cols, (void)F, (void)m, (void)start;
    return 0;
}
#endif

/* ------------------------------------------------------------------ Columns */

typedef struct {
    PyObject_HEAD
    Py_ssize_t F, L, itemsize, n_samples;
    Column *cols;
    Py_buffer *views;
    Py_ssize_t held; /* views acquired */
} ColumnsObject;

static PyTypeObject ColumnsType;

static void Columns_dealloc(ColumnsObject *self) {
    for (Py_ssize_t k = 0; k < self->held; k++) PyBuffer_Release(&self->views[k]);
    PyMem_Free(self->views);
    PyMem_Free(self->cols);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Parse and check a sequence of column buffers into `self` (0) or set an error (-1). */
static int columns_parse(ColumnsObject *self, PyObject *columns_obj) {
    PyObject *seq = PySequence_Fast(columns_obj, "stack: columns must be a sequence of buffers");
    if (seq == NULL) return -1;
    int rc = -1;
    const Py_ssize_t F = PySequence_Fast_GET_SIZE(seq);
    if (F == 0) {
        PyErr_SetString(PyExc_ValueError, "stack: columns is empty");
        goto done;
    }
    self->views = PyMem_Calloc((size_t)F, sizeof(Py_buffer));
    self->cols = PyMem_Calloc((size_t)F, sizeof(Column));
    if (self->views == NULL || self->cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    self->F = F;
    self->n_samples = PY_SSIZE_T_MAX;
    for (Py_ssize_t j = 0; j < F; j++) {
        Py_buffer *v = &self->views[j];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, j), v, PyBUF_STRIDED_RO) < 0) goto done;
        self->held = j + 1;
        const Py_ssize_t len = v->ndim == 2 ? v->shape[1] : 1;
        if (v->ndim < 1 || v->ndim > 2 || (v->ndim == 2 && v->strides[1] != v->itemsize) || v->strides[0] <= 0) {
            PyErr_Format(PyExc_ValueError,
                         "stack: column %zd must be 1-D, or 2-D with contiguous rows and a positive stride", j);
            goto done;
        }
        if (j == 0) {
            self->itemsize = v->itemsize;
            self->L = len;
        } else if (v->itemsize != self->itemsize || len != self->L) {
            PyErr_Format(PyExc_ValueError, "stack: column %zd differs from column 0 in item size or window length", j);
            goto done;
        }
        if (v->shape[0] < self->n_samples) self->n_samples = v->shape[0];
        self->cols[j].base = (const char *)v->buf;
        self->cols[j].stride = v->strides[0];
    }
    if (self->itemsize != 1 && self->itemsize != 2 && self->itemsize != 4 && self->itemsize != 8) {
        PyErr_Format(PyExc_ValueError, "stack: item size %zd is not 1, 2, 4 or 8 bytes", self->itemsize);
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(seq);
    return rc;
}

static ColumnsObject *columns_new(PyObject *columns_obj) {
    ColumnsObject *self = PyObject_New(ColumnsObject, &ColumnsType);
    if (self == NULL) return NULL;
    self->F = self->L = self->itemsize = self->n_samples = self->held = 0;
    self->cols = NULL;
    self->views = NULL;
    if (columns_parse(self, columns_obj) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

static PyObject *Columns_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwargs) {
    PyObject *columns_obj;
    static char *kwlist[] = {"columns", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Columns", kwlist, &columns_obj)) return NULL;
    return (PyObject *)columns_new(columns_obj);
}

/* A Columns for `obj`: itself (a new reference) or parsed from a sequence. */
static ColumnsObject *as_columns(PyObject *obj) {
    if (PyObject_TypeCheck(obj, &ColumnsType)) {
        Py_INCREF(obj);
        return (ColumnsObject *)obj;
    }
    return columns_new(obj);
}

static PyObject *Columns_num_samples(ColumnsObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->n_samples);
}

static PyGetSetDef Columns_getset[] = {
    {"num_samples", (getter)Columns_num_samples, NULL, "samples in every column (the shortest column's)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ColumnsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "deeprc_core._stack.Columns",
    .tp_basicsize = sizeof(ColumnsObject),
    .tp_dealloc = (destructor)Columns_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Columns(columns): separate column buffers, checked once, to stack batches from.",
    .tp_getset = Columns_getset,
    .tp_new = Columns_new,
};

/* ------------------------------------------------------------------ jobs */

typedef struct {
    ColumnsObject *columns; /* a reference */
    Py_buffer out, index;
    int have_out, have_index;
    Py_ssize_t m, start;
    const int64_t *idx;
} Job;

static void job_release(Job *job) {
    if (job->have_index) PyBuffer_Release(&job->index);
    if (job->have_out) PyBuffer_Release(&job->out);
    Py_CLEAR(job->columns);
    job->have_index = job->have_out = 0;
}

/* Check one batch `out` of samples `rows` of `columns_obj` into `job` (0), or set an error (-1,
 * the job released). Needs the GIL; the job then runs without it. */
static int job_parse(Job *job, PyObject *out_obj, PyObject *columns_obj, PyObject *rows_obj) {
    memset(job, 0, sizeof(*job));
    job->columns = as_columns(columns_obj);
    if (job->columns == NULL) return -1;
    const ColumnsObject *cs = job->columns;
    if (PyObject_GetBuffer(out_obj, &job->out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto fail;
    job->have_out = 1;
    const Py_ssize_t per_sample = cs->L * cs->F * cs->itemsize;
    if (job->out.len % per_sample != 0) {
        PyErr_SetString(PyExc_ValueError, "stack: out does not hold a whole number of samples");
        goto fail;
    }
    const Py_ssize_t m = job->out.len / per_sample;
    const Py_ssize_t n_samples = cs->n_samples;
    job->m = m;
    if (PyLong_Check(rows_obj)) {
        const Py_ssize_t start = PyLong_AsSsize_t(rows_obj);
        if (start == -1 && PyErr_Occurred()) goto fail;
        if (start < 0 || start > n_samples - m) {
            PyErr_Format(PyExc_IndexError, "stack: rows %zd..%zd are outside the %zd samples of the columns", start,
                         start + m - 1, n_samples);
            goto fail;
        }
        job->start = start;
        return 0;
    }
    if (PyObject_GetBuffer(rows_obj, &job->index, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
    job->have_index = 1;
    const Py_buffer *index = &job->index;
    if (index->itemsize != 8 || index->format == NULL || (strcmp(index->format, "l") && strcmp(index->format, "q"))) {
        PyErr_SetString(PyExc_TypeError, "stack: rows must be an int or an int64 array");
        goto fail;
    }
    if (index->len / 8 != m) {
        PyErr_Format(PyExc_ValueError, "stack: %zd rows for a batch of %zd samples", index->len / 8, m);
        goto fail;
    }
    const int64_t *idx = (const int64_t *)index->buf;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (idx[i] < 0 || idx[i] >= n_samples) {
            PyErr_Format(PyExc_IndexError, "stack: row %lld is outside the %zd samples of the columns",
                         (long long)idx[i], n_samples);
            goto fail;
        }
    }
    job->idx = idx;
    return 0;
fail:
    job_release(job);
    return -1;
}

/* Copy the job's rows into its batch. Touches no Python object: runs without the GIL. */
static void job_run(const Job *job) {
    const ColumnsObject *cs = job->columns;
    char *out = (char *)job->out.buf;
    switch (cs->itemsize) {
        case 1: fill_1(out, cs->cols, cs->F, cs->L, job->m, job->start, job->idx); break;
        case 2: fill_2(out, cs->cols, cs->F, cs->L, job->m, job->start, job->idx); break;
        case 4:
            if (cs->L == 1 && job->idx == NULL && cs->F >= 4 && fill_4_rows_simd(out, cs->cols, cs->F, job->m, job->start))
                break;
            fill_4(out, cs->cols, cs->F, cs->L, job->m, job->start, job->idx);
            break;
        default: fill_8(out, cs->cols, cs->F, cs->L, job->m, job->start, job->idx); break;
    }
}

static PyObject *stack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *out_obj, *columns_obj, *rows_obj;
    if (!PyArg_ParseTuple(args, "OOO:stack", &out_obj, &columns_obj, &rows_obj)) return NULL;
    Job job;
    if (job_parse(&job, out_obj, columns_obj, rows_obj) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    job_run(&job);
    Py_END_ALLOW_THREADS
    job_release(&job);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Worker */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stop */
    pthread_cond_t done; /* a job finished */
    pthread_t *threads;
    int n_threads, running, stop;
    pid_t pid;           /* the process the threads run in */
    Job *ring;           /* job k lives at ring[k % capacity] */
    unsigned char *finished; /* finished[k % capacity]: job k is done (under mu) */
    Py_ssize_t capacity;
    /* tickets: [released, submitted) are held; [claimed, submitted) wait for a thread. Under mu,
     * except `released`, which only the GIL holder touches */
    unsigned long long submitted, claimed, released;
} WorkerObject;

#define SLOT(self, k) ((k) % (unsigned long long)(self)->capacity)

static void *worker_main(void *arg) {
    WorkerObject *self = (WorkerObject *)arg;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->stop && self->claimed == self->submitted) pthread_cond_wait(&self->work, &self->mu);
        if (self->stop) break;
        const unsigned long long k = self->claimed++;
        pthread_mutex_unlock(&self->mu);
        job_run(&self->ring[SLOT(self, k)]);
        pthread_mutex_lock(&self->mu);
        self->finished[SLOT(self, k)] = 1;
        pthread_cond_broadcast(&self->done);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

static int worker_check_process(WorkerObject *self) {
    if (self->running && self->pid != getpid()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "stack: this Worker's threads run in the process that created it, not in this forked "
                        "one; create a new Worker here");
        return -1;
    }
    return 0;
}

/* Stop and join the threads (each finishes the job it runs), then release every job's buffers. */
static void worker_close(WorkerObject *self) {
    if (self->running && self->pid == getpid()) {
        pthread_mutex_lock(&self->mu);
        self->stop = 1;
        pthread_cond_broadcast(&self->work);
        pthread_mutex_unlock(&self->mu);
        Py_BEGIN_ALLOW_THREADS
        for (int t = 0; t < self->running; t++) pthread_join(self->threads[t], NULL);
        Py_END_ALLOW_THREADS
    }
    self->running = 0;
    if (self->ring != NULL) {
        for (; self->released < self->submitted; self->released++) job_release(&self->ring[SLOT(self, self->released)]);
    }
}

static PyObject *Worker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Py_ssize_t capacity;
    int n_threads = 1;
    static char *kwlist[] = {"capacity", "threads", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n|i:Worker", kwlist, &capacity, &n_threads)) return NULL;
    if (capacity < 1 || n_threads < 1 || n_threads > 64) {
        PyErr_SetString(PyExc_ValueError, "Worker: capacity must be at least 1, threads 1 to 64");
        return NULL;
    }
    WorkerObject *self = (WorkerObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->ring = PyMem_Calloc((size_t)capacity, sizeof(Job));
    self->finished = PyMem_Calloc((size_t)capacity, 1);
    self->threads = PyMem_Calloc((size_t)n_threads, sizeof(pthread_t));
    if (self->ring == NULL || self->finished == NULL || self->threads == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->capacity = capacity;
    self->n_threads = n_threads;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->work, NULL);
    pthread_cond_init(&self->done, NULL);
    self->pid = getpid();
    for (int t = 0; t < n_threads; t++) {
        if (pthread_create(&self->threads[t], NULL, worker_main, self) != 0) {
            Py_DECREF(self); /* joins the threads started so far */
            PyErr_SetString(PyExc_RuntimeError, "Worker: could not start its threads");
            return NULL;
        }
        self->running = t + 1;
#ifdef __linux__
        /* named before submit can run: top -H, py-spy and the tests tell them apart (Python.h sets _GNU_SOURCE) */
        pthread_setname_np(self->threads[t], "deeprc-stack");
#endif
    }
    return (PyObject *)self;
}

static void Worker_dealloc(WorkerObject *self) {
    worker_close(self);
    if (self->capacity) { /* initialised */
        pthread_mutex_destroy(&self->mu);
        pthread_cond_destroy(&self->work);
        pthread_cond_destroy(&self->done);
    }
    PyMem_Free(self->ring);
    PyMem_Free(self->finished);
    PyMem_Free(self->threads);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Worker_submit(WorkerObject *self, PyObject *args) {
    PyObject *out_obj, *columns_obj, *rows_obj;
    if (!PyArg_ParseTuple(args, "OOO:submit", &out_obj, &columns_obj, &rows_obj)) return NULL;
    if (worker_check_process(self) < 0) return NULL;
    if (!self->running) {
        PyErr_SetString(PyExc_RuntimeError, "submit: the Worker is closed");
        return NULL;
    }
    if (self->submitted - self->released >= (unsigned long long)self->capacity) {
        PyErr_Format(PyExc_RuntimeError, "submit: %zd jobs are not waited for yet (the capacity); wait first",
                     self->capacity);
        return NULL;
    }
    Job job;
    if (job_parse(&job, out_obj, columns_obj, rows_obj) < 0) return NULL;
    pthread_mutex_lock(&self->mu);
    const unsigned long long ticket = self->submitted;
    self->ring[SLOT(self, ticket)] = job;
    self->finished[SLOT(self, ticket)] = 0;
    self->submitted++;
    pthread_cond_signal(&self->work);
    pthread_mutex_unlock(&self->mu);
    return PyLong_FromUnsignedLongLong(ticket);
}

static PyObject *Worker_wait(WorkerObject *self, PyObject *args) {
    unsigned long long ticket;
    if (!PyArg_ParseTuple(args, "K:wait", &ticket)) return NULL;
    if (worker_check_process(self) < 0) return NULL;
    if (ticket >= self->submitted) {
        PyErr_Format(PyExc_ValueError, "wait: ticket %llu was never submitted", ticket);
        return NULL;
    }
    if (ticket < self->released) Py_RETURN_NONE; /* done and waited for already */
    if (!self->running) {
        PyErr_SetString(PyExc_RuntimeError, "wait: the Worker was closed before this job ran");
        return NULL;
    }
    /* Done already (the usual case when the threads are ahead): return without dropping the GIL,
     * which another Python thread would otherwise take for up to a switch interval (5 ms). */
    unsigned long long k = self->released;
    pthread_mutex_lock(&self->mu);
    while (k <= ticket && self->finished[SLOT(self, k)]) k++;
    pthread_mutex_unlock(&self->mu);
    if (k <= ticket) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mu);
        while (k <= ticket) {
            if (self->finished[SLOT(self, k)])
                k++;
            else
                pthread_cond_wait(&self->done, &self->mu);
        }
        pthread_mutex_unlock(&self->mu);
        Py_END_ALLOW_THREADS
    }
    for (; self->released <= ticket; self->released++) job_release(&self->ring[SLOT(self, self->released)]);
    Py_RETURN_NONE;
}

static PyObject *Worker_close(WorkerObject *self, PyObject *Py_UNUSED(ignored)) {
    worker_close(self);
    Py_RETURN_NONE;
}

static PyMethodDef Worker_methods[] = {
    {"submit", (PyCFunction)Worker_submit, METH_VARARGS,
     "submit(out, columns, rows) -> ticket: check the job as stack() does and queue it for the worker thread."},
    {"wait", (PyCFunction)Worker_wait, METH_VARARGS,
     "wait(ticket): block (GIL released) until that job and every earlier one is done."},
    {"close", (PyCFunction)Worker_close, METH_NOARGS,
     "close(): stop the threads after the jobs they run; jobs not started are dropped."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "deeprc_core._stack.Worker",
    .tp_basicsize = sizeof(WorkerObject),
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Worker(capacity, threads=1): native threads that run stack() jobs, started in order, without the GIL.",
    .tp_methods = Worker_methods,
    .tp_new = Worker_new,
};

/* ------------------------------------------------------------------ permute */

#define MAX_ROUNDS 64
#define PERMUTE_CHUNK 256

/* SplitMix64's finalizer of r + key: the Feistel round function */
static inline uint64_t mix64(uint64_t r, uint64_t key) {
    uint64_t z = r + key + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t low_bits(int w) { return w >= 64 ? ~0ULL : (1ULL << w) - 1; }

/* One pass of the network over 2**(wl + wr) values; the halves swap widths each round. */
static inline uint64_t feistel(uint64_t x, int wl, int wr, const uint64_t *keys, int rounds) {
    uint64_t left = x >> wr, right = x & low_bits(wr);
    for (int i = 0; i < rounds; i++) {
        const uint64_t f = mix64(right, keys[i]) & low_bits(wl);
        const uint64_t t = right;
        right = left ^ f;
        left = t;
        const int w = wl;
        wl = wr;
        wr = w;
    }
    return (left << wr) | right;
}

static PyObject *permute(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *out_obj, *pos_obj;
    long long n;
    int wl, wr;
    Py_buffer keys_buf;
    if (!PyArg_ParseTuple(args, "OOLiiy*:permute", &out_obj, &pos_obj, &n, &wl, &wr, &keys_buf)) return NULL;
    Py_buffer out, pos;
    int have_out = 0, have_pos = 0;
    PyObject *result = NULL;
    uint64_t keys[MAX_ROUNDS];
    const int rounds = (int)(keys_buf.len / 8);
    if (keys_buf.len % 8 || rounds % 2 || rounds > MAX_ROUNDS || wl < 0 || wr < 0 || wl > 32 || wr > 32 ||
        wl + wr > 63 || n < 0 || (n > 0 && (1ULL << (wl + wr)) < (unsigned long long)n)) {
        PyErr_SetString(PyExc_ValueError, "permute: bad network (keys, halves or n)");
        goto done;
    }
    memcpy(keys, keys_buf.buf, (size_t)keys_buf.len);
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    have_out = 1;
    const int out64 = out.itemsize == 8;
    if (!(out.itemsize == 4 || out64) || out.format == NULL || out.format[0] == '\0' || strchr("ilq", out.format[0]) == NULL) {
        PyErr_SetString(PyExc_TypeError, "permute: out must be an int32 or int64 array");
        goto done;
    }
    const Py_ssize_t m = out.len / out.itemsize;
    if (!out64 && n > 2147483647LL) {
        PyErr_SetString(PyExc_ValueError, "permute: an int32 out cannot hold values of n > 2**31");
        goto done;
    }
    long long first = 0;
    const int64_t *idx = NULL;
    if (PyLong_Check(pos_obj)) {
        first = PyLong_AsLongLong(pos_obj);
        if (first == -1 && PyErr_Occurred()) goto done;
        if (m > 0 && (first < 0 || first > n - m)) {
            PyErr_Format(PyExc_IndexError, "permute: positions %lld..%lld are outside range(%lld)", first,
                         first + m - 1, n);
            goto done;
        }
    } else {
        if (PyObject_GetBuffer(pos_obj, &pos, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        have_pos = 1;
        if (pos.itemsize != 8 || pos.format == NULL || (strcmp(pos.format, "l") && strcmp(pos.format, "q"))) {
            PyErr_SetString(PyExc_TypeError, "permute: positions must be an int or an int64 array");
            goto done;
        }
        if (pos.len / 8 != m) {
            PyErr_Format(PyExc_ValueError, "permute: %zd positions for %zd outputs", pos.len / 8, m);
            goto done;
        }
        idx = (const int64_t *)pos.buf;
        for (Py_ssize_t i = 0; i < m; i++) {
            if (idx[i] < 0 || idx[i] >= n) {
                PyErr_Format(PyExc_IndexError, "permute: position %lld is outside range(%lld)", (long long)idx[i], n);
                goto done;
            }
        }
    }
    Py_BEGIN_ALLOW_THREADS
    /* A chunk at a time: one pass encrypts every position (independent chains the CPU overlaps), then
     * only the values still outside range(n) are encrypted again (cycle walking). A per-value walk loop
     * would mispredict its exit on ~40% of the values and run 1.7x slower. */
    uint64_t y[PERMUTE_CHUNK];
    int walk[PERMUTE_CHUNK];
    for (Py_ssize_t lo = 0; lo < m; lo += PERMUTE_CHUNK) {
        const int c = (int)(m - lo < PERMUTE_CHUNK ? m - lo : PERMUTE_CHUNK);
        for (int j = 0; j < c; j++) y[j] = feistel((uint64_t)(idx ? idx[lo + j] : first + lo + j), wl, wr, keys, rounds);
        int k = 0;
        for (int j = 0; j < c; j++) if (y[j] >= (uint64_t)n) walk[k++] = j;
        while (k > 0) {
            for (int t = 0; t < k; t++) y[walk[t]] = feistel(y[walk[t]], wl, wr, keys, rounds);
            int kept = 0;
            for (int t = 0; t < k; t++) if (y[walk[t]] >= (uint64_t)n) walk[kept++] = walk[t];
            k = kept;
        }
        if (out64)
            for (int j = 0; j < c; j++) ((int64_t *)out.buf)[lo + j] = (int64_t)y[j];
        else
            for (int j = 0; j < c; j++) ((int32_t *)out.buf)[lo + j] = (int32_t)y[j];
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_pos) PyBuffer_Release(&pos);
    if (have_out) PyBuffer_Release(&out);
    PyBuffer_Release(&keys_buf);
    return result;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"stack", stack, METH_VARARGS,
     "stack(out, columns, rows): fill the C-contiguous batch `out` with samples `rows` (a start or an int64 "
     "index) of `columns` (a Columns or a sequence of buffers), the columns on the last axis; the GIL is "
     "released while it copies."},
    {"permute", permute, METH_VARARGS,
     "permute(out, positions, n, left, right, keys): out[i] = the keyed Feistel permutation of range(n) at "
     "positions[i] (an int first position or an int64 index); the GIL is released while it computes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "deeprc_core._stack",
    "Interleave separate column buffers into batches (the compiled kernel behind deeprc_core.stacking).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__stack(void) {
    if (PyType_Ready(&ColumnsType) < 0 || PyType_Ready(&WorkerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ColumnsType);
    Py_INCREF(&WorkerType);
    if (PyModule_AddObject(m, "Columns", (PyObject *)&ColumnsType) < 0 ||
        PyModule_AddObject(m, "Worker", (PyObject *)&WorkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
