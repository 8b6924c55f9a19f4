/* Reading a prompt into the complexity signals, in C.
 *
 * The compiled twin of sidecar.complexity.signals.extract, which stays the
 * reference (training, explain, and machines without a compiler read with it):
 * the same counts and the same arithmetic, signal by signal, over the same
 * sample (signals.sample cuts it; this reads its UTF-8 bytes). Counting in
 * bytes equals counting in characters because every mark is ASCII and UTF-8
 * never puts an ASCII byte inside a multi-byte character. Lengths in
 * characters count the bytes that start one.
 *
 * Every vocabulary (word sets, phrases, marks, character classes, the word
 * alphabet) comes from signals.COMPILED_TABLES at load, so signals.py stays the
 * one place a list is edited; only the formulas are written twice, and
 * tests/complexity/test_scoring.py holds the two readings together.
 */
#include "_reading.h"

#include <math.h>
#include <string.h>

const char *const SIGNAL_NAMES[N_SIGNALS] = {
    "log_chars", "log_words", "log_lines", "mean_word_len", "digit_ratio", "log_numbers",
    "number_density", "log_latex", "latex_density", "log_math_ops", "math_op_density",
    "log_code", "code_density", "code_block", "log_questions", "multi_question",
    "log_constraints", "log_reasoning", "imperative_start",
    "question_start", "log_enumerations", "log_sentences", "words_per_sentence",
    "upper_ratio", "unique_ratio", "log_context_chars", "log_last_line", "log_messages",
    "newline_ratio", "symbol_ratio", "log_output_asks", "log_open_asks", "log_long_words",
    "long_word_ratio", "log_imperatives",
};

enum { CONSTRAINT, REASONING, IMPERATIVE, QUESTION, OUTPUT, OPEN };
#define WEIGHTED (1u << N_WORD_SETS)

static size_t
hash_bytes(const char *s, Py_ssize_t n)
{
    size_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* The slot holding `key`, or the empty slot where it would go. */
static Entry *
slot_for(Entry *slots, size_t mask, const char *key, Py_ssize_t len)
{
    size_t i = hash_bytes(key, len) & mask;
    while (slots[i].key != NULL && (slots[i].len != len || memcmp(slots[i].key, key, len) != 0))
        i = (i + 1) & mask;
    return &slots[i];
}

/* ---- building the reader ------------------------------------------------ */

static int
utf8_of(PyObject *text, const char **out, Py_ssize_t *len, const char *what)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s: expected str items", what);
        return -1;
    }
    *out = PyUnicode_AsUTF8AndSize(text, len);
    return *out == NULL ? -1 : 0;
}

static int
byte_class(PyObject *tables, const char *name, unsigned char member[256])
{
    PyObject *value = PyDict_GetItemString(tables, name);
    if (value == NULL || !PyBytes_Check(value)) {
        PyErr_Format(PyExc_ValueError, "tables: %s must be bytes", name);
        return -1;
    }
    memset(member, 0, 256);
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(value);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(value); i++)
        member[b[i]] = 1;
    return 0;
}

static int
marks_init(Marks *marks, PyObject *seq, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return -1;
    marks->n = PySequence_Fast_GET_SIZE(fast);
    marks->text = PyMem_Calloc(marks->n ? marks->n : 1, sizeof(char *));
    marks->len = PyMem_Calloc(marks->n ? marks->n : 1, sizeof(Py_ssize_t));
    if (marks->text == NULL || marks->len == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < marks->n; i++) {
        const char *s;
        if (utf8_of(PySequence_Fast_GET_ITEM(fast, i), &s, &marks->len[i], what) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        if (marks->len[i] == 0) {
            PyErr_Format(PyExc_ValueError, "%s: an empty mark", what);
            Py_DECREF(fast);
            return -1;
        }
        marks->text[i] = PyMem_Malloc(marks->len[i]);
        if (marks->text[i] == NULL) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(marks->text[i], s, marks->len[i]);
    }
    Py_DECREF(fast);
    return 0;
}

static int
mark_sets_init(Marks *sets, Py_ssize_t n, PyObject *tables, const char *name)
{
    PyObject *value = PyDict_GetItemString(tables, name);
    PyObject *fast = value ? PySequence_Fast(value, name) : NULL;
    if (fast == NULL || PySequence_Fast_GET_SIZE(fast) != n) {
        Py_XDECREF(fast);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "tables: %s must be %zd sequences", name, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (marks_init(&sets[i], PySequence_Fast_GET_ITEM(fast, i), name) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

/* Add `word` to the table (once) and OR in `flags`; a weight when weighted. */
static int
table_add(WordTable *table, size_t *used, char **arena_end, PyObject *word, unsigned flags,
          double weight)
{
    const char *s;
    Py_ssize_t len;
    if (utf8_of(word, &s, &len, "words") < 0)
        return -1;
    Entry *e = slot_for(table->slots, table->mask, s, len);
    if (e->key == NULL) {
        memcpy(*arena_end, s, len);
        e->key = *arena_end;
        e->len = len;
        *arena_end += len;
        (*used)++;
    }
    e->flags |= flags;
    if (flags & WEIGHTED)
        e->weight = weight;
    return 0;
}

int
reader_init(Reader *reader, PyObject *tables, PyObject *model_words)
{
    memset(reader, 0, sizeof(*reader));
    if (!PyDict_Check(tables) || !PyDict_Check(model_words)) {
        PyErr_SetString(PyExc_TypeError, "tables and words must be dicts");
        return -1;
    }
    PyObject *names = PyDict_GetItemString(tables, "names");
    PyObject *fast = names ? PySequence_Fast(names, "names") : NULL;
    if (fast == NULL)
        return PyErr_Occurred() ? -1 : (PyErr_SetString(PyExc_ValueError, "tables: no names"), -1);
    int same = PySequence_Fast_GET_SIZE(fast) == N_SIGNALS;
    for (Py_ssize_t i = 0; same && i < N_SIGNALS; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(fast, i);
        same = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, SIGNAL_NAMES[i]) == 0;
    }
    Py_DECREF(fast);
    if (!same) {
        PyErr_SetString(PyExc_ValueError, "the signals changed: _reading.c reads other ones");
        return -1;
    }
    PyObject *to_words = PyDict_GetItemString(tables, "to_words");
    if (to_words == NULL || !PyBytes_Check(to_words) || PyBytes_GET_SIZE(to_words) != 256) {
        PyErr_SetString(PyExc_ValueError, "tables: to_words must be 256 bytes");
        return -1;
    }
    memcpy(reader->to_words, PyBytes_AS_STRING(to_words), 256);
    if (byte_class(tables, "digits", reader->digit) < 0 || byte_class(tables, "upper", reader->upper) < 0
        || byte_class(tables, "math", reader->math) < 0
        || byte_class(tables, "symbols", reader->symbol) < 0)
        return -1;
    PyObject *long_word = PyDict_GetItemString(tables, "long_word");
    reader->long_word = long_word ? PyLong_AsSsize_t(long_word) : -1;
    if (reader->long_word < 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "tables: long_word must be a positive int");
        return -1;
    }
    if (mark_sets_init(reader->phrases, N_PHRASE_SETS, tables, "phrase_sets") < 0
        || mark_sets_init(reader->marks, N_MARK_SETS, tables, "mark_sets") < 0)
        return -1;

    /* One table for every word either the model weighs or a signal counts. */
    PyObject *word_sets = PyDict_GetItemString(tables, "word_sets");
    PyObject *sets = word_sets ? PySequence_Fast(word_sets, "word_sets") : NULL;
    if (sets == NULL || PySequence_Fast_GET_SIZE(sets) != N_WORD_SETS) {
        Py_XDECREF(sets);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "tables: word_sets must be %d sets", N_WORD_SETS);
        return -1;
    }
    Py_ssize_t words = PyDict_GET_SIZE(model_words), bytes = 0;
    PyObject *key, *value, *word;
    Py_ssize_t pos = 0;
    while (PyDict_Next(model_words, &pos, &key, &value)) {
        Py_ssize_t len;
        const char *s;
        if (utf8_of(key, &s, &len, "words") < 0)
            goto fail;
        bytes += len;
    }
    for (int s = 0; s < N_WORD_SETS; s++) {
        PyObject *set = PySequence_Fast_GET_ITEM(sets, s);
        Py_ssize_t n = PyObject_Size(set);
        if (n < 0)
            goto fail;
        words += n;
        PyObject *it = PyObject_GetIter(set);
        if (it == NULL)
            goto fail;
        while ((word = PyIter_Next(it)) != NULL) {
            Py_ssize_t len;
            const char *t;
            int bad = utf8_of(word, &t, &len, "word_sets");
            Py_DECREF(word);
            if (bad < 0) {
                Py_DECREF(it);
                goto fail;
            }
            bytes += len;
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto fail;
    }
    size_t size = 16;
    while (size < (size_t)words * 2 + 1)
        size <<= 1;
    reader->table.mask = size - 1;
    reader->table.slots = PyMem_Calloc(size, sizeof(Entry));
    reader->table.arena = PyMem_Malloc(bytes ? bytes : 1);
    if (reader->table.slots == NULL || reader->table.arena == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    size_t used = 0;
    char *arena_end = reader->table.arena;
    pos = 0;
    while (PyDict_Next(model_words, &pos, &key, &value)) {
        double w = PyFloat_AsDouble(value);
        if ((w == -1.0 && PyErr_Occurred())
            || table_add(&reader->table, &used, &arena_end, key, WEIGHTED, w) < 0)
            goto fail;
    }
    for (int s = 0; s < N_WORD_SETS; s++) {
        PyObject *it = PyObject_GetIter(PySequence_Fast_GET_ITEM(sets, s));
        if (it == NULL)
            goto fail;
        while ((word = PyIter_Next(it)) != NULL) {
            int bad = table_add(&reader->table, &used, &arena_end, word, 1u << s, 0.0);
            Py_DECREF(word);
            if (bad < 0) {
                Py_DECREF(it);
                goto fail;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto fail;
    }
    Py_DECREF(sets);
    return 0;
fail:
    Py_DECREF(sets);
    return -1;
}

static void
marks_free(Marks *marks)
{
    for (Py_ssize_t i = 0; marks->text != NULL && i < marks->n; i++)
        PyMem_Free(marks->text[i]);
    PyMem_Free(marks->text);
    PyMem_Free(marks->len);
}

void
reader_free(Reader *reader)
{
    PyMem_Free(reader->table.slots);
    PyMem_Free(reader->table.arena);
    for (int i = 0; i < N_PHRASE_SETS; i++)
        marks_free(&reader->phrases[i]);
    for (int i = 0; i < N_MARK_SETS; i++)
        marks_free(&reader->marks[i]);
    memset(reader, 0, sizeof(*reader));
}

/* ---- reading one prompt ------------------------------------------------- */

/* str.count: non-overlapping occurrences, left to right. */
static Py_ssize_t
count(const char *hay, Py_ssize_t n, const char *needle, Py_ssize_t m)
{
    Py_ssize_t found = 0;
    const char *p = hay, *end = hay + n;
    while (end - p >= m) {
        const char *hit = memchr(p, needle[0], end - p - m + 1);
        if (hit == NULL)
            break;
        if (memcmp(hit, needle, m) == 0) {
            found++;
            p = hit + m;
        }
        else {
            p = hit + 1;
        }
    }
    return found;
}

static Py_ssize_t
count_all(const Marks *marks, const char *hay, Py_ssize_t n)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < marks->n; i++)
        total += count(hay, n, marks->text[i], marks->len[i]);
    return total;
}

/* Characters (not bytes) in raw[from:to]: bytes that are not continuations. */
static Py_ssize_t
chars(const unsigned char *raw, Py_ssize_t from, Py_ssize_t to)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = from; i < to; i++)
        n += (raw[i] & 0xC0) != 0x80;
    return n;
}

/* str.isspace for one code point: what str.rstrip() strips. */
static int
is_space(unsigned long c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0
        || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029
        || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Where sample.rstrip() ends, in bytes: step back a character at a time. */
static Py_ssize_t
rstripped_end(const unsigned char *raw, Py_ssize_t len)
{
    Py_ssize_t end = len;
    while (end > 0) {
        Py_ssize_t start = end - 1;
        while (start > 0 && (raw[start] & 0xC0) == 0x80 && end - start < 4)
            start--;
        unsigned long c = raw[start];
        Py_ssize_t width = end - start;
        if (width == 2 && (c & 0xE0) == 0xC0)
            c = ((c & 0x1F) << 6) | (raw[start + 1] & 0x3F);
        else if (width == 3 && (c & 0xF0) == 0xE0)
            c = ((c & 0x0F) << 12) | ((raw[start + 1] & 0x3F) << 6) | (raw[start + 2] & 0x3F);
        else if (width != 1)
            c = 0xFFFD; /* four bytes, or malformed: never a space */
        if (!is_space(c))
            break;
        end = start;
    }
    return end;
}

static double
ratio(double a, double b)
{
    return a / b;
}

#define LOG(x) log1p((double)(x))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

int
read_signals(const Reader *r, const char *text, Py_ssize_t len, Py_ssize_t total,
             Py_ssize_t context, Py_ssize_t messages, double *dense, double **weights,
             Py_ssize_t *n_weights)
{
    const unsigned char *raw = (const unsigned char *)text;
    *weights = NULL;
    *n_weights = 0;
    /* The words-only text (signals: plain), and the byte classes, in one pass. */
    char *plain = PyMem_Malloc(len ? len : 1);
    /* Unique words: at most one per two bytes, in a table twice that size. */
    size_t size = 16;
    while (size < (size_t)len + 1)
        size <<= 1;
    Entry *seen = PyMem_Calloc(size, sizeof(Entry));
    double *found = PyMem_Malloc(sizeof(double) * (len / 2 + 1));
    if (plain == NULL || seen == NULL || found == NULL) {
        PyMem_Free(plain);
        PyMem_Free(seen);
        PyMem_Free(found);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t digits = 0, upper = 0, math_ops = 0, symbols = 0, n_chars = 0, spaces = 0;
    Py_ssize_t questions = 0, newlines = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = raw[i];
        plain[i] = (char)r->to_words[c];
        digits += r->digit[c];
        upper += r->upper[c];
        math_ops += r->math[c];
        symbols += r->symbol[c];
        n_chars += (c & 0xC0) != 0x80;
        spaces += c == ' ';
        questions += c == '?';
        newlines += c == '\n';
    }
    Py_ssize_t tokens = 0, numbers = 0, unique = 0, long_words = 0, in_set[N_WORD_SETS] = {0};
    unsigned first = 0;
    for (Py_ssize_t i = 0; i < len;) {
        if (plain[i] == ' ') {
            i++;
            continue;
        }
        Py_ssize_t start = i, all_digits = 1;
        while (i < len && plain[i] != ' ') {
            all_digits &= plain[i] >= '0' && plain[i] <= '9';
            i++;
        }
        Py_ssize_t n = i - start;
        const char *word = plain + start;
        Entry *known = slot_for(r->table.slots, r->table.mask, word, n);
        if (tokens++ == 0)
            first = known->key ? known->flags : 0;
        numbers += all_digits;
        Entry *e = slot_for(seen, size - 1, word, n);
        if (e->key != NULL)
            continue; /* the signals read the set of words */
        e->key = word;
        e->len = n;
        unique++;
        long_words += n >= r->long_word;
        if (known->key == NULL)
            continue;
        for (int s = 0; s < N_WORD_SETS; s++)
            in_set[s] += (known->flags >> s) & 1;
        if ((known->flags & WEIGHTED) && known->weight != 0.0)
            found[(*n_weights)++] = known->weight;
    }
    Py_ssize_t stripped = rstripped_end(raw, len);
    Py_ssize_t tail_from = stripped;
    while (tail_from > 0 && raw[tail_from - 1] != '\n')
        tail_from--;
    /* "".join(...)[-1:] in ".?!" is True for an empty string too, as in Python. */
    int ends_sentence = stripped == 0 || raw[stripped - 1] == '.' || raw[stripped - 1] == '?'
        || raw[stripped - 1] == '!';

    Py_ssize_t n = MAX(1, n_chars), n_raw = MAX(1, len);
    /* The reference counts a byte class as n_raw - len(raw without it), which
     * is 1, not 0, for an empty sample: keep that. */
    Py_ssize_t empty = n_raw - len;
    digits += empty;
    upper += empty;
    math_ops += empty;
    symbols += empty;
    Py_ssize_t n_words = MAX(1, tokens - numbers);
    Py_ssize_t latex = count_all(&r->marks[1], text, len);
    Py_ssize_t code = count_all(&r->marks[0], text, len);
    Py_ssize_t lines = newlines + 1;
    Py_ssize_t sentences = MAX(1, count_all(&r->marks[3], text, len) + ends_sentence);
    Py_ssize_t constraints = in_set[CONSTRAINT] + count_all(&r->phrases[0], plain, len);
    Py_ssize_t reasoning = in_set[REASONING] + count_all(&r->phrases[1], plain, len);
    Py_ssize_t open_asks = in_set[OPEN] + count_all(&r->phrases[2], plain, len);
    double per_sentence = ratio(n_words, sentences);
    double unique_ratio = ratio(unique, n_words);
    double *d = dense;
    *d++ = LOG(total);
    *d++ = LOG(ratio((double)(n_words * total), n)); /* exact below 2**53, as in Python */
    *d++ = LOG(lines);
    *d++ = ratio(n - spaces, n_words);
    *d++ = ratio(digits, MAX(n_raw, 40));
    *d++ = LOG(numbers);
    *d++ = ratio(numbers, MAX(n_words, 5));
    *d++ = LOG(latex);
    *d++ = ratio(latex, MAX(n_words, 5));
    *d++ = LOG(math_ops);
    *d++ = ratio(math_ops, MAX(n_words, 5));
    *d++ = LOG(code);
    *d++ = ratio(code, lines);
    *d++ = count(text, len, "```", 3) > 0 ? 1.0 : 0.0;
    *d++ = LOG(questions);
    *d++ = questions > 1 ? 1.0 : 0.0;
    *d++ = LOG(constraints);
    *d++ = LOG(reasoning);
    *d++ = (first >> IMPERATIVE) & 1 ? 1.0 : 0.0;
    *d++ = (first >> QUESTION) & 1 ? 1.0 : 0.0;
    *d++ = LOG(count_all(&r->marks[2], text, len));
    *d++ = LOG(sentences);
    *d++ = per_sentence < 100.0 ? per_sentence : 100.0;
    *d++ = ratio(upper, MAX(n_raw, 40));
    *d++ = unique_ratio < 1.0 ? unique_ratio : 1.0;
    *d++ = LOG(context);
    *d++ = LOG(chars(raw, tail_from, stripped));
    *d++ = LOG(MAX(0, messages - 1));
    *d++ = ratio(lines, MAX(n, 200)) * 80;
    *d++ = ratio(symbols, MAX(n_raw, 40));
    *d++ = LOG(in_set[OUTPUT]);
    *d++ = LOG(open_asks);
    *d++ = LOG(long_words);
    *d++ = ratio(long_words, MAX(unique, 5));
    *d++ = LOG(in_set[IMPERATIVE]);
    PyMem_Free(plain);
    PyMem_Free(seen);
    *weights = found;
    return 0;
}
