"""Prompt → the signals the complexity model reads. Pure Python, bounded work.

Shared by serving (sidecar.complexity.complexity) and training (sidecar.complexity.training), so a
model always sees features computed exactly as they were when it was trained.

Structural signals are chosen to carry over between sources: length and shape,
code and its size, math notation and its density, explicit constraints,
multi-part questions, reasoning cues, conversation depth.

A long prompt that ends in a short final paragraph (a pasted document, then the
question) is judged by that question: the signals read the question, and the
document contributes only its length (`log_context_chars`). Long texts are
read through two windows (head and tail), so a 200 KB prompt costs about as
much as a 3 KB one.
"""

from __future__ import annotations

import math

WINDOW = 1536
# Words are ASCII letters, digits and apostrophes, lowercased; everything else
# separates them. One bytes.translate and a split (C speed, about a third of a
# regex findall); everything else is str.count or bytes.translate too.
_WORD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789'"
_TO_WORDS = bytes(c if c in _WORD_BYTES else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
# Character classes are counted with bytes.translate (str.translate is slow on
# non-ASCII text): len(raw) - len(raw.translate(None, CLASS)) = members in raw.
_DIGITS = b"0123456789"
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MATH = b"=+^*/<>"
_SYMBOLS = b"{}[]()<>=+*/\\^_|&%$#@~`;"
CODE_MARKS = ("```", "def ", "return", "import ", "{\n", ";\n", "\n    ", "==", "()", "=>")
LATEX_MARKS = ("\\", "$")
ENUMERATION_MARKS = ("\n1.", "\n2.", "\n- ", "\n* ")
SENTENCE_MARKS = (". ", "? ", ".\n")
CONSTRAINT_WORDS = frozenset((
    "must", "should", "exactly", "least", "most", "without", "only", "json", "format", "bullet",
    "bullets", "words", "sentences", "paragraph", "paragraphs", "lowercase", "uppercase",
    "capital", "capitals", "highlight", "title", "wrap", "quotation", "quotes", "markdown",
    "separated", "placeholder", "placeholders", "section", "sections", "postscript", "respond",
    "response", "entire", "keyword", "keywords", "letter", "letters", "times", "twice",
    "limit", "maximum", "minimum", "avoid", "include", "exclude", "must'nt", "don't", "never"))
CONSTRAINT_PHRASES = ("do not", "than", "at least", "at most", "your answer", "your response")
REASONING_WORDS = frozenset((
    "prove", "proof", "derive", "why", "explain", "analyze", "analyse", "analysis", "compare",
    "evaluate", "justify", "reason", "reasoning", "determine", "compute", "calculate", "solve",
    "suppose", "assume", "integer", "integers", "probability", "optimize", "optimise",
    "optimal", "algorithm", "complexity", "implement", "design", "theorem", "lemma",
    "minimum", "maximum", "largest", "smallest", "real", "function", "equation", "sum",
    "product", "remainder", "prime", "polynomial", "matrix", "vector", "derivative", "integral",
    "expected", "distinct", "positive", "negative", "roots", "satisfy", "satisfies"))
REASONING_PHRASES = ("show that", "step by step", "find all", "how many", "if and only if",
                     "trade off", "what is the value", "greatest", "least possible")
IMPERATIVES = frozenset(("write", "create", "implement", "generate", "design", "build", "develop",
                         "compose", "draft", "rewrite", "summarize", "summarise", "translate",
                         "list", "given", "return", "complete", "fix", "refactor", "explain",
                         "describe"))
# What the answer must be: a long or structured piece of writing, not a fact.
OUTPUT_WORDS = frozenset((
    "essay", "article", "report", "story", "blog", "post", "poem", "script", "proposal", "plan",
    "guide", "tutorial", "outline", "detailed", "comprehensive", "thorough", "elaborate", "pros",
    "cons", "advantages", "disadvantages", "strategies", "steps", "table", "examples", "discuss",
    "summarize", "summarise", "summary", "overview", "critique", "review"))
# Open-ended asks: a scenario, advice, a judgement, a choice between options.
# Single words are looked up in the prompt's word set (one set intersection);
# only the phrases cost a scan of the text each.
OPEN_WORDS = frozenset(("suppose", "imagine", "scenario", "hypothetical", "trade", "tradeoff",
                        "tradeoffs", "recommend", "recommendation", "strategy", "strategies",
                        "approach", "advice", "considering", "implications", "pros", "cons",
                        "opinion", "impact"))
OPEN_PHRASES = ("what would", "what if", "should i", "how would", "how should", "best way")
LONG_WORD = 10            # letters; words this long are mostly domain vocabulary
QUESTION_WORDS = frozenset(("what", "who", "when", "where", "which", "how", "is", "are", "can",
                            "do", "does", "will", "would", "should", "could", "tell", "i", "my",
                            "hey", "hi", "please", "set", "remind", "play", "turn"))

NAMES = (
    "log_chars", "log_words", "log_lines", "mean_word_len", "digit_ratio", "log_numbers",
    "number_density", "log_latex", "latex_density", "log_math_ops", "math_op_density",
    "log_code", "code_density", "code_block", "log_questions", "multi_question",
    "log_constraints", "log_reasoning", "imperative_start",
    "question_start", "log_enumerations", "log_sentences", "words_per_sentence",
    "upper_ratio", "unique_ratio", "log_context_chars", "log_last_line", "log_messages",
    "newline_ratio", "symbol_ratio", "log_output_asks", "log_open_asks", "log_long_words",
    "long_word_ratio", "log_imperatives",
)
SPLIT_ABOVE = 2000        # characters; shorter prompts are read whole
ASK_SHARE = 0.25          # the final paragraph is "the question" if at most this share


def _log(x: float) -> float:
    return math.log1p(x)


def split_question(text: str) -> tuple[str, int]:
    """(the part that decides, length of the document before it)."""
    n = len(text)
    if n <= SPLIT_ABOVE:
        return text, 0
    start = n - 2 * WINDOW  # look only near the end: bounded work
    cut = text.rfind("\n\n", start)
    if cut >= 0 and 10 <= len(text[cut + 2:].strip()) <= ASK_SHARE * n:
        return text[cut + 2:], cut
    # No blank line: a final line of a few words after the document ("...\nSummarise this.").
    cut = text.rstrip().rfind("\n", start)
    ask = text[cut + 1:] if cut >= 0 else ""
    if ask.strip().count(" ") >= 2 and len(ask) <= ASK_SHARE * n:
        return ask, cut
    # The question first, then the document ("Summarise this:\n...").
    cut = text.find("\n", 0, 2 * WINDOW)
    ask = text[:cut] if cut >= 0 else ""
    if ask.strip().count(" ") >= 2 and len(ask) <= ASK_SHARE * n:
        return ask, n - cut
    return text, 0


def windows(text: str) -> str:
    """The part of `text` the signals read: all of it, or head + tail when long."""
    if len(text) <= 2 * WINDOW:
        return text
    return text[:WINDOW] + "\n" + text[-WINDOW:]


def _count(text: str, marks) -> int:
    return sum(map(text.count, marks))


def sample_of(text: str) -> tuple[str, int, int]:
    """(what the signals read, the question's length, the document's before it)."""
    # No text at all (an image-only turn, an empty string) reads as a blank: the
    # signals' ratios assume a character, and an empty sample read as a one-letter
    # word, a shape no training prompt had (it was rated tier 3).
    question, context = split_question(text or " ")
    return windows(question), len(question), context


def extract(text: str, messages: int = 1) -> tuple[list[float], set[str]]:
    """(dense signal vector in NAMES order, set of lowercase words) for one prompt."""
    sample, n_total, context = sample_of(text)
    n = max(1, len(sample))
    raw = sample.encode("utf-8", "surrogatepass")
    # Lowercase words separated by spaces: phrases are counted here too.
    plain = raw.translate(_TO_WORDS).decode("ascii")
    tokens = plain.split()
    numbers = sum(map(str.isdigit, tokens))
    vocab = set(tokens)
    n_words = max(1, len(tokens) - numbers)
    latex = _count(sample, LATEX_MARKS)
    n_raw = max(1, len(raw))
    math_ops = n_raw - len(raw.translate(None, _MATH))
    code = _count(sample, CODE_MARKS)
    questions = sample.count("?")
    lines = sample.count("\n") + 1
    sentences = max(1, _count(sample, SENTENCE_MARKS) + (sample.rstrip()[-1:] in ".?!"))
    constraints = len(vocab & CONSTRAINT_WORDS) + _count(plain, CONSTRAINT_PHRASES)
    reasoning = len(vocab & REASONING_WORDS) + _count(plain, REASONING_PHRASES)
    first = tokens[0] if tokens else ""
    stripped = sample.rstrip()
    tail = stripped[stripped.rfind("\n") + 1:]
    long_words = sum(len(t) >= LONG_WORD for t in vocab)
    digits = n_raw - len(raw.translate(None, _DIGITS))
    upper = n_raw - len(raw.translate(None, _UPPER))
    dense = [
        _log(n_total),
        _log(n_words * n_total / n),
        _log(lines),
        (n - sample.count(" ")) / n_words,
        # Ratios use a floor on the denominator so a two-letter prompt is not extreme.
        digits / max(n_raw, 40),
        _log(numbers),
        numbers / max(n_words, 5),
        _log(latex),
        latex / max(n_words, 5),
        _log(math_ops),
        math_ops / max(n_words, 5),
        _log(code),
        code / lines,
        1.0 if "```" in sample else 0.0,
        _log(questions),
        1.0 if questions > 1 else 0.0,
        _log(constraints),
        _log(reasoning),
        1.0 if first in IMPERATIVES else 0.0,
        1.0 if first in QUESTION_WORDS else 0.0,
        _log(_count(sample, ENUMERATION_MARKS)),
        _log(sentences),
        min(100.0, n_words / sentences),
        upper / max(n_raw, 40),
        min(1.0, len(vocab) / n_words),
        _log(context),
        _log(len(tail)),
        _log(max(0, messages - 1)),
        lines / max(n, 200) * 80,
        (n_raw - len(raw.translate(None, _SYMBOLS))) / max(n_raw, 40),
        _log(len(vocab & OUTPUT_WORDS)),
        _log(len(vocab & OPEN_WORDS) + _count(plain, OPEN_PHRASES)),
        _log(long_words),
        long_words / max(len(vocab), 5),
        _log(len(vocab & IMPERATIVES)),
    ]
    return dense, vocab


# Everything the compiled reader (sidecar/complexity/_reading.c) counts with,
# handed to it when a model loads: the lists above stay the only copy.
COMPILED_TABLES = {
    "names": NAMES, "to_words": _TO_WORDS, "digits": _DIGITS, "upper": _UPPER, "math": _MATH,
    "symbols": _SYMBOLS, "long_word": LONG_WORD,
    # The order _reading.c reads them in.
    "word_sets": (CONSTRAINT_WORDS, REASONING_WORDS, IMPERATIVES, QUESTION_WORDS, OUTPUT_WORDS,
                  OPEN_WORDS),
    "phrase_sets": (CONSTRAINT_PHRASES, REASONING_PHRASES, OPEN_PHRASES),
    "mark_sets": (CODE_MARKS, LATEX_MARKS, ENUMERATION_MARKS, SENTENCE_MARKS),
}
