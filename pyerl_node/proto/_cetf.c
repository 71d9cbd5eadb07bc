/* The compiled core of pyerl_node.proto.etf: the External Term Format's encode and decode
 * loops in C (docs/protocol/distribution.md §5.5).
 *
 * How it works. This module has no opinion of its own on what a valid term is: it runs the
 * common case fast and hands everything else to the pure-Python codec it is given by
 * etf.py's setup() call. Each public function (decode, decode_from, encode, encode_into)
 * has the signature of its Python twin; on anything unusual -- an argument of another type,
 * a tag or a Python type it does not handle itself, a truncated or malformed input, a bound
 * of the input checks reached (depth, counts, atom table) -- it drops what it built and
 * calls the Python function with the same arguments. So every error a caller can see, with
 * its offset, tag and message, is raised by the Python code, and the hostile-input defences
 * (the depth bound, the count checks, the hash-flood check of maps, the atom limit) are the
 * Python ones: the C loop never raises a decode or encode error itself. A valid input costs
 * the C pass only; a refused one costs the C pass up to the fault and the Python pass.
 *
 * The rarer leaves (bignums, old float and pid and reference forms, ports, exports) are
 * decoded by the Python leaf functions (etf._LEAVES), funs and the rarer Python types (Fun,
 * Port, BitBinary, Export, FrozenMap, ExactKey, subclasses of builtins) by the Python codec.
 * Both loops are iterative, with their stack on the heap, like the Python ones.
 *
 * decode_sends stands in for control_memo.decode_sends: the packets of a stream of sends
 * whose header and control message the connection remembers, decoded in one call. It stops
 * where its twin stops, and before a payload the C loop leaves to Python.
 *
 * Caches: the atoms, node atoms and pids the decoder sees are looked up in small
 * direct-mapped tables keyed by their encoded bytes (no bytes object made on a hit), in
 * front of the Python caches of etf.py, which they fill as the Python decoder does. They are
 * bounded (ATOM_SLOTS, NODE_SLOTS, PID_SLOTS entries), so they pin few atoms.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Tags (erl_ext_dist), as in etf.py. */
#define NEW_FLOAT 70
#define COMPRESSED 80
#define ATOM_CACHE_REF 82
#define NEW_PID 88
#define NEWER_REFERENCE 90
#define SMALL_INTEGER 97
#define INTEGER 98
#define SMALL_TUPLE 104
#define LARGE_TUPLE 105
#define NIL 106
#define STRING 107
#define LIST 108
#define BINARY 109
#define MAP 116
#define SMALL_ATOM_UTF8 119
#define VERSION 131

#define ATOM_SLOTS 1024
#define NODE_SLOTS 256
#define PID_SLOTS 1024
#define STACK_START 32
/* Values decoded between two looks at the eval loop's requests (about 1 ms of decoding). */
#define YIELD_EVERY 4096

/* ---- configuration, from setup() ------------------------------------------------------- */

static PyTypeObject *AtomType, *PidType, *RefType, *ImproperType;
static Py_ssize_t pid_off[4];     /* node, id, serial, creation */
static Py_ssize_t ref_off[3];     /* node, creation, ids */
static Py_ssize_t improper_off[2]; /* items, tail */
static PyObject *utf8_atoms, *node_atoms, *pid_table, *atom_bytes;
static PyObject *atom_true, *atom_false, *atom_nil;
static PyObject *bytes_true, *bytes_false, *bytes_nil;
static PyObject *py_new_atom, *py_new_node_atom, *py_finish_list, *py_finish_map;
static PyObject *py_inflate, *py_atom_bytes, *py_encode_big, *py_compress;
static PyObject *py_decode, *py_decode_from, *py_encode, *py_encode_into;
static PyObject *leaves[256];
static Py_ssize_t pid_cache_max, hash_checked_keys, default_max_depth, big_binary;
static PyObject *default_max_size;
static PyObject *empty_bytes, *str_join;
static PyObject *py_yield; /* a Python function that does nothing: see decode_core */
static int ready;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* ---- small helpers ---------------------------------------------------------------------- */

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }

static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t fnv1a(const unsigned char *p, Py_ssize_t n)
{
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h ^ (h >> 15);
}

/* After a NULL return: 1 if the Python codec should take over (no exception, or an ordinary
 * Exception, which is cleared: the Python pass raises its own), 0 if the exception must
 * propagate (KeyboardInterrupt, SystemExit...). */
static int take_over(void)
{
    if (!PyErr_Occurred()) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* A direct-mapped cache entry: the encoded bytes and the term they decode to. */
typedef struct {
    PyObject *key;   /* bytes */
    PyObject *value;
} slot_t;

static slot_t atom_slots[ATOM_SLOTS], node_slots[NODE_SLOTS], pid_slots[PID_SLOTS];

static inline PyObject *slot_hit(slot_t *s, const unsigned char *k, Py_ssize_t n)
{
    PyObject *key = s->key;
    if (key != NULL && PyBytes_GET_SIZE(key) == n && memcmp(PyBytes_AS_STRING(key), k, n) == 0) {
        Py_INCREF(s->value);
        return s->value;
    }
    return NULL;
}

/* Store (steals ``key``, borrows ``value``); the old entry is released after the swap. */
static void slot_store(slot_t *s, PyObject *key, PyObject *value)
{
    PyObject *old_key = s->key, *old_value = s->value;
    Py_INCREF(value);
    s->key = key;
    s->value = value;
    Py_XDECREF(old_key);
    Py_XDECREF(old_value);
}

/* ---- decoding ----------------------------------------------------------------------------- */

/* The atom of slot ``index`` of the frame's atom cache (new reference), NULL if absent. */
static PyObject *cache_atom(PyObject *cache, unsigned index)
{
    PyObject *atom;
    if (cache == Py_None) {
        return NULL;
    }
    if (PyList_CheckExact(cache)) {
        if ((Py_ssize_t)index >= PyList_GET_SIZE(cache)) {
            return NULL;
        }
        atom = PyList_GET_ITEM(cache, index);
        Py_INCREF(atom);
    }
    else {
        Py_ssize_t size = PySequence_Size(cache);
        if (size < 0 || (Py_ssize_t)index >= size) {
            return NULL;
        }
        atom = PySequence_GetItem(cache, index);
        if (atom == NULL) {
            return NULL;
        }
    }
    if (atom == Py_None) {
        Py_DECREF(atom);
        return NULL;
    }
    return atom;
}

static PyObject *call3(PyObject *fn, PyObject *a, Py_ssize_t pos, PyObject *c)
{
    PyObject *p = PyLong_FromSsize_t(pos);
    if (p == NULL) {
        return NULL;
    }
    PyObject *args[3] = {a, p, c};
    PyObject *r = PyObject_Vectorcall(fn, args, c == NULL ? 2 : 3, NULL);
    Py_DECREF(p);
    return r;
}

/* (term, end) from a Python helper: the term (new reference) and *end, or NULL. */
static PyObject *unpack_pair(PyObject *r, Py_ssize_t *end)
{
    if (r == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        return NULL;
    }
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1));
    if (*end < 0) {
        Py_DECREF(r);
        return NULL;
    }
    PyObject *term = PyTuple_GET_ITEM(r, 0);
    Py_INCREF(term);
    Py_DECREF(r);
    return term;
}

/* A SMALL_ATOM_UTF8 atom in term position (true/false/nil are bools and None). */
static PyObject *utf8_atom(PyObject *bufobj, const unsigned char *b, Py_ssize_t pos)
{
    const unsigned char *k = b + pos + 1;
    Py_ssize_t n = (Py_ssize_t)k[0] + 1;
    slot_t *s = &atom_slots[fnv1a(k, n) & (ATOM_SLOTS - 1)];
    PyObject *v = slot_hit(s, k, n);
    if (v != NULL) {
        return v;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)k, n);
    if (key == NULL) {
        return NULL;
    }
    v = PyDict_GetItemWithError(utf8_atoms, key);
    if (v != NULL) {
        Py_INCREF(v);
    }
    else if (PyErr_Occurred() || (v = call3(py_new_atom, bufobj, pos, NULL)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    slot_store(s, key, v);
    return v;
}

/* An atom where only an atom may stand (etf._atom): new reference, *end after it. */
static PyObject *node_atom(PyObject *bufobj, const unsigned char *b, Py_ssize_t blen,
                           Py_ssize_t pos, PyObject *cache, Py_ssize_t *end)
{
    if (pos + 2 > blen) {
        return NULL;
    }
    if (b[pos] == ATOM_CACHE_REF) {
        *end = pos + 2;
        return cache_atom(cache, b[pos + 1]);
    }
    if (b[pos] == SMALL_ATOM_UTF8) {
        const unsigned char *k = b + pos + 1;
        Py_ssize_t n = (Py_ssize_t)k[0] + 1;
        if (pos + 1 + n > blen) {
            return NULL;
        }
        *end = pos + 1 + n;
        slot_t *s = &node_slots[fnv1a(k, n) & (NODE_SLOTS - 1)];
        PyObject *v = slot_hit(s, k, n);
        if (v != NULL) {
            return v;
        }
        PyObject *key = PyBytes_FromStringAndSize((const char *)k, n);
        if (key == NULL) {
            return NULL;
        }
        v = PyDict_GetItemWithError(node_atoms, key);
        if (v != NULL) {
            Py_INCREF(v);
        }
        else if (PyErr_Occurred()
                 || (v = unpack_pair(call3(py_new_node_atom, bufobj, pos, cache), end)) == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        slot_store(s, key, v);
        return v;
    }
    return unpack_pair(call3(py_new_node_atom, bufobj, pos, cache), end);
}

/* A new instance of a slotted frozen dataclass, its fields stolen from ``values``. */
static PyObject *fill(PyTypeObject *type, const Py_ssize_t *offsets, PyObject **values, int n)
{
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        for (int i = 0; i < n; i++) {
            Py_XDECREF(values[i]);
        }
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        SLOT(obj, offsets[i]) = values[i];
    }
    return obj;
}

static PyObject *new_pid(PyObject *bufobj, const unsigned char *b, Py_ssize_t blen,
                         Py_ssize_t pos, PyObject *cache, Py_ssize_t *pend)
{
    /* The usual form, node spelled out: the same bytes are always the same pid. */
    int spelled = pos + 3 <= blen && b[pos + 1] == SMALL_ATOM_UTF8;
    Py_ssize_t end = spelled ? pos + 15 + b[pos + 2] : 0;
    slot_t *s = NULL;
    PyObject *key = NULL, *pid;
    if (spelled && end <= blen) {
        s = &pid_slots[fnv1a(b + pos, end - pos) & (PID_SLOTS - 1)];
        pid = slot_hit(s, b + pos, end - pos);
        if (pid != NULL) {
            *pend = end;
            return pid;
        }
        key = PyBytes_FromStringAndSize((const char *)b + pos, end - pos);
        if (key == NULL) {
            return NULL;
        }
        pid = PyDict_GetItemWithError(pid_table, key);
        if (pid != NULL) {
            slot_store(s, key, pid);
            Py_INCREF(pid);
            *pend = end;
            return pid;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
    }
    Py_ssize_t p;
    PyObject *node = node_atom(bufobj, b, blen, pos + 1, cache, &p);
    if (node == NULL || p + 12 > blen) {
        Py_XDECREF(node);
        Py_XDECREF(key);
        return NULL;
    }
    PyObject *f[4] = {node, PyLong_FromUnsignedLong(be32(b + p)),
                      PyLong_FromUnsignedLong(be32(b + p + 4)),
                      PyLong_FromUnsignedLong(be32(b + p + 8))};
    if (f[1] == NULL || f[2] == NULL || f[3] == NULL) {
        for (int i = 0; i < 4; i++) {
            Py_XDECREF(f[i]);
        }
        Py_XDECREF(key);
        return NULL;
    }
    pid = fill(PidType, pid_off, f, 4);
    *pend = p + 12;
    if (pid != NULL && key != NULL) {
        /* as etf._pid: into the Python table (emptied when full), and the slot */
        if (PyDict_GET_SIZE(pid_table) >= pid_cache_max) {
            PyDict_Clear(pid_table);
        }
        if (PyDict_SetItem(pid_table, key, pid) < 0) {
            Py_DECREF(key);
            Py_DECREF(pid);
            return NULL;
        }
        slot_store(s, key, pid);
        key = NULL;
    }
    Py_XDECREF(key);
    return pid;
}

static PyObject *newer_reference(PyObject *bufobj, const unsigned char *b, Py_ssize_t blen,
                                 Py_ssize_t pos, PyObject *cache, Py_ssize_t *pend)
{
    if (pos + 3 > blen || b[pos + 1] != 0 || b[pos + 2] < 1 || b[pos + 2] > 5) {
        return NULL;
    }
    int n = b[pos + 2];
    Py_ssize_t p;
    PyObject *node = node_atom(bufobj, b, blen, pos + 3, cache, &p);
    if (node == NULL || p + 4 + 4 * n > blen) {
        Py_XDECREF(node);
        return NULL;
    }
    PyObject *ids = PyTuple_New(n);
    PyObject *creation = PyLong_FromUnsignedLong(be32(b + p));
    if (ids == NULL || creation == NULL) {
        Py_XDECREF(ids);
        Py_XDECREF(creation);
        Py_DECREF(node);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *word = PyLong_FromUnsignedLong(be32(b + p + 4 + 4 * i));
        if (word == NULL) {
            Py_DECREF(ids);
            Py_DECREF(creation);
            Py_DECREF(node);
            return NULL;
        }
        PyTuple_SET_ITEM(ids, i, word);
    }
    *pend = p + 4 + 4 * n;
    PyObject *f[3] = {node, creation, ids};
    return fill(RefType, ref_off, f, 3);
}

/* A finished tuple that holds only leaves (numbers, binaries, atoms, pids, references,
 * bools, None) and such tuples can never be part of a reference cycle: it leaves the cyclic
 * GC's care, as CPython's own collector lets go of tuples of plain values. A decoded tree of
 * thousands of tuples otherwise makes every young-generation collection walk all of it. */
static void untrack_leaf_tuple(PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *v = PyTuple_GET_ITEM(tuple, i);
        PyTypeObject *t = Py_TYPE(v);
        if (!(t == &PyLong_Type || t == AtomType || t == &PyBytes_Type || t == PidType
              || t == &PyFloat_Type || t == RefType || v == Py_True || v == Py_False
              || v == Py_None || (t == &PyTuple_Type && !PyObject_GC_IsTracked(v)))) {
            return;
        }
    }
    PyObject_GC_UnTrack(tuple);
}

static PyObject *finish_list(PyObject *items)
{
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *tail = PyList_GET_ITEM(items, n - 1);
    if (!PyList_CheckExact(tail)) {
        return PyObject_CallOneArg(py_finish_list, items); /* an improper list */
    }
    Py_INCREF(tail);
    /* the tail, [] or a STRING_EXT's list, takes the last place */
    int failed = PyList_SetSlice(items, n - 1, n, tail);
    Py_DECREF(tail);
    if (failed) {
        return NULL;
    }
    Py_INCREF(items);
    return items;
}

static PyObject *finish_map(PyObject *flat, Py_ssize_t pos)
{
    Py_ssize_t n = PyList_GET_SIZE(flat) / 2;
    if (n < hash_checked_keys) {
        /* A small map costs at most its size in comparisons per key (see etf.py). */
        PyObject *d = PyDict_New();
        if (d == NULL) {
            return NULL;
        }
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            if (PyDict_SetItem(d, PyList_GET_ITEM(flat, 2 * i), PyList_GET_ITEM(flat, 2 * i + 1))) {
                break;
            }
        }
        if (i == n && PyDict_GET_SIZE(d) == n) {
            return d;
        }
        Py_DECREF(d);
        /* an unhashable key, or keys Python cannot tell apart: etf._finish_map decides */
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                return NULL;
            }
            PyErr_Clear();
        }
    }
    PyObject *p = PyLong_FromSsize_t(pos);
    if (p == NULL) {
        return NULL;
    }
    PyObject *args[2] = {flat, p};
    PyObject *r = PyObject_Vectorcall(py_finish_map, args, 2, NULL);
    Py_DECREF(p);
    return r;
}

enum { K_TOP, K_TUPLE, K_LTUPLE, K_LIST, K_MAP };

typedef struct {
    int kind;
    PyObject *items;   /* a tuple being filled (K_TUPLE) or a list */
    Py_ssize_t left;   /* elements still to come */
    Py_ssize_t filled; /* elements in a K_TUPLE so far */
} dframe;

/* One term from b[*ppos]: a new reference and *ppos after it, or NULL (take_over decides,
 * unless *raised is set: then the exception set must propagate). */
static PyObject *decode_core(PyObject *bufobj, Py_ssize_t *ppos, PyObject *cache,
                             Py_ssize_t max_depth, int *raised)
{
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(bufobj);
    Py_ssize_t blen = PyBytes_GET_SIZE(bufobj);
    Py_ssize_t pos = *ppos, n, end;
    dframe small[STACK_START], *stack = small;
    Py_ssize_t sp = 0, cap = STACK_START;
    dframe cur = {K_TOP, NULL, 1, 0};
    PyObject *val = NULL;
    unsigned steps = 0;

    for (;;) {
        /* A big term keeps this loop busy for long without a bytecode, hence without the
         * eval loop's checks: a thread waiting for the GIL (the event loop, while this runs
         * in a decoder thread) asks for it in vain, for the whole term (10 MiB of records:
         * ~0.7 s). Now and then a call of an empty Python function runs those checks, which
         * hand the GIL over when it is asked for (and run signal handlers), as Python code
         * would. (Releasing and retaking the GIL here would not: the retake wins against
         * the woken waiter, whose wait restarts without asking again.) Between two values
         * nothing borrowed is held: what is being built belongs to this call alone, and
         * the caller keeps bufobj (bytes) alive. An exception from those checks (a signal
         * handler's) is the caller's to see: *raised says so. */
        if (++steps == YIELD_EVERY) {
            steps = 0;
            PyObject *r = PyObject_CallNoArgs(py_yield);
            if (r == NULL) {
                *raised = 1;
                goto fail;
            }
            Py_DECREF(r);
        }
        if (pos >= blen) {
            goto fail;
        }
        switch (b[pos]) {
        case SMALL_INTEGER:
            if (pos + 2 > blen) {
                goto fail;
            }
            val = PyLong_FromLong(b[pos + 1]);
            pos += 2;
            break;
        case SMALL_ATOM_UTF8:
            if (pos + 2 > blen || pos + 2 + b[pos + 1] > blen) {
                goto fail;
            }
            val = utf8_atom(bufobj, b, pos);
            pos += 2 + b[pos + 1];
            break;
        case ATOM_CACHE_REF:
            if (pos + 2 > blen) {
                goto fail;
            }
            val = cache_atom(cache, b[pos + 1]);
            if (val == NULL || Py_TYPE(val) != AtomType) {
                goto fail;
            }
            if (val == atom_true || val == atom_false || val == atom_nil) {
                PyObject *as = val == atom_true ? Py_True : val == atom_false ? Py_False : Py_None;
                Py_DECREF(val);
                Py_INCREF(as);
                val = as;
            }
            pos += 2;
            break;
        case SMALL_TUPLE:
        case LARGE_TUPLE:
        case LIST:
        case MAP: {
            int tag = b[pos];
            Py_ssize_t head = tag == SMALL_TUPLE ? 2 : 5;
            if (pos + head > blen) {
                goto fail;
            }
            n = tag == SMALL_TUPLE ? b[pos + 1] : (Py_ssize_t)be32(b + pos + 1);
            if (n == 0 && tag != LIST) {
                val = tag == MAP ? PyDict_New() : PyTuple_New(0);
                pos += head;
                break;
            }
            /* the counts the input claims, checked as etf._decode checks them */
            if ((tag == LARGE_TUPLE && n > blen - pos - 5) || (tag == LIST && n >= blen - pos - 5)
                || (tag == MAP && 2 * n > blen - pos - 5)) {
                goto fail;
            }
            if (tag == LIST && cur.kind == K_LIST && cur.left == 1) {
                cur.left = n + 1; /* a list tail that is a list continues this one */
                pos += 5;
                continue;
            }
            if (sp >= max_depth) {
                goto fail;
            }
            if (sp == cap) {
                dframe *grown = PyMem_Malloc(sizeof(dframe) * cap * 2);
                if (grown == NULL) {
                    goto fail;
                }
                memcpy(grown, stack, sizeof(dframe) * sp);
                if (stack != small) {
                    PyMem_Free(stack);
                }
                stack = grown;
                cap *= 2;
            }
            stack[sp++] = cur;
            cur.kind = tag == SMALL_TUPLE ? K_TUPLE : tag == LARGE_TUPLE ? K_LTUPLE
                       : tag == LIST ? K_LIST : K_MAP;
            cur.items = cur.kind == K_TUPLE ? PyTuple_New(n) : PyList_New(0);
            cur.left = tag == LIST ? n + 1 : tag == MAP ? 2 * n : n;
            cur.filled = 0;
            pos += head;
            if (cur.items == NULL) {
                goto fail;
            }
            continue;
        }
        case NIL:
            val = PyList_New(0);
            pos += 1;
            break;
        case BINARY:
            if (pos + 5 > blen) {
                goto fail;
            }
            n = be32(b + pos + 1);
            if (n > blen - pos - 5) {
                goto fail;
            }
            val = PyBytes_FromStringAndSize((const char *)b + pos + 5, n);
            pos += 5 + n;
            break;
        case STRING:
            if (pos + 3 > blen) {
                goto fail;
            }
            n = be16(b + pos + 1);
            if (pos + 3 + n > blen) {
                goto fail;
            }
            val = PyList_New(n);
            if (val == NULL) {
                goto fail;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                PyList_SET_ITEM(val, i, PyLong_FromLong(b[pos + 3 + i])); /* cached small ints */
            }
            pos += 3 + n;
            break;
        case INTEGER:
            if (pos + 5 > blen) {
                goto fail;
            }
            val = PyLong_FromLong((int32_t)be32(b + pos + 1));
            pos += 5;
            break;
        case NEW_FLOAT: {
            if (pos + 9 > blen) {
                goto fail;
            }
            double d = PyFloat_Unpack8((const char *)b + pos + 1, 0);
            if (!isfinite(d)) {
                goto fail;
            }
            val = PyFloat_FromDouble(d);
            pos += 9;
            break;
        }
        case NEW_PID:
            val = new_pid(bufobj, b, blen, pos, cache, &end);
            pos = end;
            break;
        case NEWER_REFERENCE:
            val = newer_reference(bufobj, b, blen, pos, cache, &end);
            pos = end;
            break;
        default: {
            PyObject *leaf = leaves[b[pos]];
            if (leaf == NULL) {
                goto fail; /* funs, unknown tags: the Python codec */
            }
            val = unpack_pair(call3(leaf, bufobj, pos, cache), &end);
            pos = end;
            break;
        }
        }
        if (val == NULL) {
            goto fail;
        }
        /* Hand the finished value to its container; complete containers in turn. */
        for (;;) {
            if (cur.kind == K_TOP) {
                if (stack != small) {
                    PyMem_Free(stack);
                }
                *ppos = pos;
                return val;
            }
            if (cur.kind == K_TUPLE) {
                PyTuple_SET_ITEM(cur.items, cur.filled++, val);
            }
            else {
                int failed = PyList_Append(cur.items, val);
                Py_DECREF(val);
                if (failed) {
                    val = NULL;
                    goto fail;
                }
            }
            val = NULL;
            if (--cur.left) {
                break;
            }
            if (cur.kind == K_TUPLE) {
                val = cur.items;
                untrack_leaf_tuple(val);
            }
            else {
                val = cur.kind == K_LTUPLE ? PyList_AsTuple(cur.items)
                      : cur.kind == K_LIST ? finish_list(cur.items)
                                           : finish_map(cur.items, pos);
                Py_DECREF(cur.items);
            }
            cur = stack[--sp];
            if (val == NULL) {
                goto fail;
            }
        }
    }
fail:
    Py_XDECREF(val);
    for (;;) {
        Py_XDECREF(cur.items);
        if (sp == 0) {
            break;
        }
        cur = stack[--sp];
    }
    if (stack != small) {
        PyMem_Free(stack);
    }
    return NULL;
}

/* ---- argument parsing ----------------------------------------------------------------- */

/* Keyword arguments into ``values`` (by ``names``); 0 on success, -1 for anything else (an
 * unknown or repeated name: the Python function then reports it). */
static int keywords(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    const char *const *names, PyObject **values, int count)
{
    if (kwnames == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
        int j = 0;
        while (j < count && PyUnicode_CompareWithASCIIString(kw, names[j]) != 0) {
            j++;
        }
        if (j == count || values[j] != NULL) {
            return -1;
        }
        values[j] = args[nargs + i];
    }
    return 0;
}

static int depth_arg(PyObject *value, Py_ssize_t *depth)
{
    if (value == NULL) {
        *depth = default_max_depth;
        return 0;
    }
    if (!PyLong_CheckExact(value)) {
        return -1;
    }
    *depth = PyLong_AsSsize_t(value);
    if (*depth == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

#define NOT_READY()                                                                   \
    do {                                                                              \
        if (!ready) {                                                                 \
            PyErr_SetString(PyExc_RuntimeError, "pyerl_node.proto._cetf: setup() first"); \
            return NULL;                                                              \
        }                                                                             \
    } while (0)

/* A compressed term at buf[pos]: its inner term (new reference) and *end, or NULL. */
static PyObject *decode_compressed(PyObject *bufobj, Py_ssize_t pos, PyObject *cache,
                                   Py_ssize_t depth, PyObject *max_size, Py_ssize_t *end,
                                   int *raised)
{
    PyObject *p = PyLong_FromSsize_t(pos);
    if (p == NULL) {
        return NULL;
    }
    PyObject *args[3] = {bufobj, p, max_size};
    PyObject *inner = unpack_pair(PyObject_Vectorcall(py_inflate, args, 3, NULL), end);
    Py_DECREF(p);
    if (inner == NULL) {
        return NULL;
    }
    PyObject *term = NULL;
    if (PyBytes_CheckExact(inner)) {
        Py_ssize_t at = 0;
        term = decode_core(inner, &at, cache, depth, raised);
        if (term != NULL && at != PyBytes_GET_SIZE(inner)) {
            Py_CLEAR(term);
        }
    }
    Py_DECREF(inner);
    return term;
}

static PyObject *c_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"max_decompressed_size", "max_depth"};
    PyObject *kw[2] = {NULL, NULL};
    Py_ssize_t depth, pos = 1, end;
    int raised = 0;
    NOT_READY();
    if (nargs == 1 && !keywords(args, nargs, kwnames, names, kw, 2) && !depth_arg(kw[1], &depth)
        && PyBytes_CheckExact(args[0]) && PyBytes_GET_SIZE(args[0]) >= 2) {
        PyObject *buf = args[0];
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(buf);
        PyObject *term = NULL;
        if (b[0] == VERSION && b[1] != COMPRESSED) {
            term = decode_core(buf, &pos, Py_None, depth, &raised);
        }
        else if (b[0] == VERSION) {
            term = decode_compressed(buf, 1, Py_None, depth, kw[0] ? kw[0] : default_max_size,
                                     &end, &raised);
            pos = end;
        }
        if (term != NULL && pos == PyBytes_GET_SIZE(buf)) {
            return term;
        }
        Py_XDECREF(term);
        if (raised || !take_over()) {
            return NULL;
        }
    }
    return PyObject_Vectorcall(py_decode, args, nargs, kwnames);
}

static PyObject *c_decode_from(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"atom_cache", "max_depth", "max_decompressed_size"};
    PyObject *kw[3] = {NULL, NULL, NULL};
    Py_ssize_t depth, pos = 0;
    int raised = 0;
    NOT_READY();
    if ((nargs == 1 || nargs == 2) && !keywords(args, nargs, kwnames, names, kw, 3)
        && !depth_arg(kw[1], &depth) && PyBytes_CheckExact(args[0])) {
        PyObject *buf = args[0];
        if (nargs == 2) {
            pos = PyLong_CheckExact(args[1]) ? PyLong_AsSsize_t(args[1]) : -1;
            if (pos == -1 && PyErr_Occurred()) {
                PyErr_Clear();
            }
        }
        if (pos >= 0 && pos < PyBytes_GET_SIZE(buf)) {
            PyObject *cache = kw[0] ? kw[0] : Py_None;
            PyObject *term;
            Py_ssize_t end = pos;
            if (PyBytes_AS_STRING(buf)[pos] == (char)COMPRESSED) {
                term = decode_compressed(buf, pos, cache, depth,
                                         kw[2] ? kw[2] : default_max_size, &end, &raised);
            }
            else {
                term = decode_core(buf, &end, cache, depth, &raised);
            }
            if (term != NULL) {
                PyObject *at = PyLong_FromSsize_t(end);
                if (at == NULL) {
                    Py_DECREF(term);
                    return NULL;
                }
                PyObject *pair = PyTuple_New(2);
                if (pair == NULL) {
                    Py_DECREF(term);
                    Py_DECREF(at);
                    return NULL;
                }
                PyTuple_SET_ITEM(pair, 0, term);
                PyTuple_SET_ITEM(pair, 1, at);
                return pair;
            }
            if (raised || !take_over()) {
                return NULL;
            }
        }
    }
    return PyObject_Vectorcall(py_decode_from, args, nargs, kwnames);
}

/* ---- a stream's sends -------------------------------------------------------------------- */

/* Whether a remembered control message read with ``known`` (its references) may stand for
 * one read with ``refs`` (NULL: a header without references): the same list, or both
 * empty (control_memo.PrefixMemo.lookup's rule). */
static int same_refs(PyObject *known, PyObject *refs)
{
    if (known == refs) {
        return 1;
    }
    int known_empty = PyList_CheckExact(known) && PyList_GET_SIZE(known) == 0;
    return known_empty && (refs == NULL || PyList_GET_SIZE(refs) == 0);
}

/* The builder remembered in ``entries`` for the control message at b[at:], one of the
 * ``lengths`` long and ending before ``end``, and *after it; NULL (no error set) if none. */
static PyObject *remembered(const unsigned char *b, Py_ssize_t at, Py_ssize_t end,
                            PyObject *refs, PyObject *entries, PyObject *lengths,
                            Py_ssize_t *after)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lengths); i++) {
        PyObject *item = PyList_GET_ITEM(lengths, i);
        Py_ssize_t size = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        if (size <= 0 || size > end - at) {
            PyErr_Clear();
            continue;
        }
        PyObject *key = PyBytes_FromStringAndSize((const char *)b + at, size);
        if (key == NULL) {
            return NULL;
        }
        PyObject *hit = PyDict_GetItemWithError(entries, key);
        Py_DECREF(key);
        if (hit == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            continue;
        }
        if (PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2
            && same_refs(PyTuple_GET_ITEM(hit, 0), refs)) {
            *after = at + size;
            return PyTuple_GET_ITEM(hit, 1);
        }
    }
    return NULL;
}

/* control_memo.decode_sends(buf, pos, events, headers, entries, lengths, limit) -> pos:
 * the packets of a stream of sends, decoded by the rule of its Python twin. It stops before
 * anything else, a payload the C loop does not decode included (the caller's packet by
 * packet decoding then raises what is wrong, or decodes what the C loop leaves to Python). */
static PyObject *c_decode_sends(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NOT_READY();
    if (nargs != 7 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
        || !PyList_CheckExact(args[2]) || !PyDict_CheckExact(args[3])
        || !PyDict_CheckExact(args[4]) || !PyList_CheckExact(args[5])
        || !PyLong_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_sends(bytes, int, list, dict, dict, list, int) expected");
        return NULL;
    }
    PyObject *buf = args[0], *events = args[2], *headers = args[3];
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t total = PyBytes_GET_SIZE(buf), depth;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), limit = PyLong_AsSsize_t(args[6]);
    if ((pos == -1 || limit == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "decode_sends: a negative offset");
        return NULL;
    }
    depth_arg(NULL, &depth); /* (the default: it cannot fail) */
    while (total - pos >= 4) {
        Py_ssize_t length = (Py_ssize_t)be32(b + pos);
        if (length == 0) {
            pos += 4;
            continue;
        }
        Py_ssize_t start = pos + 4, end = start + length;
        if (length > limit || length < 4 || length > total - start || b[start] != VERSION
            || b[start + 1] != 68) {
            break;
        }
        Py_ssize_t count = b[start + 2], at = start + 3, after = 0;
        PyObject *refs = NULL;
        if (count) {
            at = start + 4 + count / 2 + count;
            if (at > end) {
                break;
            }
            PyObject *key = PyBytes_FromStringAndSize((const char *)b + start + 2,
                                                      at - start - 2);
            if (key == NULL) {
                return NULL;
            }
            refs = PyDict_GetItemWithError(headers, key);
            Py_DECREF(key);
            if (refs == NULL) {
                if (PyErr_Occurred()) {
                    return NULL;
                }
                break;
            }
            if (!PyList_CheckExact(refs)) {
                break;
            }
        }
        PyObject *build = remembered(b, at, end, refs, args[4], args[5], &after);
        if (build == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            break;
        }
        if (after >= end || b[after] == COMPRESSED) {
            break;
        }
        /* (held: decoding may run Python code, which may change the dicts they are in) */
        Py_INCREF(build);
        Py_XINCREF(refs);
        int raised = 0;
        PyObject *payload = decode_core(buf, &after, refs ? refs : Py_None, depth, &raised);
        Py_XDECREF(refs);
        if (payload == NULL || after != end) {
            Py_DECREF(build);
            Py_XDECREF(payload);
            if (payload == NULL && (raised || !take_over())) {
                return NULL;
            }
            break;
        }
        PyObject *msg = PyObject_CallOneArg(build, payload);
        Py_DECREF(build);
        Py_DECREF(payload);
        if (msg == NULL) {
            return NULL;
        }
        int failed = PyList_Append(events, msg);
        Py_DECREF(msg);
        if (failed) {
            return NULL;
        }
        pos = end;
    }
    return PyLong_FromSsize_t(pos);
}

/* ---- encoding ------------------------------------------------------------------------- */

/* The output: a bytes object grown in place (encode) or the caller's bytearray (encode_into),
 * written from ``len`` on; ``cap`` is its current size. */
typedef struct {
    PyObject *obj;
    int is_bytes;
    char *data;
    Py_ssize_t len, cap;
} wbuf;

static int grow(wbuf *w, Py_ssize_t need)
{
    Py_ssize_t cap;
    if (w->is_bytes) {
        cap = w->cap * 2 > w->len + need ? w->cap * 2 : w->len + need;
        if (_PyBytes_Resize(&w->obj, cap) < 0) {
            return -1;
        }
        w->data = PyBytes_AS_STRING(w->obj);
    }
    else {
        /* The caller's buffer (a connection's outbound bytes, often big): an eighth more than
         * needed, so that the bytearray's own over-allocation absorbs the growth and the
         * final resize to the exact length keeps the allocation (doubling would make the
         * next call reallocate, i.e. copy all of the buffer, every time). */
        cap = w->len + need + (w->len >> 3) + 256;
        if (PyByteArray_Resize(w->obj, cap) < 0) {
            return -1;
        }
        w->data = PyByteArray_AS_STRING(w->obj);
    }
    w->cap = cap;
    return 0;
}

static inline int room(wbuf *w, Py_ssize_t n)
{
    return w->len + n > w->cap ? grow(w, n) : 0;
}

#define ROOM(w, n)            \
    if (room((w), (n)) < 0) { \
        return -1;            \
    }

static inline int put(wbuf *w, const char *p, Py_ssize_t n)
{
    ROOM(w, n);
    memcpy(w->data + w->len, p, n);
    w->len += n;
    return 0;
}

static inline int put_bytes(wbuf *w, PyObject *bytes)
{
    return put(w, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static inline int put_tag32(wbuf *w, int tag, uint32_t v)
{
    ROOM(w, 5);
    unsigned char *p = (unsigned char *)w->data + w->len;
    p[0] = (unsigned char)tag;
    put32(p + 1, v);
    w->len += 5;
    return 0;
}

static int put_atom(wbuf *w, PyObject *atom)
{
    PyObject *b = PyDict_GetItemWithError(atom_bytes, atom);
    if (b != NULL) {
        return PyBytes_CheckExact(b) ? put_bytes(w, b) : -1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    b = PyObject_CallOneArg(py_atom_bytes, atom);
    if (b == NULL) {
        return -1;
    }
    int r = PyBytes_CheckExact(b) ? put_bytes(w, b) : -1;
    Py_DECREF(b);
    return r;
}

/* A 32-bit unsigned field of a pid or reference; -1 if it is not an int in range. */
static int u32_field(PyObject *v, uint32_t *out)
{
    if (v == NULL || !PyLong_CheckExact(v)) {
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0 || x > 0xFFFFFFFFLL) {
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int put_int(wbuf *w, PyObject *term)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(term, &overflow);
    if (!overflow && x >= 0 && x <= 255) {
        ROOM(w, 2);
        w->data[w->len] = SMALL_INTEGER;
        w->data[w->len + 1] = (char)x;
        w->len += 2;
        return 0;
    }
    if (!overflow && x >= -0x80000000LL && x <= 0x7FFFFFFFLL) {
        return put_tag32(w, INTEGER, (uint32_t)(int32_t)x);
    }
    PyObject *tmp = PyByteArray_FromStringAndSize(NULL, 0);
    if (tmp == NULL) {
        return -1;
    }
    PyObject *args[2] = {term, tmp};
    PyObject *r = PyObject_Vectorcall(py_encode_big, args, 2, NULL);
    int failed = r == NULL || put(w, PyByteArray_AS_STRING(tmp), PyByteArray_GET_SIZE(tmp));
    Py_XDECREF(r);
    Py_DECREF(tmp);
    return failed ? -1 : 0;
}

/* A proper list as STRING_EXT when term_to_binary would write it so: 1 if written. */
static int put_string(wbuf *w, PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > 0xFFFF) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(list, i);
        if (!PyLong_CheckExact(v)) {
            return 0;
        }
        int overflow;
        long x = PyLong_AsLongAndOverflow(v, &overflow);
        if (overflow || x < 0 || x > 255) {
            return 0;
        }
    }
    ROOM(w, 3 + n);
    unsigned char *p = (unsigned char *)w->data + w->len;
    p[0] = STRING;
    p[1] = (unsigned char)(n >> 8);
    p[2] = (unsigned char)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        p[3 + i] = (unsigned char)PyLong_AsLong(PyList_GET_ITEM(list, i));
    }
    w->len += 3 + n;
    return 1;
}

/* encode(): a big binary is not copied into the buffer; the buffer so far and the binary
 * go to ``chunks`` (as etf.encode does). */
static int move_to_chunks(wbuf *w, PyObject *chunks, PyObject *data)
{
    if (_PyBytes_Resize(&w->obj, w->len) < 0) {
        return -1;
    }
    int failed = PyList_Append(chunks, w->obj) || PyList_Append(chunks, data);
    Py_CLEAR(w->obj);
    if (failed) {
        return -1;
    }
    w->obj = PyBytes_FromStringAndSize(NULL, 256);
    if (w->obj == NULL) {
        return -1;
    }
    w->data = PyBytes_AS_STRING(w->obj);
    w->len = 0;
    w->cap = 256;
    return 0;
}

enum { E_TUPLE, E_LIST, E_DICT, E_IMPROPER };

typedef struct {
    int kind;
    PyObject *obj;     /* the container (a strong reference) */
    Py_ssize_t i, n;   /* next element, element count (E_DICT: PyDict_Next's position) */
    PyObject *pending; /* E_DICT: the value of the key just written (borrowed) */
} eframe;

static int push(eframe **stack, eframe *small, Py_ssize_t *sp, Py_ssize_t *cap,
                Py_ssize_t max_depth, int kind, PyObject *obj, Py_ssize_t n)
{
    if (*sp >= max_depth) {
        return -1;
    }
    if (*sp == *cap) {
        eframe *grown = PyMem_Malloc(sizeof(eframe) * *cap * 2);
        if (grown == NULL) {
            return -1;
        }
        memcpy(grown, *stack, sizeof(eframe) * *sp);
        if (*stack != small) {
            PyMem_Free(*stack);
        }
        *stack = grown;
        *cap *= 2;
    }
    Py_INCREF(obj);
    (*stack)[(*sp)++] = (eframe){kind, obj, 0, n, NULL};
    return 0;
}

/* Write one term; 0, or -1 (take_over decides). ``chunks`` is NULL for encode_into. */
static int encode_core(PyObject *term, wbuf *w, Py_ssize_t max_depth, PyObject *chunks)
{
    eframe small[STACK_START], *stack = small;
    Py_ssize_t sp = 0, cap = STACK_START, n;
    int status = -1;

    for (;;) {
        PyTypeObject *t = Py_TYPE(term);
        if (t == AtomType) {
            if (put_atom(w, term)) {
                goto done;
            }
        }
        else if (t == &PyLong_Type) {
            if (put_int(w, term)) {
                goto done;
            }
        }
        else if (t == &PyTuple_Type) {
            n = PyTuple_GET_SIZE(term);
            if (n < 256) {
                if (room(w, 2)) {
                    goto done;
                }
                w->data[w->len] = SMALL_TUPLE;
                w->data[w->len + 1] = (char)n;
                w->len += 2;
            }
            else if (n > 0xFFFFFFFFLL || put_tag32(w, LARGE_TUPLE, (uint32_t)n)) {
                goto done;
            }
            if (n && push(&stack, small, &sp, &cap, max_depth, E_TUPLE, term, n)) {
                goto done;
            }
        }
        else if (t == &PyList_Type) {
            n = PyList_GET_SIZE(term);
            if (n == 0) {
                if (room(w, 1)) {
                    goto done;
                }
                w->data[w->len++] = NIL;
            }
            else if (!PyLong_CheckExact(PyList_GET_ITEM(term, 0)) || !put_string(w, term)) {
                if (n > 0xFFFFFFFFLL || put_tag32(w, LIST, (uint32_t)n)
                    || push(&stack, small, &sp, &cap, max_depth, E_LIST, term, n)) {
                    goto done;
                }
            }
        }
        else if (t == &PyBytes_Type || t == &PyUnicode_Type) {
            const char *data;
            if (t == &PyBytes_Type) {
                data = PyBytes_AS_STRING(term);
                n = PyBytes_GET_SIZE(term);
            }
            else if ((data = PyUnicode_AsUTF8AndSize(term, &n)) == NULL) {
                goto done;
            }
            if (n > 0xFFFFFFFFLL || put_tag32(w, BINARY, (uint32_t)n)) {
                goto done;
            }
            if (chunks != NULL && t == &PyBytes_Type && n >= big_binary) {
                if (move_to_chunks(w, chunks, term)) {
                    goto done;
                }
            }
            else if (put(w, data, n)) {
                goto done;
            }
        }
        else if (t == &PyDict_Type) {
            n = PyDict_GET_SIZE(term);
            if (n > 0xFFFFFFFFLL || put_tag32(w, MAP, (uint32_t)n)) {
                goto done;
            }
            if (n && push(&stack, small, &sp, &cap, max_depth, E_DICT, term, n)) {
                goto done;
            }
        }
        else if (t == &PyFloat_Type) {
            double d = PyFloat_AS_DOUBLE(term);
            if (!isfinite(d)) {
                goto done;
            }
            if (room(w, 9)) {
                goto done;
            }
            w->data[w->len] = NEW_FLOAT;
            if (PyFloat_Pack8(d, w->data + w->len + 1, 0) < 0) {
                goto done;
            }
            w->len += 9;
        }
        else if (t == PidType) {
            uint32_t f[3];
            PyObject *node = SLOT(term, pid_off[0]);
            if (node == NULL || Py_TYPE(node) != AtomType || u32_field(SLOT(term, pid_off[1]), &f[0])
                || u32_field(SLOT(term, pid_off[2]), &f[1])
                || u32_field(SLOT(term, pid_off[3]), &f[2])) {
                goto done;
            }
            if (room(w, 1)) {
                goto done;
            }
            w->data[w->len++] = NEW_PID;
            if (put_atom(w, node)) {
                goto done;
            }
            if (room(w, 12)) {
                goto done;
            }
            for (int i = 0; i < 3; i++) {
                put32((unsigned char *)w->data + w->len + 4 * i, f[i]);
            }
            w->len += 12;
        }
        else if (term == Py_True || term == Py_False || term == Py_None) {
            if (put_bytes(w, term == Py_True ? bytes_true : term == Py_False ? bytes_false
                                                                              : bytes_nil)) {
                goto done;
            }
        }
        else if (t == RefType) {
            PyObject *node = SLOT(term, ref_off[0]), *ids = SLOT(term, ref_off[2]);
            uint32_t words[6];
            if (node == NULL || Py_TYPE(node) != AtomType || ids == NULL || !PyTuple_CheckExact(ids)
                || PyTuple_GET_SIZE(ids) < 1 || PyTuple_GET_SIZE(ids) > 5
                || u32_field(SLOT(term, ref_off[1]), &words[0])) {
                goto done;
            }
            n = PyTuple_GET_SIZE(ids);
            for (Py_ssize_t i = 0; i < n; i++) {
                if (u32_field(PyTuple_GET_ITEM(ids, i), &words[1 + i])) {
                    goto done;
                }
            }
            if (room(w, 3)) {
                goto done;
            }
            w->data[w->len] = NEWER_REFERENCE;
            w->data[w->len + 1] = 0;
            w->data[w->len + 2] = (char)n;
            w->len += 3;
            if (put_atom(w, node)) {
                goto done;
            }
            if (room(w, 4 * (n + 1))) {
                goto done;
            }
            for (Py_ssize_t i = 0; i <= n; i++) {
                put32((unsigned char *)w->data + w->len + 4 * i, words[i]);
            }
            w->len += 4 * (n + 1);
        }
        else if (t == ImproperType) {
            /* [Items | Tail]: the tail is written as the last element, not followed by NIL */
            PyObject *items = SLOT(term, improper_off[0]);
            if (items == NULL || !PyTuple_CheckExact(items) || SLOT(term, improper_off[1]) == NULL) {
                goto done;
            }
            n = PyTuple_GET_SIZE(items);
            if (n > 0xFFFFFFFFLL || put_tag32(w, LIST, (uint32_t)n)
                || push(&stack, small, &sp, &cap, max_depth, E_IMPROPER, term, n + 1)) {
                goto done;
            }
        }
        else {
            goto done; /* a rarer type: the Python codec */
        }
        /* Next element of the innermost unfinished container. */
        for (;;) {
            if (sp == 0) {
                status = 0;
                goto done;
            }
            eframe *f = &stack[sp - 1];
            if (f->kind == E_TUPLE) {
                if (f->i < f->n) {
                    term = PyTuple_GET_ITEM(f->obj, f->i++);
                    break;
                }
            }
            else if (f->kind == E_LIST) {
                if (f->i < f->n) {
                    if (f->i >= PyList_GET_SIZE(f->obj)) {
                        goto done; /* (changed meanwhile) */
                    }
                    term = PyList_GET_ITEM(f->obj, f->i++);
                    break;
                }
                if (room(w, 1)) {
                    goto done;
                }
                w->data[w->len++] = NIL;
            }
            else if (f->kind == E_DICT) {
                PyObject *key, *value;
                if (f->pending != NULL) {
                    term = f->pending;
                    f->pending = NULL;
                    break;
                }
                if (PyDict_GET_SIZE(f->obj) != f->n) {
                    goto done; /* (changed meanwhile) */
                }
                if (PyDict_Next(f->obj, &f->i, &key, &value)) {
                    term = key;
                    f->pending = value;
                    break;
                }
            }
            else {
                if (f->i < f->n) {
                    term = f->i < f->n - 1 ? PyTuple_GET_ITEM(SLOT(f->obj, improper_off[0]), f->i)
                                           : SLOT(f->obj, improper_off[1]);
                    f->i++;
                    break;
                }
            }
            Py_DECREF(f->obj);
            sp--;
        }
    }
done:
    while (sp > 0) {
        Py_DECREF(stack[--sp].obj);
    }
    if (stack != small) {
        PyMem_Free(stack);
    }
    return status;
}

static PyObject *c_encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"compressed", "max_depth"};
    PyObject *kw[2] = {NULL, NULL};
    Py_ssize_t depth;
    NOT_READY();
    if (nargs != 1 || keywords(args, nargs, kwnames, names, kw, 2) || depth_arg(kw[1], &depth)) {
        return PyObject_Vectorcall(py_encode, args, nargs, kwnames);
    }
    PyObject *chunks = PyList_New(0);
    if (chunks == NULL) {
        return NULL;
    }
    wbuf w = {PyBytes_FromStringAndSize(NULL, 256), 1, NULL, 1, 256};
    if (w.obj == NULL) {
        Py_DECREF(chunks);
        return NULL;
    }
    w.data = PyBytes_AS_STRING(w.obj);
    w.data[0] = (char)VERSION;
    PyObject *data = NULL;
    if (encode_core(args[0], &w, depth, chunks) == 0 && _PyBytes_Resize(&w.obj, w.len) == 0) {
        if (PyList_GET_SIZE(chunks) == 0) {
            data = w.obj;
            w.obj = NULL;
        }
        else if (PyList_Append(chunks, w.obj) == 0) {
            data = PyObject_CallMethodOneArg(empty_bytes, str_join, chunks);
        }
    }
    Py_XDECREF(w.obj);
    Py_DECREF(chunks);
    if (data == NULL) {
        if (!take_over()) {
            return NULL;
        }
        return PyObject_Vectorcall(py_encode, args, nargs, kwnames);
    }
    if (kw[0] == NULL || kw[0] == Py_False) {
        return data;
    }
    PyObject *cargs[2] = {data, kw[0]};
    PyObject *packed = PyObject_Vectorcall(py_compress, cargs, 2, NULL);
    Py_DECREF(data);
    return packed;
}

static PyObject *c_encode_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"max_depth"};
    PyObject *kw[1] = {NULL};
    Py_ssize_t depth;
    NOT_READY();
    if (nargs == 2 && !keywords(args, nargs, kwnames, names, kw, 1) && !depth_arg(kw[0], &depth)
        && PyByteArray_CheckExact(args[1])) {
        PyObject *out = args[1];
        Py_ssize_t mark = PyByteArray_GET_SIZE(out);
        wbuf w = {out, 0, PyByteArray_AS_STRING(out), mark, mark};
        if (encode_core(args[0], &w, depth, NULL) == 0 && PyByteArray_Resize(out, w.len) == 0) {
            Py_RETURN_NONE;
        }
        if (!take_over()) {
            PyByteArray_Resize(out, mark);
            return NULL;
        }
        if (PyByteArray_Resize(out, mark) < 0) { /* leave the caller's buffer as it was */
            return NULL;
        }
    }
    return PyObject_Vectorcall(py_encode_into, args, nargs, kwnames);
}

/* ---- set-up --------------------------------------------------------------------------- */

static PyObject *config_item(PyObject *config, const char *name)
{
    PyObject *v = PyDict_GetItemString(config, name);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "pyerl_node.proto._cetf.setup: no %s", name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

static int member_offset(PyTypeObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

static int take_type(PyObject *config, const char *name, PyTypeObject **out)
{
    PyObject *t = config_item(config, name);
    if (t == NULL) {
        return -1;
    }
    if (!PyType_Check(t)) {
        Py_DECREF(t);
        PyErr_Format(PyExc_TypeError, "setup: %s must be a class", name);
        return -1;
    }
    *out = (PyTypeObject *)t;
    return 0;
}

static int take_size(PyObject *config, const char *name, Py_ssize_t *out)
{
    PyObject *v = config_item(config, name);
    if (v == NULL) {
        return -1;
    }
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The function decode_core calls now and then: empty, it is only its frame's entry, where
 * the eval loop serves a GIL drop request, pending signals and calls. */
static PyObject *make_yield(void)
{
    PyObject *globals = PyDict_New();
    if (globals == NULL) {
        return NULL;
    }
    PyObject *fn = NULL;
    if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) == 0) {
        PyObject *r = PyRun_String("def let_others_run():\n    pass\n", Py_file_input, globals,
                                   globals);
        if (r != NULL) {
            Py_DECREF(r);
            fn = PyDict_GetItemString(globals, "let_others_run");
            Py_XINCREF(fn);
        }
    }
    Py_DECREF(globals);
    if (fn == NULL && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_RuntimeError, "setup: no yield function");
    }
    return fn;
}

static PyObject *c_setup(PyObject *self, PyObject *config)
{
    if (!PyDict_Check(config)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes a dict");
        return NULL;
    }
    if (ready) {
        PyErr_SetString(PyExc_RuntimeError, "pyerl_node.proto._cetf is set up already");
        return NULL;
    }
    struct {
        const char *name;
        PyObject **slot;
    } objects[] = {
        {"utf8_atoms", &utf8_atoms}, {"node_atoms", &node_atoms}, {"pids", &pid_table},
        {"atom_bytes", &atom_bytes}, {"true", &atom_true}, {"false", &atom_false},
        {"nil", &atom_nil}, {"true_bytes", &bytes_true}, {"false_bytes", &bytes_false},
        {"nil_bytes", &bytes_nil}, {"new_atom", &py_new_atom},
        {"new_node_atom", &py_new_node_atom}, {"finish_list", &py_finish_list},
        {"finish_map", &py_finish_map}, {"inflate", &py_inflate},
        {"atom_bytes_of", &py_atom_bytes}, {"encode_big", &py_encode_big},
        {"compress", &py_compress}, {"decode", &py_decode}, {"decode_from", &py_decode_from},
        {"encode", &py_encode}, {"encode_into", &py_encode_into},
        {"max_decompressed_size", &default_max_size},
    };
    for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        if ((*objects[i].slot = config_item(config, objects[i].name)) == NULL) {
            return NULL;
        }
    }
    if (!PyDict_CheckExact(utf8_atoms) || !PyDict_CheckExact(node_atoms)
        || !PyDict_CheckExact(pid_table) || !PyDict_CheckExact(atom_bytes)
        || !PyBytes_CheckExact(bytes_true) || !PyBytes_CheckExact(bytes_false)
        || !PyBytes_CheckExact(bytes_nil)) {
        PyErr_SetString(PyExc_TypeError, "setup: caches must be dicts, encodings bytes");
        return NULL;
    }
    if (take_type(config, "atom", &AtomType) || take_type(config, "pid", &PidType)
        || take_type(config, "reference", &RefType)
        || take_type(config, "improper_list", &ImproperType)
        || take_size(config, "pid_cache_max", &pid_cache_max)
        || take_size(config, "hash_checked_keys", &hash_checked_keys)
        || take_size(config, "max_depth", &default_max_depth)
        || take_size(config, "big_binary", &big_binary)) {
        return NULL;
    }
    static const char *const pid_fields[] = {"node", "id", "serial", "creation"};
    static const char *const ref_fields[] = {"node", "creation", "ids"};
    static const char *const improper_fields[] = {"items", "tail"};
    for (int i = 0; i < 4; i++) {
        if (member_offset(PidType, pid_fields[i], &pid_off[i])) {
            return NULL;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (member_offset(RefType, ref_fields[i], &ref_off[i])) {
            return NULL;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (member_offset(ImproperType, improper_fields[i], &improper_off[i])) {
            return NULL;
        }
    }
    PyObject *table = config_item(config, "leaves");
    if (table == NULL) {
        return NULL;
    }
    PyObject *tag, *fn;
    Py_ssize_t at = 0;
    while (PyDict_Next(table, &at, &tag, &fn)) {
        long t = PyLong_AsLong(tag);
        if (t < 0 || t > 255) {
            Py_DECREF(table);
            PyErr_SetString(PyExc_ValueError, "setup: leaf tags are 0..255");
            return NULL;
        }
        Py_INCREF(fn);
        leaves[t] = fn;
    }
    Py_DECREF(table);
    if ((empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL
        || (str_join = PyUnicode_InternFromString("join")) == NULL
        || (py_yield = make_yield()) == NULL) {
        return NULL;
    }
    ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", c_setup, METH_O, "setup(config): bind the Python codec this module stands in for."},
    {"decode", (PyCFunction)(void (*)(void))c_decode, METH_FASTCALL | METH_KEYWORDS,
     "etf.decode, compiled."},
    {"decode_from", (PyCFunction)(void (*)(void))c_decode_from, METH_FASTCALL | METH_KEYWORDS,
     "etf.decode_from, compiled."},
    {"encode", (PyCFunction)(void (*)(void))c_encode, METH_FASTCALL | METH_KEYWORDS,
     "etf.encode, compiled."},
    {"encode_into", (PyCFunction)(void (*)(void))c_encode_into, METH_FASTCALL | METH_KEYWORDS,
     "etf.encode_into, compiled."},
    {"decode_sends", (PyCFunction)(void (*)(void))c_decode_sends, METH_FASTCALL,
     "control_memo.decode_sends, compiled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyerl_node.proto._cetf",
    "The compiled core of pyerl_node.proto.etf (see etf.py and _cetf.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__cetf(void) { return PyModule_Create(&module); }
