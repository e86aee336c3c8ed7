/* shm._ringfast: the ring's hot paths in C (the layout and the rules are in shm/_layout.py).
 *
 * Why C: measured with py-spy and process_time loops, the pure-Python write() and read() are
 * ~25 interpreter steps each (~1 us a record), and a batch pays a Python step per record on the
 * reader's side (a slice, a list append) plus a join and an array on the writer's side. Here one
 * call does the whole fast path -- header, one memcpy per record straight into the mapping, the
 * INTENT / WRITE publish with real release/acquire ordering, the reader's seqlock check -- and
 * a batch frame is split into bytes objects in one loop.
 *
 * Only the common cases live here: a record or a frame that fits before the end of the lap and
 * within the writer's limit; a reader walking plain records, frames and wrap markers. Anything
 * else (a wrap that needs a marker, a blocked writer, CRCs, zero-copy views, a lap, corruption)
 * returns None / a problem string and the Python code in shm/_writer.py and shm/_reader.py --
 * the reference implementation, also used when this module is not built -- takes over.
 *
 * Every value read from shared memory is validated before it is used, as in the Python reader.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef __linux__
#include <linux/futex.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#endif

/* Offsets and constants: keep in step with shm/_layout.py (tests check them). */
#define Q_TAIL 8
#define Q_INTENT 9
#define Q_WRITE 10
#define Q_LAST 11
#define OFF_WAITERS 128
#define OFF_NEW_READER 129
#define OFF_FUTEX 80 /* low half of WRITE (little-endian only: see below) */
#define OFF_MAX_READERS 36
#define Q_SLOTS_HIGH 17
#define OFF_SLOTS 256
#define SLOT_SIZE 64
#define SLOT_PID 0
#define SLOT_TOKEN 24
#define SLOT_WAKE 40
#define HEADER_SIZE 16
#define WRAP_LENGTH 0xFFFFFFFFu
#define FRAME_FLAG 0x80000000u
#define LEN_MASK 0x7FFFFFFFu
#define CHECK_KEY 0x5AC396E1u
#define DIRECT_COPY_BYTES 4096

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
/* A field of a record in shared memory, loaded exactly once: the writer may be changing it
 * (a torn read is caught later by the INTENT check), so the compiler must not load it again
 * after it was validated. */
#define ONCE(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

typedef struct {
    PyObject_HEAD
    Py_buffer buf;  /* the whole mapping; buf.obj == NULL once released */
    char *mem;      /* mapping start (header region) */
    char *data;     /* data region */
    uint64_t *q;    /* the mapping as 8-byte words */
    uint64_t cap;
    uint64_t frame_max;
    int wake_fd; /* datagram socket for waking event-loop readers; -1 until needed */
} Seg;

static PyObject *s_append, *s_popleft;

static inline uint32_t
check_of(uint32_t length, uint64_t seq)
{
    return (uint32_t)((length ^ seq ^ CHECK_KEY) & 0xFFFFFFFFu);
}

static int
seg_init(Seg *self, PyObject *args, PyObject *kwds)
{
    PyObject *mm;
    unsigned long long base, cap, frame_max;
    if (!PyArg_ParseTuple(args, "OKKK", &mm, &base, &cap, &frame_max))
        return -1;
    if (self->buf.obj != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Seg already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(mm, &self->buf, PyBUF_WRITABLE) < 0)
        return -1;
    if (cap < 64 || cap % 8 || base % 8 || (uint64_t)self->buf.len < base + cap ||
        base < 256 || frame_max > cap) {
        PyBuffer_Release(&self->buf);
        PyErr_SetString(PyExc_ValueError, "segment geometry does not fit the buffer");
        return -1;
    }
    self->mem = (char *)self->buf.buf;
    self->data = self->mem + base;
    self->q = (uint64_t *)self->mem;
    self->cap = cap;
    self->frame_max = frame_max;
    self->wake_fd = -1;
    return 0;
}

static void
close_wake_fd(Seg *self)
{
#ifdef __linux__
    if (self->wake_fd >= 0)
        close(self->wake_fd);
#endif
    self->wake_fd = -1;
}

static void
seg_dealloc(Seg *self)
{
    close_wake_fd(self);
    if (self->buf.obj != NULL)
        PyBuffer_Release(&self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
seg_release(Seg *self, PyObject *unused)
{
    close_wake_fd(self);
    if (self->buf.obj != NULL)
        PyBuffer_Release(&self->buf);
    self->mem = self->data = NULL;
    self->q = NULL;
    Py_RETURN_NONE;
}

static int
check_open(Seg *self)
{
    if (self->mem == NULL) {
        PyErr_SetString(PyExc_ValueError, "segment released");
        return -1;
    }
    return 0;
}

/* -- writer ------------------------------------------------------------------------------ */

/* starts.append(w); drop the starts the new end overwrites; store TAIL. Mirrors
 * RingWriter.write / _publish. */
static int
move_tail(Seg *self, PyObject *starts, uint64_t w, uint64_t end)
{
    PyObject *wo = PyLong_FromUnsignedLongLong(w);
    if (wo == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(starts, s_append, wo);
    Py_DECREF(wo);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if (end < self->cap)
        return 0; /* first lap: nothing is overwritten, TAIL stays 0 */
    uint64_t lo = end - self->cap;
    int moved = 0;
    for (;;) {
        PyObject *first = PySequence_GetItem(starts, 0);
        if (first == NULL)
            return -1;
        unsigned long long f = PyLong_AsUnsignedLongLong(first);
        Py_DECREF(first);
        if (f == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (f >= lo) {
            if (moved)
                STORE(&self->q[Q_TAIL], (uint64_t)f);
            return 0;
        }
        r = PyObject_CallMethodNoArgs(starts, s_popleft);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        moved = 1;
    }
}

/* Send one datagram to every reader asleep in an event loop (RingWriter._wake_loop_readers). */
static void
wake_loop_readers(Seg *self)
{
#ifdef __linux__
    uint32_t max_readers;
    memcpy(&max_readers, self->mem + OFF_MAX_READERS, 4);
    uint64_t high = LOAD(&self->q[Q_SLOTS_HIGH]);
    if (high > max_readers)
        high = max_readers;
    uint64_t room = ((uint64_t)(self->data - self->mem) - OFF_SLOTS) / SLOT_SIZE;
    if (high > room) /* values from shared memory: never read past the header region */
        high = room;
    for (uint64_t i = 0; i < high; i++) {
        uint64_t *slot = (uint64_t *)(self->mem + OFF_SLOTS + SLOT_SIZE * i);
        uint64_t pid = LOAD(&slot[SLOT_PID / 8]);
        if (!LOAD(&slot[SLOT_WAKE / 8]) || !pid)
            continue;
        STORE(&slot[SLOT_WAKE / 8], 0);
        if (self->wake_fd < 0)
            self->wake_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (self->wake_fd < 0)
            return;
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        int n = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "raygent-wake-%llu-%llx",
                         (unsigned long long)pid,
                         (unsigned long long)LOAD(&slot[SLOT_TOKEN / 8]));
        if (n <= 0 || (size_t)n >= sizeof addr.sun_path - 1)
            continue;
        /* gone, or its socket is full (it is awake already): nothing to do either way */
        (void)sendto(self->wake_fd, "w", 1, MSG_DONTWAIT, (struct sockaddr *)&addr,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n));
    }
#endif
}

/* After the WRITE store: wake sleeping readers; report a new reader to the caller. */
static PyObject *
published(Seg *self, uint64_t end)
{
    volatile uint8_t *att = (volatile uint8_t *)(self->mem + OFF_WAITERS);
    int new_reader = 0;
    /* One full fence between the WRITE store and the WAITERS load (the Dekker pairing with a
     * reader that sets WAITERS, then re-loads WRITE). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (att[0]) {
        att[0] = 0;
#ifdef __linux__
        syscall(SYS_futex, (uint32_t *)(self->mem + OFF_FUTEX), FUTEX_WAKE, INT32_MAX, NULL,
                NULL, 0);
#endif
        wake_loop_readers(self);
    }
    if (att[1]) {
        att[1] = 0;
        new_reader = 1;
    }
    return PyLong_FromLongLong(new_reader ? -(long long)end : (long long)end);
}

/* Lay out one record (plain: records[i] alone; or a frame of records[i:i+k]) at w and publish
 * it. The caller checked that it fits. */
static PyObject *
publish_at(Seg *self, uint64_t w, uint64_t seq, PyObject *const *items, Py_ssize_t k,
           uint64_t head, uint64_t length, uint64_t end, PyObject *starts)
{
    if (move_tail(self, starts, w, end) < 0)
        return NULL;
    char *p = self->data + w % self->cap;
    STORE(&self->q[Q_INTENT], end); /* before any byte moves */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    uint32_t field = k == 1 ? (uint32_t)length : (uint32_t)length | FRAME_FLAG;
    uint32_t hdr[2] = {field, check_of(field, seq)};
    memcpy(p, hdr, 8);
    memcpy(p + 8, &seq, 8);
    char *f = p + HEADER_SIZE;
    if (k == 1) {
        memcpy(f, PyBytes_AS_STRING(items[0]), (size_t)length);
    } else {
        uint32_t c32 = (uint32_t)k;
        memcpy(f, &c32, 4);
        uint32_t *lens = (uint32_t *)(f + 4);
        char *out = f + head;
        for (Py_ssize_t i = 0; i < k; i++) {
            Py_ssize_t n = PyBytes_GET_SIZE(items[i]);
            lens[i] = (uint32_t)n;
            memcpy(out, PyBytes_AS_STRING(items[i]), (size_t)n);
            out += n;
        }
        memset(f + 4 + 4 * (uint64_t)k, 0, head - 4 - 4 * (uint64_t)k);
    }
    STORE(&self->q[Q_WRITE], end); /* the publish */
    STORE(&self->q[Q_LAST], w);
    return published(self, end);
}

/* The writer calls' common arguments: (w, seq, limit, ...), nargs of them; 0, or -1 with an
 * exception set. */
static int
writer_args(Seg *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
            const char *usage, uint64_t *w, uint64_t *seq, uint64_t *limit)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (check_open(self) < 0)
        return -1;
    *w = PyLong_AsUnsignedLongLong(args[0]);
    *seq = PyLong_AsUnsignedLongLong(args[1]);
    *limit = PyLong_AsUnsignedLongLong(args[2]);
    return PyErr_Occurred() ? -1 : 0;
}

/* put1(w, seq, limit, data, starts) -> end (negative: a reader attached) | None
 *
 * Publish one bytes record at monotonic offset w with sequence number seq, if it fits before
 * the end of the lap and within limit; None leaves everything untouched (the caller's general
 * path handles wraps, waits, other buffer types). */
static PyObject *
seg_put1(Seg *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t w, seq, limit;
    if (writer_args(self, args, nargs, 5, "put1(w, seq, limit, data, starts)", &w, &seq,
                    &limit) < 0)
        return NULL;
    PyObject *data = args[3];
    if (!PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    uint64_t n = (uint64_t)PyBytes_GET_SIZE(data);
    uint64_t size = (n + 23) & ~(uint64_t)7;
    uint64_t pos = w % self->cap, end = w + size;
    if (n >= LEN_MASK || pos + size > self->cap || end > limit)
        Py_RETURN_NONE;
    return publish_at(self, w, seq, &args[3], 1, 0, n, end, args[4]);
}

/* put_frame(w, seq, limit, records, starts, i) -> (end, j) | None
 *
 * Publish records[i:j] as one ring record: a batch frame of as many small records as fit in
 * frame_max (or records[i] alone when only one does), each copied once, straight into the
 * mapping; end is negative when a reader attached. The caller loops until every record is
 * out. None leaves everything untouched, and the caller's general path takes records[i:]:
 * a wrap or the limit in the way; a record of DIRECT_COPY_BYTES or more next; and at i == 0,
 * a batch that is not all bytes or has a record too large for the ring (which must be refused
 * before any record is copied). */
static PyObject *
seg_put_frame(Seg *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t w, seq, limit;
    if (writer_args(self, args, nargs, 6, "put_frame(w, seq, limit, records, starts, i)", &w,
                    &seq, &limit) < 0)
        return NULL;
    Py_ssize_t first = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *records = args[3];
    if (!PyList_CheckExact(records) && !PyTuple_CheckExact(records))
        Py_RETURN_NONE;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    if (first < 0 || first >= total)
        Py_RETURN_NONE;
    uint64_t cap = self->cap;
    if (first == 0) {
        uint64_t largest = cap - HEADER_SIZE < LEN_MASK ? cap - HEADER_SIZE : LEN_MASK;
        for (Py_ssize_t i = 0; i < total; i++)
            if (!PyBytes_CheckExact(items[i]) || (uint64_t)PyBytes_GET_SIZE(items[i]) > largest)
                Py_RETURN_NONE;
    }
    /* Greedy: the longest run from `first` that fits one frame. */
    Py_ssize_t k = 0;
    uint64_t body = 0;
    for (Py_ssize_t i = first; i < total; i++) {
        uint64_t n = (uint64_t)PyBytes_GET_SIZE(items[i]);
        if (n >= DIRECT_COPY_BYTES ||
            ((4 * (uint64_t)(k + 1) + 11) & ~(uint64_t)7) + body + n > self->frame_max)
            break;
        body += n;
        k++;
    }
    if (k == 0)
        Py_RETURN_NONE;
    uint64_t head = 0, length = body;
    if (k > 1) {
        head = (4 * (uint64_t)k + 11) & ~(uint64_t)7;
        length = head + body;
    }
    uint64_t size = (length + 23) & ~(uint64_t)7;
    uint64_t end = w + size;
    if (w % cap + size > cap || end > limit)
        Py_RETURN_NONE;
    PyObject *r = publish_at(self, w, seq, items + first, k, head, length, end, args[4]);
    if (r == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", r, first + k);
}

/* -- reader ------------------------------------------------------------------------------ */

/* get1(c, s, slot) -> bytes | None (empty) | False (not a plain record: general path)
 *
 * The read fast path: a plain record with sequence s right at cursor c, copied, then proven
 * intact (INTENT <= c + cap after the copy). slot >= 0: the reader's CURSOR word, moved past
 * the record (block policy). */
static PyObject *
seg_get1(Seg *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "get1(c, s, slot)");
        return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    uint64_t c = PyLong_AsUnsignedLongLong(args[0]);
    uint64_t s = PyLong_AsUnsignedLongLong(args[1]);
    long long slot = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    uint64_t w = LOAD(&self->q[Q_WRITE]);
    if (w == c)
        Py_RETURN_NONE;
    uint64_t cap = self->cap, pos = c % cap;
    if (w < c || w - c > cap || pos > cap - HEADER_SIZE)
        Py_RETURN_FALSE;
    char *p = self->data + pos;
    uint32_t hdr[2] = {ONCE((uint32_t *)p), ONCE((uint32_t *)(p + 4))};
    uint64_t seq = ONCE((uint64_t *)(p + 8));
    uint64_t n = hdr[0];
    uint64_t end = c + ((n + 23) & ~(uint64_t)7);
    if (seq != s || hdr[1] != check_of(hdr[0], seq) || (n & FRAME_FLAG) ||
        n > cap - pos - HEADER_SIZE || end > w)
        Py_RETURN_FALSE;
    PyObject *data = PyBytes_FromStringAndSize(p + HEADER_SIZE, (Py_ssize_t)n);
    if (data == NULL)
        return NULL;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (LOAD(&self->q[Q_INTENT]) > c + cap) { /* the copy may be torn */
        Py_DECREF(data);
        Py_RETURN_FALSE;
    }
    if (slot >= 0)
        STORE(&self->q[slot], end);
    return data;
}

/* Split the frame at p (length flen) into bytes objects appended to out; "" = ok, else what is
 * wrong (the caller removes what was appended), NULL = a Python error.
 *
 * The writer may be overwriting the frame while we read it, so every length is loaded once and
 * bounded by what is left of the frame before it is used: a torn frame can give wrong records
 * (the caller's INTENT check discards them), never a read outside the frame. */
static const char *
split_frame(const char *p, uint64_t flen, PyObject *out, Py_ssize_t *added)
{
    *added = 0;
    if (flen < 4)
        return "too short for a frame";
    uint32_t count = ONCE((const uint32_t *)p);
    uint64_t head = (4 * (uint64_t)count + 11) & ~(uint64_t)7;
    if (count < 2 || head > flen)
        return "count does not fit in the frame";
    const uint32_t *lens = (const uint32_t *)(p + 4);
    const char *r = p + head;
    uint64_t left = flen - head;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = ONCE(&lens[i]);
        if (n > left)
            return "record lengths do not add up to the frame";
        PyObject *b = PyBytes_FromStringAndSize(r, (Py_ssize_t)n);
        if (b == NULL)
            return NULL; /* with an exception set */
        int rc = PyList_Append(out, b);
        Py_DECREF(b);
        if (rc < 0)
            return NULL;
        r += n;
        left -= n;
        (*added)++;
    }
    return left ? "record lengths do not add up to the frame" : "";
}

/* copy_run(c, w, s, max_items) -> (records, c, s, frame_at, problem)
 *
 * RingReader._copy_batch's walk for copy=True without CRCs: from cursor c towards w, copy plain
 * records and split frames into bytes, skip wrap markers and short lap tails, until w or
 * max_items (a frame is always taken whole: the caller keeps the overflow). Stops at the first
 * header that is not what it must be and names it in problem (None when all was well); the
 * records before it are returned. The caller still does the INTENT check for the whole run. */
static PyObject *
seg_copy_run(Seg *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "copy_run(c, w, s, max_items)");
        return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    uint64_t c = PyLong_AsUnsignedLongLong(args[0]);
    uint64_t w = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t s = PyLong_AsUnsignedLongLong(args[2]);
    Py_ssize_t max_items = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    uint64_t cap = self->cap;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    long long frame_at = -1;
    PyObject *problem = Py_None;
    Py_INCREF(problem);
    while (c < w && PyList_GET_SIZE(out) < max_items) {
        uint64_t pos = c % cap, room = cap - pos;
        if (room < HEADER_SIZE) { /* implicit wrap */
            c += room;
            continue;
        }
        const char *p = self->data + pos;
        uint32_t hdr[2] = {ONCE((const uint32_t *)p), ONCE((const uint32_t *)(p + 4))};
        uint64_t seq = ONCE((const uint64_t *)(p + 8));
        if (hdr[0] == WRAP_LENGTH) {
            if (seq != s || hdr[1] != check_of(WRAP_LENGTH, seq)) {
                Py_SETREF(problem, PyUnicode_FromFormat(
                                       "bad wrap marker at %llu (seq %llu, expected %llu)",
                                       (unsigned long long)c, (unsigned long long)seq,
                                       (unsigned long long)s));
                break;
            }
            c += room;
            continue;
        }
        uint64_t length = hdr[0] & LEN_MASK;
        uint64_t end = c + ((length + 23) & ~(uint64_t)7);
        if (seq != s || length > room - HEADER_SIZE || end > w) {
            Py_SETREF(problem,
                      PyUnicode_FromFormat("bad record header at %llu: length %u, seq %llu, "
                                           "expected seq %llu",
                                           (unsigned long long)c, hdr[0],
                                           (unsigned long long)seq, (unsigned long long)s));
            break;
        }
        if (hdr[1] != check_of(hdr[0], seq)) {
            Py_SETREF(problem, PyUnicode_FromFormat(
                                   "bad record check at %llu (length %u, seq %llu)",
                                   (unsigned long long)c, hdr[0], (unsigned long long)seq));
            break;
        }
        if (hdr[0] & FRAME_FLAG) {
            Py_ssize_t added;
            const char *bad = split_frame(p + HEADER_SIZE, length, out, &added);
            if (bad == NULL)
                goto error;
            if (*bad) {
                /* undo a partial split: the records before this frame are the good prefix */
                if (PyList_SetSlice(out, PyList_GET_SIZE(out) - added, PyList_GET_SIZE(out),
                                    NULL) < 0)
                    goto error;
                Py_SETREF(problem,
                          PyUnicode_FromFormat("bad batch frame at %llu (seq %llu): %s",
                                               (unsigned long long)c,
                                               (unsigned long long)seq, bad));
                break;
            }
            frame_at = (long long)c;
            s = seq + (uint64_t)added;
        } else {
            PyObject *b = PyBytes_FromStringAndSize(p + HEADER_SIZE, (Py_ssize_t)length);
            if (b == NULL)
                goto error;
            int rc = PyList_Append(out, b);
            Py_DECREF(b);
            if (rc < 0)
                goto error;
            s = seq + 1;
        }
        c = end;
    }
    if (problem == NULL)
        goto error;
    return Py_BuildValue("(NKKLN)", out, (unsigned long long)c, (unsigned long long)s,
                         frame_at, problem);
error:
    Py_DECREF(out);
    Py_XDECREF(problem);
    return NULL;
}

static PyMethodDef seg_methods[] = {
    {"put1", (PyCFunction)(void (*)(void))seg_put1, METH_FASTCALL,
     "put1(w, seq, limit, data, starts) -> end | -end (a reader attached) | None"},
    {"put_frame", (PyCFunction)(void (*)(void))seg_put_frame, METH_FASTCALL,
     "put_frame(w, seq, limit, records, starts, i) -> (end | -end, j) | None"},
    {"get1", (PyCFunction)(void (*)(void))seg_get1, METH_FASTCALL,
     "get1(c, s, slot) -> bytes | None (empty) | False (general path)"},
    {"copy_run", (PyCFunction)(void (*)(void))seg_copy_run, METH_FASTCALL,
     "copy_run(c, w, s, max_items) -> (records, c, s, frame_at, problem)"},
    {"release", (PyCFunction)seg_release, METH_NOARGS,
     "Drop the buffer export so the mapping can be closed."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SegType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shm._ringfast.Seg",
    .tp_basicsize = sizeof(Seg),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Seg(mapping, data_offset, capacity, frame_max): one end's view of a ring "
              "segment, holding a buffer export of the mapping until release().",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)seg_init,
    .tp_dealloc = (destructor)seg_dealloc,
    .tp_methods = seg_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shm._ringfast",
    "The shm ring's hot paths in C; see shm/_ringfast.c.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__ringfast(void)
{
#if PY_BIG_ENDIAN
    PyErr_SetString(PyExc_ImportError, "shm._ringfast supports little-endian machines only");
    return NULL;
#endif
    if (PyType_Ready(&SegType) < 0)
        return NULL;
    s_append = PyUnicode_InternFromString("append");
    s_popleft = PyUnicode_InternFromString("popleft");
    if (s_append == NULL || s_popleft == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SegType);
    if (PyModule_AddObject(m, "Seg", (PyObject *)&SegType) < 0) {
        Py_DECREF(&SegType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "Q_TAIL", Q_TAIL);
    PyModule_AddIntConstant(m, "Q_INTENT", Q_INTENT);
    PyModule_AddIntConstant(m, "Q_WRITE", Q_WRITE);
    PyModule_AddIntConstant(m, "Q_LAST", Q_LAST);
    PyModule_AddIntConstant(m, "OFF_WAITERS", OFF_WAITERS);
    PyModule_AddIntConstant(m, "OFF_NEW_READER", OFF_NEW_READER);
    PyModule_AddIntConstant(m, "OFF_FUTEX", OFF_FUTEX);
    PyModule_AddIntConstant(m, "DIRECT_COPY_BYTES", DIRECT_COPY_BYTES);
    PyModule_AddIntConstant(m, "OFF_MAX_READERS", OFF_MAX_READERS);
    PyModule_AddIntConstant(m, "Q_SLOTS_HIGH", Q_SLOTS_HIGH);
    PyModule_AddIntConstant(m, "OFF_SLOTS", OFF_SLOTS);
    PyModule_AddIntConstant(m, "SLOT_SIZE", SLOT_SIZE);
    PyModule_AddIntConstant(m, "SLOT_PID", SLOT_PID);
    PyModule_AddIntConstant(m, "SLOT_TOKEN", SLOT_TOKEN);
    PyModule_AddIntConstant(m, "SLOT_WAKE", SLOT_WAKE);
    PyModule_AddIntConstant(m, "CHECK_KEY", (long)CHECK_KEY);
    return m;
}
