/* The complexity model's arithmetic, compiled: clamp each signal to its
 * training range, find its bin, sum the additive part (bias, signal weights,
 * bin steps, known words), then the boosted trees over the clamped signals and
 * that sum.
 *
 * It is a faster copy of ComplexityModel.raw_score
 * (sidecar/complexity/complexity.py) for models without known_sources, which
 * stays the reference: the same operations in the same order, each sum a
 * left-to-right sum of doubles from 0.0 (what CPython's sum() does up to 3.11;
 * 3.12 compensates, so there the two agree to ~1e-15, not bit for bit).
 * tests/complexity/test_scoring.py holds the two together.
 *
 * Why: in CPython the trees are ~800 comparisons a prompt and the additive part
 * ~80 bytecode-level operations, ~30 µs of a ~150 µs decision with a new
 * prompt (loadtests/profile_decision.py); here they take about a microsecond.
 * Everything is validated and copied into C arrays when the model loads; a
 * call reads only the signal list and the word set it is given.
 *
 * Built with the signal tables (signals.COMPILED_TABLES), it also reads the
 * prompt itself (score_text, _reading.c), so serving a new prompt never builds
 * the word set or the signal list as Python objects. There the known words'
 * weights are added in order of first appearance, not in the set's order, so
 * the score may differ from the reference's in the last bits (the reference's
 * own set order changes with PYTHONHASHSEED, so it does that between runs too).
 */
#include "_reading.h"

typedef struct {
    PyObject_HEAD
    Py_ssize_t width;       /* signals */
    double *lows;           /* [width] training range of each signal */
    double *highs;
    double *weights;        /* [width] linear weight of each clamped signal */
    Py_ssize_t *edge_at;    /* [width + 1] signal j's edges are edges[edge_at[j]:edge_at[j+1]] */
    double *edges;
    Py_ssize_t *step_at;    /* [width] signal j's step for bin b is steps[step_at[j] + b] */
    double *steps;
    double bias;
    PyObject *words;        /* dict: word -> float weight */
    Py_ssize_t n_trees;
    Py_ssize_t *roots;      /* [n_trees] node index of each tree's root */
    Py_ssize_t n_nodes;
    int *feature;           /* [n_nodes] -1 for a leaf */
    double *value;          /* threshold, or the leaf's value */
    Py_ssize_t *left;       /* x[feature] <= threshold goes left */
    Py_ssize_t *right;
    double *x;              /* scratch: clamped signals, then the additive sum */
    int reads;              /* built with the signal tables: score_text works */
    Reader reader;
} Scorer;

static void
scorer_free_arrays(Scorer *self)
{
    PyMem_Free(self->lows);
    PyMem_Free(self->highs);
    PyMem_Free(self->weights);
    PyMem_Free(self->edge_at);
    PyMem_Free(self->edges);
    PyMem_Free(self->step_at);
    PyMem_Free(self->steps);
    PyMem_Free(self->roots);
    PyMem_Free(self->feature);
    PyMem_Free(self->value);
    PyMem_Free(self->left);
    PyMem_Free(self->right);
    PyMem_Free(self->x);
    if (self->reads)
        reader_free(&self->reader);
}

static void
scorer_dealloc(Scorer *self)
{
    scorer_free_arrays(self);
    Py_XDECREF(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A sequence of numbers -> a new array of doubles; *n gets its length. */
static double *
doubles(PyObject *seq, Py_ssize_t *n, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    double *out = PyMem_Malloc(sizeof(double) * (len ? len : 1));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    *n = len;
    return out;
}

/* A sequence of whole numbers in 0..bound-1 -> a new array of indexes. */
static Py_ssize_t *
indexes(PyObject *seq, Py_ssize_t *n, Py_ssize_t bound, const char *what)
{
    double *values = doubles(seq, n, what);
    if (values == NULL)
        return NULL;
    Py_ssize_t *out = PyMem_Malloc(sizeof(Py_ssize_t) * (*n ? *n : 1));
    if (out == NULL) {
        PyMem_Free(values);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        double v = values[i];
        /* the range first: casting a double outside it is undefined */
        if (!(v >= 0.0 && v < (double)bound) || (double)(Py_ssize_t)v != v) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] is not an index in 0..%zd", what, i,
                         bound - 1);
            PyMem_Free(values);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = (Py_ssize_t)v;
    }
    PyMem_Free(values);
    return out;
}

/* A sequence of sequences of numbers -> one flat array; at[i] is where the
 * i-th inner sequence starts, at[len] the total. */
static double *
ragged(PyObject *seq, Py_ssize_t len, Py_ssize_t **at, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != len) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd rows", what, len);
        Py_DECREF(fast);
        return NULL;
    }
    *at = PyMem_Malloc(sizeof(Py_ssize_t) * (len + 1));
    double *flat = NULL;
    Py_ssize_t total = 0;
    if (*at == NULL)
        goto nomem;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_ssize_t n;
        double *row = doubles(PySequence_Fast_GET_ITEM(fast, i), &n, what);
        if (row == NULL)
            goto fail;
        double *grown = PyMem_Realloc(flat, sizeof(double) * (total + n + 1));
        if (grown == NULL) {
            PyMem_Free(row);
            goto nomem;
        }
        flat = grown;
        memcpy(flat + total, row, sizeof(double) * n);
        PyMem_Free(row);
        (*at)[i] = total;
        total += n;
    }
    (*at)[len] = total;
    Py_DECREF(fast);
    return flat ? flat : PyMem_Malloc(sizeof(double));
nomem:
    PyErr_NoMemory();
fail:
    PyMem_Free(flat);
    PyMem_Free(*at);
    *at = NULL;
    Py_DECREF(fast);
    return NULL;
}

static int
scorer_init(Scorer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lows", "highs", "weights", "edges", "steps", "bias", "words",
                             "feature", "value", "left", "right", "roots", "tables", NULL};
    PyObject *lows, *highs, *weights, *edges, *steps, *words, *feature, *value, *left, *right,
        *roots, *tables = NULL;
    double bias;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOdO!OOOOO|O!", kwlist, &lows, &highs,
                                     &weights, &edges, &steps, &bias, &PyDict_Type, &words,
                                     &feature, &value, &left, &right, &roots, &PyDict_Type,
                                     &tables))
        return -1;
    if (self->lows != NULL) { /* the first thing built: a second __init__ would leak */
        PyErr_SetString(PyExc_TypeError, "a Scorer is built once");
        return -1;
    }
    Py_ssize_t n_lows, n_highs, n_weights, n_value, n_left, n_right, n_feature;
    if (!(self->lows = doubles(lows, &n_lows, "lows"))
        || !(self->highs = doubles(highs, &n_highs, "highs"))
        || !(self->weights = doubles(weights, &n_weights, "weights")))
        return -1;
    self->width = n_weights;
    if (n_lows != self->width || n_highs != self->width) {
        PyErr_SetString(PyExc_ValueError, "lows, highs and weights differ in length");
        return -1;
    }
    if (!(self->edges = ragged(edges, self->width, &self->edge_at, "edges")))
        return -1;
    Py_ssize_t *step_rows;
    if (!(self->steps = ragged(steps, self->width, &step_rows, "steps")))
        return -1;
    self->step_at = step_rows;
    for (Py_ssize_t j = 0; j < self->width; j++) {
        Py_ssize_t n_edges = self->edge_at[j + 1] - self->edge_at[j];
        if (step_rows[j + 1] - step_rows[j] != n_edges + 1) {
            PyErr_Format(PyExc_ValueError, "signal %zd: %zd edges need %zd steps", j, n_edges,
                         n_edges + 1);
            return -1;
        }
    }
    self->bias = bias;
    /* The words' weights as exact floats, so a call never converts. */
    self->words = PyDict_New();
    if (self->words == NULL)
        return -1;
    PyObject *word, *weight;
    Py_ssize_t pos = 0;
    while (PyDict_Next(words, &pos, &word, &weight)) {
        double w = PyFloat_AsDouble(weight);
        if (w == -1.0 && PyErr_Occurred())
            return -1;
        PyObject *as_float = PyFloat_FromDouble(w);
        if (as_float == NULL || PyDict_SetItem(self->words, word, as_float) < 0) {
            Py_XDECREF(as_float);
            return -1;
        }
        Py_DECREF(as_float);
    }
    /* The trees: flat node arrays; every child index points past its parent,
     * so a walk always ends (checked here, not trusted). */
    if (!(self->value = doubles(value, &n_value, "value")))
        return -1;
    self->n_nodes = n_value;
    Py_ssize_t *features = indexes(feature, &n_feature, self->width + 2, "feature");
    if (features == NULL)
        return -1;
    self->feature = PyMem_Malloc(sizeof(int) * (n_feature ? n_feature : 1));
    if (self->feature == NULL) {
        PyMem_Free(features);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_feature; i++)
        self->feature[i] = (int)features[i] - 1; /* given as feature + 1, 0 for a leaf */
    PyMem_Free(features);
    if (!(self->left = indexes(left, &n_left, self->n_nodes, "left"))
        || !(self->right = indexes(right, &n_right, self->n_nodes, "right"))
        || !(self->roots = indexes(roots, &self->n_trees, self->n_nodes, "roots")))
        return -1;
    if (n_feature != self->n_nodes || n_left != self->n_nodes || n_right != self->n_nodes) {
        PyErr_SetString(PyExc_ValueError, "feature, value, left and right differ in length");
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->n_nodes; i++) {
        if (self->feature[i] >= 0 && (self->left[i] <= i || self->right[i] <= i)) {
            PyErr_Format(PyExc_ValueError, "node %zd: a child must come after its parent", i);
            return -1;
        }
    }
    if (tables != NULL) {
        if (self->width != N_SIGNALS) {
            PyErr_Format(PyExc_ValueError, "reading text needs %d signal weights", N_SIGNALS);
            return -1;
        }
        if (reader_init(&self->reader, tables, self->words) < 0) {
            reader_free(&self->reader);
            return -1;
        }
        self->reads = 1;
    }
    self->x = PyMem_Malloc(sizeof(double) * (self->width + 1));
    if (self->x == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The raw score of signals `dense` (unclamped) and the weights of the
 * prompt's known words, in the order the reference adds them. */
static double
score(Scorer *self, const double *dense, const double *weights, Py_ssize_t n_weights)
{
    double *x = self->x;
    /* bias, then each signal's bin step, then each known word: one sum. */
    double steps = 0.0;
    steps += self->bias;
    for (Py_ssize_t j = 0; j < self->width; j++) {
        double v = dense[j];
        /* bisect_right: the number of edges <= v */
        const double *e = self->edges + self->edge_at[j];
        Py_ssize_t lo = 0, hi = self->edge_at[j + 1] - self->edge_at[j];
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (v < e[mid])
                hi = mid;
            else
                lo = mid + 1;
        }
        steps += self->steps[self->step_at[j] + lo];
        x[j] = v < self->lows[j] ? self->lows[j] : v > self->highs[j] ? self->highs[j] : v;
    }
    for (Py_ssize_t i = 0; i < n_weights; i++)
        steps += weights[i];
    double linear = 0.0;
    for (Py_ssize_t j = 0; j < self->width; j++)
        linear += self->weights[j] * x[j];
    double additive = steps + linear;
    if (self->n_trees == 0)
        return additive;
    x[self->width] = additive;
    double trees = 0.0;
    for (Py_ssize_t t = 0; t < self->n_trees; t++) {
        Py_ssize_t node = self->roots[t];
        while (self->feature[node] >= 0)
            node = x[self->feature[node]] <= self->value[node] ? self->left[node] : self->right[node];
        trees += self->value[node];
    }
    return additive + trees;
}

/* Parse (sample, total, context, messages) and read the sample in C
 * (_reading.c): sample is signals.sample_of's text as UTF-8 bytes. */
static int
read_text(Scorer *self, PyObject *args, const char *format, double *dense, double **weights,
          Py_ssize_t *n_weights)
{
    const char *raw;
    Py_ssize_t len, total, context, messages;
    if (!PyArg_ParseTuple(args, format, &raw, &len, &total, &context, &messages))
        return -1;
    if (!self->reads || self->x == NULL) {
        PyErr_SetString(PyExc_TypeError, "this Scorer was built without the signal tables");
        return -1;
    }
    return read_signals(&self->reader, raw, len, total, context, messages, dense, weights,
                        n_weights);
}

/* scorer.score_text(sample, total, context, messages) -> the raw score. */
static PyObject *
scorer_score_text(Scorer *self, PyObject *args)
{
    double dense[N_SIGNALS], *weights;
    Py_ssize_t n_weights;
    if (read_text(self, args, "y#nnn:score_text", dense, &weights, &n_weights) < 0)
        return NULL;
    double s = score(self, dense, weights, n_weights);
    PyMem_Free(weights);
    return PyFloat_FromDouble(s);
}

/* scorer.read(sample, total, context, messages) -> the signal list, as
 * score_text reads it (for the tests that hold it to signals.extract). */
static PyObject *
scorer_read(Scorer *self, PyObject *args)
{
    double dense[N_SIGNALS], *weights;
    Py_ssize_t n_weights;
    if (read_text(self, args, "y#nnn:read", dense, &weights, &n_weights) < 0)
        return NULL;
    PyMem_Free(weights);
    PyObject *out = PyList_New(N_SIGNALS);
    for (int j = 0; out != NULL && j < N_SIGNALS; j++) {
        PyObject *v = PyFloat_FromDouble(dense[j]);
        if (v == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, j, v);
    }
    return out;
}

/* scorer(dense, words) -> the raw score: dense is the signal list (numbers, in
 * signals.NAMES order), words the prompt's set of lowercase words. */
static PyObject *
scorer_call(Scorer *self, PyObject *args, PyObject *kwds)
{
    PyObject *dense, *words;
    if (!PyArg_ParseTuple(args, "OO:Scorer", &dense, &words))
        return NULL;
    if (self->x == NULL) {
        PyErr_SetString(PyExc_TypeError, "the Scorer was not built");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(dense, "dense must be a sequence");
    if (fast == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != self->width) {
        PyErr_Format(PyExc_ValueError, "expected %zd signals", self->width);
        Py_DECREF(fast);
        return NULL;
    }
    double *dense_values = PyMem_Malloc(sizeof(double) * (self->width ? self->width : 1));
    if (dense_values == NULL) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t j = 0; j < self->width; j++) {
        dense_values[j] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, j));
        if (dense_values[j] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(dense_values);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    /* The known words' weights, in the set's own order (as the reference adds them). */
    Py_ssize_t n_words = PyObject_Size(words), n_weights = 0;
    double *weights = n_words < 0 ? NULL : PyMem_Malloc(sizeof(double) * (n_words + 1));
    PyObject *it = weights ? PyObject_GetIter(words) : NULL;
    if (it == NULL) {
        PyMem_Free(dense_values);
        PyMem_Free(weights);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    PyObject *word;
    while ((word = PyIter_Next(it)) != NULL) {
        PyObject *weight = PyDict_GetItemWithError(self->words, word);
        Py_DECREF(word);
        if (weight == NULL && PyErr_Occurred())
            break;
        /* the reference filters out zero weights; a set cannot grow mid-iteration */
        if (weight != NULL && PyFloat_AS_DOUBLE(weight) != 0.0 && n_weights < n_words)
            weights[n_weights++] = PyFloat_AS_DOUBLE(weight);
    }
    Py_DECREF(it);
    PyObject *out = PyErr_Occurred() ? NULL
        : PyFloat_FromDouble(score(self, dense_values, weights, n_weights));
    PyMem_Free(dense_values);
    PyMem_Free(weights);
    return out;
}

static PyMethodDef scorer_methods[] = {
    {"score_text", (PyCFunction)scorer_score_text, METH_VARARGS,
     PyDoc_STR("score_text(sample, total, context, messages) -> raw score of a prompt read in C")},
    {"read", (PyCFunction)scorer_read, METH_VARARGS,
     PyDoc_STR("read(sample, total, context, messages) -> the signals as score_text reads them")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sidecar.complexity._scoring.Scorer",
    .tp_doc = PyDoc_STR("The complexity model's raw score, compiled (see the module source)."),
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)scorer_init,
    .tp_dealloc = (destructor)scorer_dealloc,
    .tp_call = (ternaryfunc)scorer_call,
    .tp_methods = scorer_methods,
};

static struct PyModuleDef scoring_module = {
    PyModuleDef_HEAD_INIT, "_scoring",
    "The complexity model's arithmetic in C; sidecar.complexity.complexity is the reference.", -1,
};

PyMODINIT_FUNC
PyInit__scoring(void)
{
    if (PyType_Ready(&ScorerType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&scoring_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ScorerType);
    if (PyModule_AddObject(module, "Scorer", (PyObject *)&ScorerType) < 0) {
        Py_DECREF(&ScorerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
