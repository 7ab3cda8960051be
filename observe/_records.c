/* The two per-record loops of the log path, in C: a flood of short lines is a million records a
 * second, and a Python loop costs ~1 us per record (a whole core at that rate).
 *
 * run(buf, offset, stop, next_seq) -> (offset, next_seq, last)
 *     The inner loop of records.scan: walk whole STDOUT/STDERR line records in seq order from
 *     ``offset`` while ``offset < stop``; stop before the first record that is not one (another
 *     stream, a broken seq chain, a torn or foreign header, a record running past the buffer).
 *     ``last`` is the offset of the last record walked, -1 if none. Exactly the checks of the
 *     Python loop it replaces (see records._run_py), which stays as the fallback.
 *
 * frame(lines, tag, seq, ts) -> bytes
 *     Whole lines framed as records back to back: for each line a 24-byte header
 *     ``<IIQQ (tag, len, seq + i, ts)`` then the line. What LogWriter.append_lines builds with
 *     struct.pack and b"".join (see records._frame_py).
 *
 * split_frame(data, max_line, tag, seq, ts, room) -> (framed, count, consumed) | None
 *     What LineSplitter.split then frame do for a chunk read from a pipe, without a bytes object
 *     per line: every whole line of ``data`` (newline dropped) framed as frame() frames it, and how
 *     many bytes of ``data`` those lines took (the rest is an unterminated line). None, and nothing
 *     built, when the general path must decide: a line or the rest longer than ``max_line`` (it
 *     is cut into partial pieces there), or more than ``room`` bytes of records (a segment ends).
 *
 * Optional, like cells._spawn: without a compiler the build goes on and the Python loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_LEN 24
#define RECORD_MAGIC 0xC5

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static inline void wr32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static inline void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

/* A Python int in 0 .. 2**64 - 1, else -1 with OverflowError set (no silent wrap-around). */
static int as_u64(PyObject *obj, uint64_t *out) {
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static PyObject *records_run(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t offset, stop;
    PyObject *nxt_obj;
    uint64_t nxt;
    if (!PyArg_ParseTuple(args, "y*nnO", &view, &offset, &stop, &nxt_obj))
        return NULL;
    if (offset < 0 || as_u64(nxt_obj, &nxt) < 0) {
        /* Nothing a writer makes (seqs stay below 2**63): walk nothing, the general path decides. */
        PyErr_Clear();
        PyBuffer_Release(&view);
        return Py_BuildValue("nOn", offset, nxt_obj, (Py_ssize_t)-1);
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t n = view.len, last = -1;
    while (offset < stop && offset <= n - 16) {
        const unsigned char *p = buf + offset;
        uint16_t tag = rd16(p);
        uint64_t ln = rd32(p + 4), seq = rd64(p + 8);
        if (seq != nxt || seq == UINT64_MAX || (tag != (RECORD_MAGIC | 1 << 8) && tag != (RECORD_MAGIC | 2 << 8)))
            break;
        if ((uint64_t)(n - offset) < HEADER_LEN + ln)
            break;
        nxt = seq + 1;
        last = offset;
        offset += HEADER_LEN + (Py_ssize_t)ln;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nKn", offset, (unsigned long long)nxt, last);
}

static PyObject *records_frame(PyObject *self, PyObject *args) {
    PyObject *lines, *tag_obj, *seq_obj, *ts_obj;
    uint64_t tag, seq, ts;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyList_Type, &lines, &tag_obj, &seq_obj, &ts_obj))
        return NULL;
    if (as_u64(tag_obj, &tag) < 0 || as_u64(seq_obj, &seq) < 0 || as_u64(ts_obj, &ts) < 0)
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(lines), total = 0;
    if (tag > 0xFFFFFFFFu || (k > 0 && seq > UINT64_MAX - (uint64_t)(k - 1))) {
        PyErr_SetString(PyExc_OverflowError, "tag or seq out of range");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "frame takes a list of bytes");
            return NULL;
        }
        Py_ssize_t ln = PyBytes_GET_SIZE(line);
        if ((uint64_t)ln > 0xFFFFFFFFu || total > PY_SSIZE_T_MAX - HEADER_LEN - ln) {
            PyErr_SetString(PyExc_OverflowError, "line too long to frame");
            return NULL;
        }
        total += HEADER_LEN + ln;
    }
    /* Nothing below calls back into Python, so the list cannot change under us. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        Py_ssize_t ln = PyBytes_GET_SIZE(line);
        wr32(p, (uint32_t)tag);
        wr32(p + 4, (uint32_t)ln);
        wr64(p + 8, seq + (uint64_t)i);
        wr64(p + 16, ts);
        memcpy(p + HEADER_LEN, PyBytes_AS_STRING(line), (size_t)ln);
        p += HEADER_LEN + ln;
    }
    return out;
}


static PyObject *records_split_frame(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t max_line, room;
    PyObject *tag_obj, *seq_obj, *ts_obj;
    uint64_t tag, seq, ts;
    if (!PyArg_ParseTuple(args, "y*nOOOn", &view, &max_line, &tag_obj, &seq_obj, &ts_obj, &room))
        return NULL;
    if (as_u64(tag_obj, &tag) < 0 || as_u64(seq_obj, &seq) < 0 || as_u64(ts_obj, &ts) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (tag > 0xFFFFFFFFu || seq >= ((uint64_t)1 << 63) || max_line < 1 || max_line > 0xFFFFFFFFLL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_OverflowError, "tag, seq or max_line out of range");
        return NULL;
    }
    const unsigned char *buf = view.buf, *end = buf + view.len, *p = buf, *nl;
    Py_ssize_t k = 0, total = 0;
    /* First pass: count the whole lines and check every one fits (else the caller's general path). */
    while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (nl - p > max_line)
            goto fallback;
        total += HEADER_LEN + (nl - p);
        k++;
        p = nl + 1;
    }
    if (end - p > max_line || total > room)
        goto fallback;
    Py_ssize_t consumed = p - buf;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    p = buf;
    for (Py_ssize_t i = 0; i < k; i++) {
        nl = memchr(p, '\n', (size_t)(end - p));
        Py_ssize_t ln = nl - p;
        wr32(o, (uint32_t)tag);
        wr32(o + 4, (uint32_t)ln);
        wr64(o + 8, seq + (uint64_t)i);
        wr64(o + 16, ts);
        memcpy(o + HEADER_LEN, p, (size_t)ln);
        o += HEADER_LEN + ln;
        p = nl + 1;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("Nnn", out, k, consumed);
    return result;
fallback:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", records_run, METH_VARARGS, "Walk whole line records in seq order: (offset, next_seq, last)."},
    {"frame", records_frame, METH_VARARGS, "Frame whole lines as records back to back."},
    {"split_frame", records_split_frame, METH_VARARGS, "Frame the whole lines of pipe bytes: (framed, count, consumed) or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "observe._records", NULL, -1, methods};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
