"""Gathering more labelled prompts from public git repositories
(python -m sidecar build-data). Build-time only; never imported by the server.

Every source is pinned to a commit and read with `git show COMMIT:PATH`, so the
same repositories give the same rows. The rows have the shape of
../shared/data/routing/train.jsonl, plus "kind": what sort of traffic the
prompt stands for. Kinds, not files, are what validation holds out
(`train --holdout-kinds`), because new traffic differs from the training data
by kind, not by row. docs/data-card.md lists every source, its licence, its
count and its label → tier mapping; this table is the machine-readable form.

Licences: only sources whose data licence allows reuse in a model anyone may
run (MIT, Apache-2.0, CC BY, CC BY-SA). Left out on licence: WizardLM's test
set (CC BY-NC), LogiQA (CC BY-NC-SA), JEC-QA (no licence stated), Odyssey-Math
(training forbidden); TAL-SCQ5K because it mixes in AMC problems.
Prompts from the benchmarks reserved for the held-out evaluation are
dropped wherever a source mixes them in (FollowBench re-uses some).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

# Benchmarks reserved for the held-out evaluation (issue 12), by the names
# sources use for them. A row whose own source field matches is never used.
RESERVED = re.compile(
    r"mmlu|big.?bench|bbh|arena|mt.?bench|vicuna|hotpot|leetcode|l.?eval|xstest|svamp|asdiv|"
    r"mawps|olympiad|amc|aime|minerva|gaokao.?math|college.?math|sat.?math", re.I)


@dataclass(frozen=True)
class Source:
    file: str          # the "file" field of the rows, one per label scheme
    kind: str          # what traffic it stands for; validation holds out whole kinds
    repo: str          # owner/name on GitHub
    commit: str
    license: str
    label_kind: str
    mapping: str       # the label → tier rule, in words, for the data card
    read: Callable[["Repo"], Iterable[tuple[str, str, str, int]]]  # (id, prompt, label, tier)


class Repo:
    """One pinned repository: a git directory read with `git show`."""

    def __init__(self, git_dir: Path, commit: str):
        self.git_dir, self.commit = git_dir, commit

    def text(self, path: str) -> str:
        out = subprocess.run(["git", "--git-dir", str(self.git_dir), "show", f"{self.commit}:{path}"],
                             capture_output=True, check=True)
        return out.stdout.decode("utf-8")

    def json(self, path: str):
        return json.loads(self.text(path))

    def jsonl(self, path: str) -> list:
        return [json.loads(line) for line in self.text(path).splitlines() if line.strip()]


def _sample(items: list, n: int, seed: str) -> list:
    """A fixed sample of n items (all when fewer): keeps big sources from
    dominating and the build deterministic."""
    if len(items) <= n:
        return items
    return random.Random(seed).sample(items, n)


def _choices(options) -> str:
    return "\n".join(str(o).strip() for o in options)


# -- readers ---------------------------------------------------------------------------------

AGIEVAL_TIERS = {"sat-en-without-passage": 2, "sat-en": 2, "gaokao-english": 2, "aqua-rat": 3,
                 "gaokao-biology": 3, "gaokao-chemistry": 3, "gaokao-physics": 3,
                 "gaokao-history": 3, "gaokao-geography": 3, "lsat-rc": 4, "lsat-lr": 4,
                 "lsat-ar": 5}


def read_agieval(repo: Repo):
    for name, tier in AGIEVAL_TIERS.items():
        for i, row in enumerate(repo.jsonl(f"data/v1/{name}.jsonl")):
            passage = (row.get("passage") or "").strip()
            body = f"{row['question'].strip()}\n{_choices(row.get('options') or [])}".strip()
            yield f"{name}/{i}", (passage + "\n\n" + body if passage else body), name, tier


def read_followbench(repo: Repo):
    # Level n adds n constraints to a plain task; IFEval's mapping in the shared
    # data is 1 constraint → 2, 2-3 → 3, so 4-5 → 4 continues it.
    tiers = {0: 2, 1: 2, 2: 3, 3: 3, 4: 4, 5: 4}
    for part in ("content", "format", "mixed", "situation", "style", "example"):
        for row in repo.json(f"data/{part}_constraints.json"):
            if RESERVED.search(str(row.get("source", ""))):
                continue
            level = int(row["level"])
            yield (f"{part}/{row['example_id']}/{level}", row["instruction"], f"level {level}",
                   tiers[level])


EXPERT_DIRECTED = {"Directed question that has a single unambiguous answer",
                   "Request for a list of resources where one can find more information"}
EXPERT_SCENARIO = "Question that describes a hypothetical scenario and asks a question based on this scenario"


def read_expertqa(repo: Repo):
    # Questions experts wrote about their own field, typed by their authors.
    # A scenario to reason through → 4; advice, opinion, open-ended, summary → 3;
    # one fact or a reading list → 2.
    for i, row in enumerate(repo.jsonl("data/r1_data_anon.jsonl")):
        types = {t.strip() for t in row["metadata"]["question_type"].split("|") if t.strip()}
        if EXPERT_SCENARIO in types:
            label, tier = "scenario", 4
        elif types - EXPERT_DIRECTED:
            label, tier = "open", 3
        else:
            label, tier = "directed", 2
        yield f"r1/{i}", row["question"].strip(), label, tier


def read_qmsum(repo: Repo):
    # A meeting transcript, then a question about it: long-document work (→ 4).
    for split in ("val", "test"):
        for m, meeting in enumerate(repo.jsonl(f"data/ALL/jsonl/{split}.jsonl")):
            transcript = "\n".join(f"{t['speaker']}: {t['content']}"
                                   for t in meeting["meeting_transcripts"])
            queries = [("general", q) for q in meeting["general_query_list"]] + \
                      [("specific", q) for q in meeting["specific_query_list"]]
            for j, (label, q) in enumerate(_sample(queries, 4, f"qmsum/{split}/{m}")):
                yield f"{split}/{m}/{j}", f"{transcript}\n\n{q['query'].strip()}", label, 4


def read_squality(repo: Repo):
    # A short story (~5k words), then a question asking for a summary-length answer (→ 4).
    for split in ("dev", "test"):
        for s, story in enumerate(repo.jsonl(f"data/v1-3/txt/{split}.jsonl")):
            document = story["document"].strip()
            for q in _sample(story["questions"], 2, f"squality/{split}/{s}"):
                yield (f"{split}/{s}/{q['question_number']}",
                       f"{document}\n\n{q['question_text'].strip()}", "question", 4)


def read_folio(repo: Repo):
    # First-order logic: premises, then is the conclusion true, false or unknown.
    for split in ("train", "validation"):
        for i, row in enumerate(repo.jsonl(f"data/v0.0/folio-{split}.jsonl")):
            premises = row["premises"] if isinstance(row["premises"], list) else [row["premises"]]
            n = len(premises)
            prompt = ("Premises:\n" + "\n".join(p.strip() for p in premises) +
                      f"\n\nConclusion: {row['conclusion'].strip()}\n\n"
                      "Based on the premises, is the conclusion true, false, or unknown?")
            yield f"{split}/{i}", prompt, f"{n} premises", 3 if n <= 4 else 4


def read_stepgame(repo: Repo):
    # Spatial reasoning over k relations between k+1 agents (k = 1..10 hops).
    tiers = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3, 6: 4, 7: 4, 8: 4, 9: 4, 10: 4}
    for k, tier in tiers.items():
        rows = repo.json(f"Dataset/CompleteVersion/clean/qa{k}_valid.json")
        for key in _sample(sorted(rows, key=int), 60, f"stepgame/{k}"):
            row = rows[key]
            prompt = " ".join(s.strip() for s in row["story"]) + "\n" + row["question"].strip()
            yield f"qa{k}/{key}", prompt, f"{k} hops", tier


def read_strategyqa(repo: Repo):
    # Yes/no questions that need an implicit plan; its annotators' decomposition
    # gives the number of steps.
    rows = repo.json("data/strategyqa/train.json")
    for row in _sample(rows, 600, "strategyqa"):
        steps = len(row["decomposition"])
        yield row["qid"], row["question"].strip(), f"{steps} steps", 2 if steps <= 2 else 3


def read_theoremqa(repo: Repo):
    # University-level questions that need a named theorem (→ 5, maths; 4 elsewhere).
    for row in repo.json("theoremqa_test.json"):
        if row.get("Picture") not in (None, "None", ""):
            continue  # the question refers to a figure the prompt would lack
        tier = 5 if row.get("field") == "Math" else 4
        yield row["id"], row["Question"].strip(), row.get("field", ""), tier


SCIBENCH_PARTS = ("atkins", "calculus", "chemmc", "class", "diff", "fund", "matter", "quan",
                  "stat", "thermo")


def read_scibench(repo: Repo):
    # College textbook problems in physics, chemistry and maths (→ 4).
    for part in SCIBENCH_PARTS:
        for i, row in enumerate(repo.json(f"dataset/original/{part}.json")):
            unit = str(row.get("unit", "")).strip()
            prompt = row["problem_text"].strip() + (f" The unit of the answer is {unit}." if unit else "")
            yield f"{part}/{i}", prompt, part, 4


def read_classeval(repo: Repo):
    # Implement a whole class from its skeleton and docstrings (→ 4).
    for row in repo.json("data/ClassEval_data.json"):
        prompt = ("Complete the following Python class so that every method does what its "
                  f"docstring says.\n\n```python\n{row['skeleton'].rstrip()}\n```")
        yield row["task_id"], prompt, "class", 4


# Stack Overflow questions (title, then body) sampled by StackEval and its later
# StackUnseen sets, each rated beginner, intermediate or advanced by the
# benchmark's authors. Real users asking for help with their own code, the way
# they write: beginner → 2 (MBPP's basic tasks), intermediate → 3 (HumanEval),
# advanced → 4.
STACK_FILES = ("stack-eval", "stack-unseen-1", "stack-unseen-2")
STACK_TIERS = {"beginner": 2, "intermediate": 3, "advanced": 4}


def read_stack_questions(repo: Repo):
    for name in STACK_FILES:
        for row in repo.jsonl(f"data/{name}.jsonl"):
            meta = {key.lower(): str(value).lower() for key, value in row["questionMetadata"].items()}
            level = meta["level"]
            yield f"{name}/{row['questionId']}", row["question"].strip(), level, STACK_TIERS[level]


# Exercism's own bands for its 1-10 difficulty (the website's difficulty_category):
# 1-3 easy, 4-7 medium, 8-10 hard. Mapped like the reference set's code: basic
# tasks (MBPP) → 2, function-level problems (HumanEval) → 3, whole designs
# (ClassEval) → 4. Each track's maintainers rate its own exercises.
EXERCISM_BANDS = ((3, "easy", 2), (7, "medium", 3), (10, "hard", 4))
# Starter files longer than this are left out (5 of them: ledger's code to refactor
# in four tracks, Rust's documented react API), so no exercise becomes a 5-10 KB prompt.
MAX_STUB_CHARS = 3000


def read_exercism(repo: Repo):
    config = repo.json("config.json")
    language, track = config["language"], config["slug"]
    for exercise in config["exercises"]["practice"]:
        if exercise.get("status") == "deprecated":
            continue
        slug, difficulty = exercise["slug"], int(exercise["difficulty"])
        home = f"exercises/practice/{slug}"
        meta = repo.json(f"{home}/.meta/config.json")
        if RESERVED.search(f"{meta.get('source', '')} {meta.get('source_url', '')}"):
            continue
        parts = [repo.text(f"{home}/.docs/instructions.md").strip()]
        stubs = []
        for name in meta.get("files", {}).get("solution", []):
            try:
                stub = repo.text(f"{home}/{name}").strip()
            except subprocess.CalledProcessError:
                continue  # listed but not shipped (a generated file)
            if stub and len(stub) <= MAX_STUB_CHARS:
                stubs.append(f"```{track}\n{stub}\n```")
        parts.append(f"Solve this in {language}" + (", starting from:\n\n" + "\n\n".join(stubs)
                                                    if stubs else "."))
        label, tier = next((name, tier) for top, name, tier in EXERCISM_BANDS if difficulty <= top)
        yield f"{track}/{slug}", "\n\n".join(parts), f"{label} ({difficulty})", tier


EXERCISM_TRACKS = {"python": "9eb657d4507d91efef99f484e7f2a1f4074911b5",
                   "rust": "afe248a156c147bed54f08ed52d88e50d17b0e7b",
                   "go": "ae1477abfeeb9fbeaf971caee220e91f9e4df790",
                   "javascript": "295540983b6323edcfd457b3163ad6c63608f2da",
                   "java": "d8e92d5ba47a37afb6f10f1d9e1117b72c1656d5",
                   "c": "219e653795c90431eb02aed73965c8dcb89fe9ed",
                   "cpp": "7d2e8e45f0530227ea05ad094dcb076a3edcc11a"}
EXERCISM_MAPPING = ("a track's own difficulty: 1-3 (easy) → 2, 4-7 (medium) → 3, "
                    "8-10 (hard) → 4; instructions plus the track's starter files")

SOURCES = (
    Source("agieval_exams", "exam_multiple_choice", "ruixiangcui/AGIEval",
           "5c77d073fda993f1652eaae3cf5d04cc5fd21d40", "MIT (SAT, Gaokao, LSAT); Apache-2.0 (AQuA)",
           "exam", "SAT English, Gaokao English → 2; AQuA algebra, Gaokao sciences and "
           "history → 3; LSAT reading and logical reasoning → 4; LSAT analytical reasoning → 5",
           read_agieval),
    Source("followbench", "instructions_with_constraints", "YJiangcm/FollowBench",
           "6278f4c1377b4eafab737267b8b21acd52ea0e52", "Apache-2.0", "constraint_level",
           "level 0-1 → 2, 2-3 → 3, 4-5 → 4 (level n = n added constraints)", read_followbench),
    Source("expertqa", "expert_questions", "chaitanyamalaviya/ExpertQA",
           "1aa7ba81bd4c083c12ef1aa2fee338f6cb60fa87", "MIT", "question_type",
           "a hypothetical scenario → 4; advice, opinion, open-ended or summary → 3; "
           "a directed question or a request for resources → 2", read_expertqa),
    Source("qmsum", "long_documents", "Yale-LILY/QMSum", "83d7768c1f2b4dfeb091385d3dc7e239b8e5bb7e",
           "MIT", "query_type", "a question about a whole meeting transcript → 4", read_qmsum),
    Source("squality", "long_documents", "nyu-mll/SQuALITY", "dc08d4f574639d773bc64ef3ab3527043108fb4e",
           "CC BY 4.0 (stories: Project Gutenberg, public domain in the US)", "question",
           "a summary question about a ~5k-word story → 4", read_squality),
    Source("folio", "reasoning_puzzles", "Yale-LILY/FOLIO", "5d7bb84c7edab3fb358e057d2807f19cf5cf5e2d",
           "CC BY-SA 4.0", "premise_count", "≤ 4 premises → 3, more → 4", read_folio),
    Source("stepgame", "reasoning_puzzles", "ZhengxiangShi/StepGame", "5e6aff1563a6d7f46ee1f1aeff98b94e68c29005",
           "MIT", "hops", "1-2 hops → 2, 3-5 → 3, 6-10 → 4", read_stepgame),
    Source("strategyqa", "reasoning_puzzles", "eladsegal/strategyqa",
           "1ba1e97452e189569357876f2854b01357ffbe37", "MIT", "decomposition_steps",
           "≤ 2 steps → 2, more → 3", read_strategyqa),
    Source("theoremqa", "science_and_math", "wenhuchen/TheoremQA",
           "585c960f647b3cae8b37ff71fd9dac45ce4b4e91", "MIT", "field",
           "maths → 5, physics, EECS, finance → 4 (questions with figures left out)", read_theoremqa),
    Source("scibench", "science_and_math", "mandyyyyii/scibench",
           "e14e0ca3d3db0f02928a18d435b9c3d15656a7c5", "MIT", "textbook",
           "college textbook problem → 4", read_scibench),
    Source("classeval", "code_classes", "FudanSELab/ClassEval",
           "eaeac44d0d5dcd8a95feec50726d66fedc73a98f", "MIT", "task",
           "implement a whole class → 4", read_classeval),
    Source("stack_questions", "coding_questions", "ProsusAI/stack-eval",
           "1be2b97c4f30583f665a972ae12e236474075a08",
           "CC BY-SA (Stack Overflow posts; no licence file for the sample and ratings)",
           "level", "the authors' rating of a question: beginner → 2, intermediate → 3, "
           "advanced → 4", read_stack_questions),
    # One file for all tracks: one label scheme (Exercism's difficulty), and one
    # file's weight in training however many tracks are read.
    *(Source("exercism", "programming_exercises", f"exercism/{track}", commit, "MIT", "difficulty",
             EXERCISM_MAPPING, read_exercism) for track, commit in EXERCISM_TRACKS.items()),
)


def find_git_dir(repos: Path, name: str) -> Path | None:
    """A repository under `repos`: owner+name/repo (the fetch tool's layout),
    owner+name, or name, each a git directory or a checkout holding .git."""
    owner, short = name.split("/")
    for candidate in (repos / f"{owner}+{short}" / "repo", repos / f"{owner}+{short}", repos / short):
        for git_dir in (candidate / ".git", candidate):
            if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
                return git_dir
    return None


def clone(repos: Path, name: str) -> Path:
    target = repos / name.replace("/", "+")
    subprocess.run(["git", "clone", "--quiet", "--bare", f"https://github.com/{name}", str(target)],
                   check=True)
    return target


def build(repos: Path, allow_clone: bool = False, log=print) -> list[dict]:
    rows = []
    for source in SOURCES:
        git_dir = find_git_dir(repos, source.repo)
        if git_dir is None and allow_clone:
            git_dir = clone(repos, source.repo)
        if git_dir is None:
            raise FileNotFoundError(f"{source.repo}: not under {repos} (pass --clone to fetch it)")
        repo = Repo(git_dir, source.commit)
        n = len(rows)
        for ident, prompt, label, tier in source.read(repo):
            if prompt.strip():
                rows.append({"file": source.file, "source": source.repo, "id": ident, "prompt": prompt,
                             "label_kind": source.label_kind, "label": label, "tier": tier,
                             "license": source.license, "kind": source.kind})
        log(f"{source.file:16} {source.repo:34} {source.kind:30} {len(rows) - n:6d} rows")
    return rows
