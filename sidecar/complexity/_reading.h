/* Reading a prompt into the complexity signals, in C: the compiled twin of
 * sidecar.complexity.signals.extract (the reference). See _reading.c. */
#ifndef HIR_READING_H
#define HIR_READING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define N_SIGNALS 35
#define N_WORD_SETS 6   /* constraint, reasoning, imperative, question, output, open */
#define N_PHRASE_SETS 3 /* constraint, reasoning, open: counted in the words-only text */
#define N_MARK_SETS 4   /* code, latex, enumeration, sentence: counted in the prompt */

typedef struct {
    char **text;
    Py_ssize_t *len;
    Py_ssize_t n;
} Marks;

typedef struct {
    const char *key;    /* points into the table's arena */
    Py_ssize_t len;
    unsigned flags;     /* bit s: in word set s; bit N_WORD_SETS: has a model weight */
    double weight;
} Entry;

typedef struct {
    Entry *slots;       /* open addressing; key == NULL is empty */
    size_t mask;
    char *arena;
} WordTable;

typedef struct {
    unsigned char to_words[256];  /* signals._TO_WORDS: a word byte, lowercased, or a space */
    unsigned char digit[256], upper[256], math[256], symbol[256];
    Py_ssize_t long_word;
    WordTable table;
    Marks phrases[N_PHRASE_SETS];
    Marks marks[N_MARK_SETS];
} Reader;

/* The signal names in the order read_signals writes them (signals.NAMES). */
extern const char *const SIGNAL_NAMES[N_SIGNALS];

/* Fill `reader` from the Python tables (see reader_init in _reading.c) and the
 * model's word weights. 0, or -1 with an exception set. */
int reader_init(Reader *reader, PyObject *tables, PyObject *model_words);
void reader_free(Reader *reader);

/* One prompt sample (UTF-8) -> dense[N_SIGNALS] and the weights of its known
 * words, in order of first appearance (*weights: PyMem_Malloc'd, the caller
 * frees). `total` is the question's length in characters, `context` the
 * document's before it (signals.split_question). 0, or -1 with an exception. */
int read_signals(const Reader *reader, const char *raw, Py_ssize_t len, Py_ssize_t total,
                 Py_ssize_t context, Py_ssize_t messages, double *dense, double **weights,
                 Py_ssize_t *n_weights);

#endif
